"""Bearer-key authentication and team scoping (SPEC §3)."""

import hashlib
import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from tenants import services as tenant_services
from tenants.models import ApiKey, Team, TeamStatus

ADMIN_REQUIRED = {"detail": "This endpoint requires an admin API key", "code": "admin_required"}


def _key_row(raw_key: str) -> ApiKey:
    return ApiKey.objects.get(key_hash=hashlib.sha256(raw_key.encode()).hexdigest())


def _assert_401(response, detail: str) -> None:
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": detail}


# --- 401: missing / malformed / unknown / revoked / expired --------------------------------


@pytest.mark.parametrize(
    ("authorization", "detail"),
    [
        (None, "Missing API key: send 'Authorization: Bearer sk-…'"),
        ("", "Missing API key: send 'Authorization: Bearer sk-…'"),
        ("Bearer", "Malformed Authorization header: expected 'Bearer sk-…'"),
        ("Bearer ", "Malformed Authorization header: expected 'Bearer sk-…'"),
        ("Token sk-abcdefabcdefabcdefabcdefabcdefabcdef", "Malformed Authorization header: expected 'Bearer sk-…'"),
        ("Basic dXNlcjpwYXNz", "Malformed Authorization header: expected 'Bearer sk-…'"),
        ("Bearer pk-abcdefabcdefabcdefabcdefabcdefabcdef", "Malformed Authorization header: expected 'Bearer sk-…'"),
        ("Bearer sk-" + "a" * 300, "Malformed Authorization header: expected 'Bearer sk-…'"),
        ("Bearer sk-this-key-was-never-issued-to-anyone-0000", "Invalid API key"),
    ],
)
def test_bad_credentials_are_401_with_bearer_challenge(acme, anon, authorization, detail):
    headers = {"HTTP_AUTHORIZATION": authorization} if authorization is not None else {}
    response = anon.client.get("/api/teams/acme-corp", **headers)
    _assert_401(response, detail)


def test_revoked_key_is_401_on_the_very_next_request(acme):
    assert acme.api.get("/api/teams/acme-corp").status_code == 200
    tenant_services.revoke_key(key=_key_row(acme.key))

    _assert_401(acme.api.get("/api/teams/acme-corp"), "API key has been revoked")


def test_expired_key_is_401_and_a_key_expiring_later_still_works(acme):
    expired, expired_raw = tenant_services.issue_key(team=acme.team, name="old")
    ApiKey.objects.filter(pk=expired.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    _, future_raw = tenant_services.issue_key(team=acme.team, expires_at=timezone.now() + timedelta(hours=1))

    _assert_401(
        acme.api.client.get("/api/teams/acme-corp", HTTP_AUTHORIZATION=f"Bearer {expired_raw}"),
        "API key has expired",
    )
    ok = acme.api.client.get("/api/teams/acme-corp", HTTP_AUTHORIZATION=f"Bearer {future_raw}")
    assert ok.status_code == 200
    assert ok.json()["team_id"] == "acme-corp"


def test_bearer_scheme_is_case_insensitive(acme):
    response = acme.api.client.get("/api/teams/acme-corp", HTTP_AUTHORIZATION=f"bearer {acme.key}")
    assert response.status_code == 200


PROTECTED = [
    ("get", "/api/teams/acme-corp"),
    ("put", "/api/teams/acme-corp"),
    ("patch", "/api/teams/acme-corp"),
    ("post", "/api/teams/create"),
    ("post", "/api/teams/acme-corp/suspend"),
    ("post", "/api/teams/acme-corp/resume"),
    ("get", "/api/teams/acme-corp/keys"),
    ("post", "/api/teams/acme-corp/keys"),
    ("post", "/api/teams/acme-corp/keys/00000000-0000-0000-0000-000000000000/revoke"),
    ("post", "/api/organizations/create"),
    ("get", "/api/organizations/acme"),
    ("get", "/api/organizations/acme/teams"),
    ("get", "/api/v1/teams/acme-corp"),
    ("post", "/api/v1/organizations/create"),
]


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_every_tenant_endpoint_needs_a_key(acme, anon, method, path):
    if method == "get":
        response = anon.client.get(path)
    else:
        response = getattr(anon.client, method)(path, "{}", content_type="application/json")
    _assert_401(response, "Missing API key: send 'Authorization: Bearer sk-…'")
    assert Team.objects.get(id="acme-corp").status == TeamStatus.ACTIVE


@pytest.mark.parametrize("path", ["/health", "/openapi.json", "/docs", "/redoc"])
def test_public_endpoints_need_no_key(anon, path):
    assert anon.get(path).status_code == 200


# --- 403: team keys on admin endpoints, another team's id --------------------------------


ADMIN_ONLY = [
    ("post", "/api/organizations/create", {"organization_id": "evil", "name": "Evil"}),
    ("get", "/api/organizations/acme", None),
    ("get", "/api/organizations/acme/teams", None),
    ("post", "/api/teams/create", {"team_id": "evil", "organization_id": "acme"}),
    ("put", "/api/teams/acme-corp", {"rpm_limit": 1}),
    ("patch", "/api/teams/acme-corp", {"rpm_limit": 1}),
    ("post", "/api/teams/acme-corp/suspend", None),
    ("post", "/api/teams/acme-corp/resume", None),
    ("get", "/api/teams/acme-corp/keys", None),
    ("post", "/api/teams/acme-corp/keys", {"name": "mine"}),
    ("post", "/api/teams/globex-eng/suspend", None),
]


@pytest.mark.parametrize(("method", "path", "body"), ADMIN_ONLY)
def test_team_key_on_admin_endpoint_is_403(acme, globex, method, path, body):
    keys_before = ApiKey.objects.count()
    if method == "get":
        response = acme.api.get(path)
    else:
        response = getattr(acme.api, method)(path, body or {})
    assert response.status_code == 403
    assert response.json() == ADMIN_REQUIRED
    # Nothing was written.
    assert not Team.objects.filter(id="evil").exists()
    assert ApiKey.objects.count() == keys_before
    assert set(Team.objects.values_list("status", flat=True)) == {TeamStatus.ACTIVE}
    assert Team.objects.get(id="acme-corp").rpm_limit is None


def test_team_key_cannot_revoke_its_own_key(acme):
    key = _key_row(acme.key)
    response = acme.api.post(f"/api/teams/acme-corp/keys/{key.id}/revoke")
    assert response.status_code == 403
    assert response.json() == ADMIN_REQUIRED
    key.refresh_from_db()
    assert key.revoked_at is None


@pytest.mark.parametrize("team_id", ["globex-eng", "no-such-team"])
def test_team_key_naming_another_team_is_403_whether_or_not_it_exists(acme, globex, team_id):
    response = acme.api.get(f"/api/teams/{team_id}")
    assert response.status_code == 403
    assert response.json() == {"detail": f"API key does not belong to team '{team_id}'", "code": "team_mismatch"}


def test_admin_key_acts_on_any_team(admin, acme, globex):
    for team_id in ("acme-corp", "globex-eng"):
        response = admin.get(f"/api/teams/{team_id}")
        assert response.status_code == 200
        assert response.json()["team_id"] == team_id


def test_admin_key_row_is_not_bound_to_a_team(admin_key):
    row = _key_row(admin_key)
    assert row.team_id is None
    assert row.is_admin


def test_suspended_team_key_still_reads(acme):
    tenant_services.set_team_status(team=acme.team, status=TeamStatus.SUSPENDED)
    response = acme.api.get("/api/teams/acme-corp")
    assert response.status_code == 200
    assert response.json()["status"] == "suspended"


# --- key storage ------------------------------------------------------------------------------


def test_key_is_never_stored_in_plain_text(admin):
    admin.post("/api/organizations/create", {"organization_id": "initech", "name": "Initech"})
    created = admin.post("/api/teams/create", {"team_id": "initech-ops", "organization_id": "initech"})
    assert created.status_code == 201
    raw = created.json()["virtual_key"]
    assert re.fullmatch(r"sk-[A-Za-z0-9_-]{32,}", raw)

    row = ApiKey.objects.get(team_id="initech-ops")
    assert row.key_hash == hashlib.sha256(raw.encode()).hexdigest()
    assert row.prefix == raw[:11]
    stored = [str(value) for value in ApiKey.objects.filter(pk=row.pk).values().get().values()]
    assert raw not in stored
    assert not any(raw in value for value in stored)
    # The prefix is only a display aid, far too short to be the secret.
    assert len(row.prefix) < len(raw) - 30


# --- last_used_at throttling ----------------------------------------------------------------------


def _key_updates(queries) -> list[str]:
    return [
        q["sql"] for q in queries if q["sql"].lstrip().upper().startswith("UPDATE") and "tenants_apikey" in q["sql"]
    ]


def test_last_used_at_is_written_once_per_interval(acme, settings):
    settings.SAAS_LLM_KEY_TOUCH_INTERVAL_S = 60
    row = _key_row(acme.key)
    assert row.last_used_at is None

    before = timezone.now()
    with CaptureQueriesContext(connection) as first:
        assert acme.api.get("/api/teams/acme-corp").status_code == 200
    after = timezone.now()
    with CaptureQueriesContext(connection) as second:
        assert acme.api.get("/api/teams/acme-corp").status_code == 200

    assert len(_key_updates(first.captured_queries)) == 1
    assert _key_updates(second.captured_queries) == []
    row.refresh_from_db()
    assert before <= row.last_used_at <= after


def test_last_used_at_is_written_again_after_the_interval(acme, settings):
    settings.SAAS_LLM_KEY_TOUCH_INTERVAL_S = 60
    row = _key_row(acme.key)
    stale = timezone.now() - timedelta(seconds=61)
    ApiKey.objects.filter(pk=row.pk).update(last_used_at=stale)

    before = timezone.now()
    response = acme.api.get("/api/teams/acme-corp")
    assert response.status_code == 200

    row.refresh_from_db()
    assert row.last_used_at >= before
    # The API shows the value it stored.
    shown = next(k for k in response.json()["keys"] if k["key_id"] == str(row.pk))
    assert shown["last_used_at"] == row.last_used_at.isoformat().replace("+00:00", "Z")
