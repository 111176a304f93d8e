"""Organizations (SPEC §5.4): admin keys only."""

import json
import uuid

import pytest

from billing import services as billing_services
from tenants.models import Organization, Team
from tests.conftest import make_tenant


def test_create_organization(admin):
    response = admin.post(
        "/api/organizations/create", {"organization_id": "initech", "name": "Initech", "metadata": {"tier": "gold"}}
    )
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"organization_id", "name", "metadata", "created_at", "updated_at"}
    assert body["organization_id"] == "initech"
    assert body["name"] == "Initech"
    assert body["metadata"] == {"tier": "gold"}
    assert body["created_at"].endswith("Z")

    row = Organization.objects.get(id="initech")
    assert row.name == "Initech"
    assert row.metadata == {"tier": "gold"}


def test_create_organization_without_metadata_stores_an_empty_object(admin):
    response = admin.post("/api/organizations/create", {"organization_id": "a.b_c-1", "name": "Dots"})
    assert response.status_code == 201
    assert response.json()["metadata"] == {}
    assert Organization.objects.get(id="a.b_c-1").metadata == {}


@pytest.mark.parametrize(
    ("body", "loc", "type_"),
    [
        ({"name": "X"}, ["body", "organization_id"], "value_error.missing"),
        ({"organization_id": "x"}, ["body", "name"], "value_error.missing"),
        ({"organization_id": None, "name": "X"}, ["body", "organization_id"], "type_error.none.not_allowed"),
        ({"organization_id": 5, "name": "X"}, ["body", "organization_id"], "type_error"),
        ({"organization_id": True, "name": "X"}, ["body", "organization_id"], "type_error"),
        ({"organization_id": "Acme", "name": "X"}, ["body", "organization_id"], "type_error"),
        ({"organization_id": "acme corp", "name": "X"}, ["body", "organization_id"], "type_error"),
        ({"organization_id": "-acme", "name": "X"}, ["body", "organization_id"], "type_error"),
        ({"organization_id": "a" * 65, "name": "X"}, ["body", "organization_id"], "value_error.any_str.max_length"),
        ({"organization_id": "", "name": "X"}, ["body", "organization_id"], "value_error.any_str.min_length"),
        ({"organization_id": "x", "name": 42}, ["body", "name"], "type_error"),
        ({"organization_id": "x", "name": ["X"]}, ["body", "name"], "type_error"),
        ({"organization_id": "x", "name": "N" * 201}, ["body", "name"], "value_error.any_str.max_length"),
        ({"organization_id": "x", "name": "X", "metadata": []}, ["body", "metadata"], "type_error.dict"),
        ({"organization_id": "x", "name": "X", "metadata": "a"}, ["body", "metadata"], "type_error.dict"),
        (
            {"organization_id": "x", "name": "X", "metadata": {"blob": "x" * 16_400}},
            ["body", "metadata"],
            "value_error.too_large",
        ),
    ],
)
def test_create_organization_validation(admin, body, loc, type_):
    response = admin.post("/api/organizations/create", body)
    assert response.status_code == 422
    errors = response.json()["detail"]
    assert (loc, type_) in [(e["loc"], e["type"]) for e in errors]
    assert all(e["loc"] == loc and e["msg"] for e in errors)
    assert Organization.objects.count() == 0


@pytest.mark.parametrize(
    ("metadata", "loc", "type_"),
    [
        ({"a": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}, [], "value_error.too_deep"),
        ({"k": "a\x00b"}, ["k"], "value_error.null_characters_not_allowed"),
        ({"k\x00": "v"}, [], "value_error.null_characters_not_allowed"),  # the object holding the bad key
        ({"deep": [{"list": ["ok", "\x00"]}]}, ["deep", 0, "list", 1], "value_error.null_characters_not_allowed"),
        ({"k": "a\ud800b"}, ["k"], "value_error.surrogate_characters_not_allowed"),  # was a 500
        ({"k\udfff": 1}, [], "value_error.surrogate_characters_not_allowed"),
    ],
)
def test_metadata_that_cannot_be_stored_is_422(admin, metadata, loc, type_):
    raw = json.dumps({"organization_id": "x", "name": "X", "metadata": metadata})  # ASCII: \ud800 stays escaped
    response = admin.post("/api/organizations/create", raw=raw)
    assert response.status_code == 422
    assert [(e["loc"], e["type"]) for e in response.json()["detail"]] == [(["body", "metadata", *loc], type_)]
    assert not Organization.objects.exists()


def test_metadata_nested_32_levels_is_accepted(admin):
    metadata = {"a": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}
    response = admin.post("/api/organizations/create", {"organization_id": "x", "name": "X", "metadata": metadata})
    assert response.status_code == 201
    assert Organization.objects.get(id="x").metadata == metadata


def test_metadata_at_exactly_16_kb_is_accepted(admin):
    # {"b":"…"} serialised compactly is 8 bytes of framing.
    metadata = {"b": "x" * (16 * 1024 - 8)}
    response = admin.post("/api/organizations/create", {"organization_id": "big", "name": "Big", "metadata": metadata})
    assert response.status_code == 201
    assert Organization.objects.get(id="big").metadata == metadata


def test_duplicate_organization_is_409(admin, acme):
    response = admin.post("/api/organizations/create", {"organization_id": "acme", "name": "Impostor"})
    assert response.status_code == 409
    assert response.json() == {"detail": "Organization 'acme' already exists", "code": "organization_exists"}
    assert Organization.objects.filter(id="acme").count() == 1
    assert Organization.objects.get(id="acme").name == "Acme"


def test_unknown_fields_are_ignored_on_organization_create(admin):
    response = admin.post("/api/organizations/create", {"organization_id": "loose", "name": "Loose", "extra": 1})
    assert response.status_code == 201
    assert Organization.objects.filter(id="loose").exists()


def test_get_organization_with_team_count_and_credit_totals(admin, acme):
    second = make_tenant("acme-labs", "acme", credits=50)
    make_tenant("globex-eng", "globex", credits=999)  # another organization: not counted
    billing_services.reserve_for_job(team=second.team, job_id=uuid.uuid4())  # holds credits_per_job = 1

    response = admin.get("/api/organizations/acme")
    assert response.status_code == 200
    body = response.json()
    assert body["organization_id"] == "acme"
    assert body["name"] == "Acme"
    assert body["team_count"] == 2
    assert body["credits_allocated"] == 150
    assert body["credits_used"] == 0
    assert body["credits_remaining"] == 149
    assert body["created_at"].endswith("Z")


def test_get_organization_without_teams(admin):
    admin.post("/api/organizations/create", {"organization_id": "empty", "name": "Empty"})
    body = admin.get("/api/organizations/empty").json()
    assert body["team_count"] == 0
    assert body["credits_allocated"] == body["credits_used"] == body["credits_remaining"] == 0


@pytest.mark.parametrize("path", ["/api/organizations/nope", "/api/organizations/nope/teams"])
def test_unknown_organization_is_404(admin, path):
    response = admin.get(path)
    assert response.status_code == 404
    assert response.json() == {"detail": "Organization 'nope' not found", "code": "organization_not_found"}


def test_list_organization_teams_paginated(admin, acme, globex):
    make_tenant("acme-b", "acme")
    make_tenant("acme-a", "acme", markup_percent=12.5)

    page = admin.get("/api/organizations/acme/teams", {"limit": "2"}).json()
    assert page["count"] == 3
    assert [t["team_id"] for t in page["results"]] == ["acme-a", "acme-b"]
    assert page["previous"] is None
    assert "offset=2" in page["next"]
    assert page["results"][0]["markup_percent"] == 12.5
    assert page["results"][0]["organization_id"] == "acme"
    assert page["results"][0]["credits_remaining"] == 100

    rest = admin.get("/api/organizations/acme/teams", {"limit": "2", "offset": "2"}).json()
    assert [t["team_id"] for t in rest["results"]] == ["acme-corp"]
    assert rest["next"] is None
    assert rest["previous"] is not None


def test_organization_teams_never_include_other_organizations(admin, acme, globex):
    ids = [t["team_id"] for t in admin.get("/api/organizations/globex/teams").json()["results"]]
    assert ids == ["globex-eng"]
    assert Team.objects.count() == 2


def test_malformed_json_on_create_is_400(admin):
    response = admin.post("/api/organizations/create", raw='{"organization_id": ')
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_request"
    assert Organization.objects.count() == 0


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("post", "/api/organizations/create"),
        ("get", "/api/organizations/acme"),
        ("get", "/api/organizations/acme/teams"),
    ],
)
def test_organization_endpoints_are_admin_only(acme, anon, method, path):
    body = {"organization_id": "sneaky", "name": "Sneaky"}
    no_key = anon.get(path) if method == "get" else anon.post(path, body)
    assert no_key.status_code == 401
    assert no_key["WWW-Authenticate"] == "Bearer"
    team_key = acme.api.get(path) if method == "get" else acme.api.post(path, body)
    assert team_key.status_code == 403
    assert team_key.json() == {"detail": "This endpoint requires an admin API key", "code": "admin_required"}
    assert not Organization.objects.filter(id="sneaky").exists()


def test_revoked_admin_key_is_401(admin):
    from tenants import services
    from tenants.models import ApiKey, hash_key

    services.revoke_key(key=ApiKey.objects.get(key_hash=hash_key(admin.key)))
    response = admin.post("/api/organizations/create", {"organization_id": "late", "name": "Late"})
    assert response.status_code == 401
    assert response.json() == {"detail": "API key has been revoked"}
    assert not Organization.objects.filter(id="late").exists()
