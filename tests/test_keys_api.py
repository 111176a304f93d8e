"""Team keys (SPEC §3, §5.3 beyond): create (shown once), list, revoke."""

import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from tenants import services as tenant_services
from tenants.models import ApiKey, hash_key

KEY_SUMMARY_FIELDS = {"key_id", "name", "prefix", "created_at", "last_used_at", "expires_at", "revoked_at"}


def _bearer(raw: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {raw}"}


def test_create_key(admin, acme):
    response = admin.post("/api/teams/acme-corp/keys", {"name": "ci-pipeline"})
    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"key_id", "name", "key", "prefix", "created_at", "expires_at"}
    assert body["name"] == "ci-pipeline"
    assert body["expires_at"] is None
    assert re.fullmatch(r"sk-[A-Za-z0-9_-]{32,}", body["key"])
    assert body["prefix"] == body["key"][:11]
    assert body["created_at"].endswith("Z")

    row = ApiKey.objects.get(id=body["key_id"])
    assert row.team_id == "acme-corp"
    assert row.name == "ci-pipeline"
    assert row.key_hash == hash_key(body["key"])
    assert row.prefix == body["prefix"]
    assert body["key"] not in [str(v) for v in ApiKey.objects.filter(pk=row.pk).values().get().values()]

    # The new key authenticates as the team.
    me = acme.api.client.get("/api/teams/acme-corp", **_bearer(body["key"]))
    assert me.status_code == 200
    assert me.json()["team_id"] == "acme-corp"
    assert acme.api.client.get("/api/teams/globex-eng", **_bearer(body["key"])).status_code == 403


def test_create_key_with_expiry(admin, acme):
    expires = (timezone.now() + timedelta(days=30)).replace(microsecond=0)
    response = admin.post("/api/teams/acme-corp/keys", {"name": "temp", "expires_at": expires.isoformat()})
    assert response.status_code == 201
    body = response.json()
    assert body["expires_at"] == expires.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert ApiKey.objects.get(id=body["key_id"]).expires_at == expires


def test_naive_expiry_is_read_as_utc(admin, acme):
    response = admin.post("/api/teams/acme-corp/keys", {"name": "naive", "expires_at": "2031-05-06T07:08:09"})
    assert response.status_code == 201
    assert response.json()["expires_at"] == "2031-05-06T07:08:09Z"
    assert ApiKey.objects.get(id=response.json()["key_id"]).expires_at == datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)


def test_key_stops_working_when_it_expires(admin, acme):
    body = admin.post("/api/teams/acme-corp/keys", {"name": "short"}).json()
    assert acme.api.client.get("/api/teams/acme-corp", **_bearer(body["key"])).status_code == 200
    ApiKey.objects.filter(id=body["key_id"]).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = acme.api.client.get("/api/teams/acme-corp", **_bearer(body["key"]))
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"
    assert response.json() == {"detail": "API key has expired"}


@pytest.mark.parametrize(
    ("body", "loc", "type_"),
    [
        ({}, ["body", "name"], "value_error.missing"),
        ({"name": None}, ["body", "name"], "type_error.none.not_allowed"),
        ({"name": 5}, ["body", "name"], "type_error"),
        ({"name": ""}, ["body", "name"], "value_error.any_str.min_length"),
        ({"name": "n" * 201}, ["body", "name"], "value_error.any_str.max_length"),
        ({"name": "x", "expires_at": "next tuesday"}, ["body", "expires_at"], "type_error"),
        ({"name": "x", "expires_at": 1700000000}, ["body", "expires_at"], "type_error"),
        # A key born expired (SPEC §5.3): was created, unusable from its first request.
        ({"name": "x", "expires_at": "2020-01-01T00:00:00Z"}, ["body", "expires_at"], "type_error"),
        ({"name": "x", "expires_at": "9999-12-31T23:59:59-23:59"}, ["body", "expires_at"], "value_error.overflow"),
    ],
)
def test_create_key_validation(admin, acme, body, loc, type_):
    before = ApiKey.objects.count()
    response = admin.post("/api/teams/acme-corp/keys", body)
    assert response.status_code == 422
    errors = response.json()["detail"]
    assert [(e["loc"], e["type"]) for e in errors] == [(loc, type_)]
    assert errors[0]["msg"]
    assert ApiKey.objects.count() == before


def test_list_keys(admin, acme, globex):
    second, _ = tenant_services.issue_key(team=acme.team, name="second")
    tenant_services.revoke_key(key=second)
    response = admin.get("/api/teams/acme-corp/keys")
    assert response.status_code == 200
    body = response.json()
    assert body["count"] == 2
    assert body["next"] is None and body["previous"] is None
    assert [k["name"] for k in body["results"]] == ["default", "second"]
    assert all(set(k) == KEY_SUMMARY_FIELDS for k in body["results"])
    assert body["results"][1]["key_id"] == str(second.id)
    assert body["results"][1]["revoked_at"] == second.revoked_at.isoformat().replace("+00:00", "Z")
    # Only this team's keys, and never a secret.
    globex_ids = {str(pk) for pk in ApiKey.objects.filter(team=globex.team).values_list("pk", flat=True)}
    assert not globex_ids & {k["key_id"] for k in body["results"]}
    text = response.content.decode()
    assert acme.key not in text and hash_key(acme.key) not in text


def test_revoke_key(admin, acme):
    created = admin.post("/api/teams/acme-corp/keys", {"name": "to-revoke"}).json()
    assert acme.api.client.get("/api/teams/acme-corp", **_bearer(created["key"])).status_code == 200

    before = timezone.now()
    response = admin.post(f"/api/teams/acme-corp/keys/{created['key_id']}/revoke")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == KEY_SUMMARY_FIELDS
    assert body["key_id"] == created["key_id"]
    row = ApiKey.objects.get(id=created["key_id"])
    assert row.revoked_at is not None and row.revoked_at >= before
    assert body["revoked_at"] == row.revoked_at.isoformat().replace("+00:00", "Z")

    # The revoked key is refused on the very next request; the team's other key still works.
    refused = acme.api.client.get("/api/teams/acme-corp", **_bearer(created["key"]))
    assert refused.status_code == 401
    assert refused["WWW-Authenticate"] == "Bearer"
    assert refused.json() == {"detail": "API key has been revoked"}
    assert acme.api.get("/api/teams/acme-corp").status_code == 200


def test_revoke_is_idempotent(admin, acme):
    key = ApiKey.objects.get(key_hash=hash_key(acme.key))
    first = admin.post(f"/api/teams/acme-corp/keys/{key.id}/revoke").json()
    second = admin.post(f"/api/v1/teams/acme-corp/keys/{key.id}/revoke")
    assert second.status_code == 200
    assert second.json()["revoked_at"] == first["revoked_at"]
    key.refresh_from_db()
    assert key.revoked_at.isoformat().replace("+00:00", "Z") == first["revoked_at"]


def test_revoking_another_teams_key_is_404_and_revokes_nothing(admin, acme, globex):
    globex_key = ApiKey.objects.get(key_hash=hash_key(globex.key))
    response = admin.post(f"/api/teams/acme-corp/keys/{globex_key.id}/revoke")
    assert response.status_code == 404
    assert response.json() == {"detail": "API key not found", "code": "key_not_found"}
    globex_key.refresh_from_db()
    assert globex_key.revoked_at is None
    assert globex.api.get("/api/teams/globex-eng").status_code == 200


def test_revoking_an_admin_key_through_a_team_is_404(admin, acme):
    admin_row = ApiKey.objects.get(key_hash=hash_key(admin.key))
    response = admin.post(f"/api/teams/acme-corp/keys/{admin_row.id}/revoke")
    assert response.status_code == 404
    admin_row.refresh_from_db()
    assert admin_row.revoked_at is None


def test_revoking_unknown_key_is_404(admin, acme):
    response = admin.post(f"/api/teams/acme-corp/keys/{uuid.uuid4()}/revoke")
    assert response.status_code == 404
    assert response.json() == {"detail": "API key not found", "code": "key_not_found"}


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/teams/nope/keys"),
        ("post", "/api/teams/nope/keys"),
        ("post", "/api/teams/nope/keys/00000000-0000-0000-0000-000000000000/revoke"),
    ],
)
def test_key_endpoints_on_unknown_team_are_404(admin, method, path):
    response = admin.get(path) if method == "get" else admin.post(path, {"name": "x"})
    assert response.status_code == 404
    assert response.json() == {"detail": "Team 'nope' not found", "code": "team_not_found"}
    assert ApiKey.objects.filter(name="x").count() == 0


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/api/teams/acme-corp/keys"),
        ("post", "/api/teams/acme-corp/keys"),
        ("get", "/api/teams/globex-eng/keys"),
        ("post", "/api/teams/globex-eng/keys"),
    ],
)
def test_team_keys_cannot_manage_keys(acme, globex, anon, method, path):
    before = ApiKey.objects.count()
    for api, status in ((anon, 401), (acme.api, 403)):
        response = api.get(path) if method == "get" else api.post(path, {"name": "sneaky"})
        assert response.status_code == status
    assert ApiKey.objects.count() == before


def test_malformed_json_on_key_create_is_400(admin, acme):
    before = ApiKey.objects.count()
    response = admin.post("/api/teams/acme-corp/keys", raw='{"name": "x"')
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_request"
    assert ApiKey.objects.count() == before
