"""Cross-cutting API conventions (SPEC §4): error shapes, routing, request ids, pagination."""

import json
import re

import pytest
from django.test import Client

from tenants.models import ApiKey, Organization, Team

NOT_FOUND = {"detail": "Not found", "code": "not_found"}


# --- /api/v1/ aliases -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/teams/acme-corp", "/organizations/acme", "/organizations/acme/teams", "/teams/acme-corp/keys"]
)
def test_v1_alias_serves_the_same_handler(admin, acme, path):
    plain = admin.get("/api" + path)
    versioned = admin.get("/api/v1" + path)
    assert plain.status_code == versioned.status_code == 200
    plain_body, versioned_body = plain.json(), versioned.json()
    for body in (plain_body, versioned_body):
        body.pop("updated_at", None)
    assert versioned_body == plain_body


def test_v1_alias_writes(admin):
    response = admin.post("/api/v1/organizations/create", {"organization_id": "v1-org", "name": "Via v1"})
    assert response.status_code == 201
    assert response.json()["organization_id"] == "v1-org"
    assert Organization.objects.get(id="v1-org").name == "Via v1"


# --- X-Request-Id -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path"),
    [("get", "/health"), ("get", "/api/teams/acme-corp"), ("get", "/api/nope"), ("post", "/api/teams/create")],
)
def test_request_id_is_echoed(acme, method, path):
    rid = "client-req.42:abc_DEF"
    if method == "get":
        response = acme.api.get(path, headers={"X-Request-Id": rid})
    else:
        response = acme.api.post(path, {}, headers={"X-Request-Id": rid})
    assert response["X-Request-Id"] == rid


def test_request_id_is_generated_and_unique(anon):
    first = anon.get("/health")["X-Request-Id"]
    second = anon.get("/api/teams/acme-corp")["X-Request-Id"]  # a 401 carries one too
    assert re.fullmatch(r"[0-9a-f]{32}", first)
    assert re.fullmatch(r"[0-9a-f]{32}", second)
    assert first != second


@pytest.mark.parametrize("unsafe", ["has spaces in it", "x" * 129, "inject\u00e9", "<script>"])
def test_unsafe_request_id_is_replaced(anon, unsafe):
    response = anon.client.get("/health", HTTP_X_REQUEST_ID=unsafe)
    assert response["X-Request-Id"] != unsafe
    assert re.fullmatch(r"[0-9a-f]{32}", response["X-Request-Id"])


# --- JSON 404 / 405 ------------------------------------------------------------------------------


UNKNOWN_ROUTES = [
    "/nope",
    "/",
    "/api",
    "/api/",
    "/api/nope",
    "/api/v1/nope",
    "/api/teams/",
    "/api/teams/acme-corp/",
    "/api/teams/acme-corp/nope",
    "/api/teams/acme-corp/keys/not-a-uuid/revoke",
    "/static/no-such-file.js",
]


@pytest.mark.parametrize(
    ("method", "path"),
    [("get", path) for path in UNKNOWN_ROUTES]
    + [
        (method, path)
        for method in ("post", "put", "patch", "delete")
        for path in ("/nope", "/api/nope", "/api/v1/x/y")
    ],
)
def test_unknown_route_is_json_404(admin, path, method):
    # A real client has no CSRF cookie: the catch-all must not answer with Django's HTML 403 page.
    client = Client(enforce_csrf_checks=True)
    response = getattr(client, method)(path, HTTP_AUTHORIZATION=f"Bearer {admin.key}")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == NOT_FOUND
    assert response["X-Request-Id"]


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("get", "/api/teams/create", "POST"),
        ("get", "/api/organizations/create", "POST"),
        ("delete", "/api/teams/acme-corp", "GET, PUT, PATCH"),
        ("post", "/api/teams/acme-corp", "GET, PUT, PATCH"),
        ("get", "/api/teams/acme-corp/suspend", "POST"),
        ("delete", "/api/teams/acme-corp/keys", "GET, POST"),
        ("put", "/api/v1/organizations/acme", "GET"),
    ],
)
def test_wrong_method_is_json_405(admin, acme, method, path, allowed):
    response = getattr(admin.client, method)(path, HTTP_AUTHORIZATION=f"Bearer {admin.key}")
    assert response.status_code == 405
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": f'Method "{method.upper()}" not allowed.', "code": "method_not_allowed"}
    assert all(m in response["Allow"] for m in allowed.split(", "))
    assert Team.objects.filter(id="acme-corp").exists()


# --- malformed input: 400, never 415 or 500 --------------------------------------------------------

WRITE_ENDPOINTS = [
    ("post", "/api/organizations/create"),
    ("post", "/api/teams/create"),
    ("put", "/api/teams/acme-corp"),
    ("patch", "/api/teams/acme-corp"),
    ("post", "/api/teams/acme-corp/keys"),
]


MALFORMED = ['{"organization_id": "x",', "{bad json}", "nul", '{"a": 1}}', "\x00"]


@pytest.mark.parametrize(
    ("method", "path", "raw"),
    [(*endpoint, raw) for endpoint in WRITE_ENDPOINTS for raw in MALFORMED[:2]]
    + [("post", "/api/teams/create", raw) for raw in MALFORMED[2:]],
)
def test_malformed_json_is_400(admin, acme, method, path, raw):
    response = getattr(admin.client, method)(
        path, raw, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {admin.key}"
    )
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "invalid_request"
    assert body["detail"].startswith("Malformed JSON")


@pytest.mark.parametrize(
    ("method", "path", "content_type"),
    [(*endpoint, "text/plain") for endpoint in WRITE_ENDPOINTS]
    + [
        ("post", "/api/teams/create", "application/x-www-form-urlencoded"),
        ("put", "/api/teams/acme-corp", "application/xml"),
    ],
)
def test_wrong_content_type_is_400(admin, acme, method, path, content_type):
    response = getattr(admin.client, method)(
        path, "name=x", content_type=content_type, HTTP_AUTHORIZATION=f"Bearer {admin.key}"
    )
    assert response.status_code == 400
    assert response.json() == {
        "detail": "Request body must be JSON (Content-Type: application/json)",
        "code": "invalid_request",
    }


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [(*endpoint, "[]") for endpoint in WRITE_ENDPOINTS]
    + [("post", "/api/teams/create", body) for body in ('"text"', "42", "null", "true")],
)
def test_json_body_that_is_not_an_object_is_422(admin, acme, method, path, body):
    response = getattr(admin.client, method)(
        path, body, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {admin.key}"
    )
    assert response.status_code == 422
    assert response.json() == {
        "detail": [{"loc": ["body"], "msg": "value is not a valid dict", "type": "type_error.dict"}]
    }


@pytest.mark.parametrize(
    "raw",
    [
        '{"team_id": "t", "organization_id": "acme", "credits_allocated": NaN}',
        '{"team_id": "t", "organization_id": "acme", "credits_allocated": Infinity}',
        '{"team_id": "t", "organization_id": "acme", "credits_allocated": -Infinity}',
        '{"team_id": "t", "organization_id": "acme", "credits_allocated": 1e400}',
        '{"team_id": "t", "organization_id": "acme", "credits_per_job": "1e999999999"}',
        '{"team_id": "t", "organization_id": "acme", "rpm_limit": 1e3}',
        '{"team_id": "t", "organization_id": "acme", "rpm_limit": 99999999999999999999999999}',
        '{"team_id": "t", "organization_id": "acme", "metadata": "{}"}',
        '{"team_id": "t", "organization_id": "acme", "access_groups": [1, null, {}]}',
        '{"team_id": ["t"], "organization_id": {"id": "acme"}}',
        '{"team_id": "t\\u0000", "organization_id": "acme"}',
        '{"team_id": "t", "organization_id": "acme", "metadata": {"k": "a\\u0000b"}}',
        '{"team_id": "t", "organization_id": "acme", "metadata": {"k\\u0000": 1}}',
        pytest.param(
            '{"team_id": "t", "organization_id": "acme", "metadata": {"a": ' + "[" * 900 + "]" * 900 + "}}",
            id="metadata-nested-900-deep",
        ),
    ],
)
def test_hostile_team_input_is_422_never_500(admin, acme, raw):
    response = admin.post("/api/teams/create", raw=raw)
    assert response.status_code == 422, response.content
    errors = response.json()["detail"]
    assert errors and all(error["loc"][0] == "body" and error["msg"] and error["type"] for error in errors)
    assert not Team.objects.filter(id="t").exists()


@pytest.mark.parametrize("depth", [5_000, 200_000])
def test_absurdly_nested_json_is_400_never_500(admin, acme, depth):
    raw = '{"team_id": "t", "organization_id": "acme", "metadata": {"a": ' + "[" * depth + "]" * depth + "}}"
    response = admin.post("/api/teams/create", raw=raw)
    assert response.status_code == 400
    assert response.json() == {"detail": "Malformed JSON: nested too deeply", "code": "invalid_request"}
    assert not Team.objects.filter(id="t").exists()


@pytest.mark.parametrize(
    "path",
    ["/api/teams/a%00b", "/api/teams/a%00b/keys", "/api/organizations/a%00b", "/api/organizations/a%00b/teams"],
)
def test_nul_byte_in_a_path_id_is_404_never_500(admin, path):
    response = admin.get(path)
    assert response.status_code == 404
    assert response.json()["code"] in ("team_not_found", "organization_not_found")


def test_validation_errors_list_every_field(admin):
    response = admin.post("/api/teams/create", {})
    assert response.status_code == 422
    assert response.json() == {
        "detail": [
            {"loc": ["body", "team_id"], "msg": "field required", "type": "value_error.missing"},
            {"loc": ["body", "organization_id"], "msg": "field required", "type": "value_error.missing"},
        ]
    }


# --- rendering: numbers and timestamps ------------------------------------------------------------


def test_money_is_a_json_number_and_timestamps_are_utc_z(admin, acme):
    body = admin.get("/api/teams/acme-corp").json()
    for field in ("credits_remaining", "credits_per_job", "credits_per_dollar", "min_reservation", "markup_percent"):
        assert isinstance(body[field], (int, float)) and not isinstance(body[field], bool), field
    assert body["credits_remaining"] == 100
    for stamp in (body["created_at"], body["updated_at"], body["keys"][0]["created_at"]):
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", stamp), stamp


# --- pagination ---------------------------------------------------------------------------------------


def _bulk_keys(team: Team, count: int) -> None:
    ApiKey.objects.bulk_create(
        ApiKey(team=team, name=f"bulk-{i:03d}", key_hash=f"{i:064x}", prefix=f"sk-bulk{i:03d}") for i in range(count)
    )


def test_default_limit_is_100(admin, acme):
    _bulk_keys(acme.team, 100)  # + the team's first key = 101
    body = admin.get("/api/teams/acme-corp/keys").json()
    assert body["count"] == 101
    assert len(body["results"]) == 100
    assert body["previous"] is None
    assert "limit=100" in body["next"] and "offset=100" in body["next"]

    rest = admin.get("/api/teams/acme-corp/keys", {"offset": "100"}).json()
    assert len(rest["results"]) == 1
    assert rest["next"] is None
    seen = {k["key_id"] for k in body["results"]} | {k["key_id"] for k in rest["results"]}
    assert seen == {str(pk) for pk in ApiKey.objects.filter(team=acme.team).values_list("pk", flat=True)}


@pytest.mark.parametrize(("asked", "effective"), [("5000", 1000), ("1001", 1000), ("1000", 1000), ("3", 3)])
def test_limit_above_1000_is_clamped(admin, acme, asked, effective):
    _bulk_keys(acme.team, 4)
    body = admin.get("/api/teams/acme-corp/keys", {"limit": asked, "offset": "1"}).json()
    assert body["count"] == 5
    assert len(body["results"]) == min(effective, 4)
    # The previous link carries the limit actually applied.
    assert f"limit={effective}" in body["previous"]


@pytest.mark.parametrize(
    ("params", "type_"),
    [
        ({"limit": "0"}, "value_error.number.not_ge"),  # a page of nothing: its `next` would loop (SPEC §4)
        ({"limit": "-1"}, "value_error.number.not_ge"),
        ({"offset": "-1"}, "value_error.number.not_ge"),
        ({"limit": "\u0661"}, "type_error.integer"),  # an Arabic-Indic one: only ASCII digits are digits
        ({"limit": "1_0"}, "type_error.integer"),
        ({"limit": " 5"}, "type_error.integer"),
        ({"offset": "9" * 5000}, "value_error.number.not_le"),  # past int()'s digit limit: was a 500
        ({"offset": str(2**63)}, "value_error.number.not_le"),  # past a bigint OFFSET: was a 500
    ],
)
def test_bad_pagination_is_422(admin, acme, params, type_):
    response = admin.get("/api/teams/acme-corp/keys", params)
    assert response.status_code == 422, response.content
    [error] = response.json()["detail"]
    assert (error["loc"], error["type"]) == (["query", next(iter(params))], type_)


def test_offset_past_the_end_is_empty(admin, acme):
    body = admin.get("/api/organizations/acme/teams", {"offset": "50"}).json()
    assert body["count"] == 1
    assert body["results"] == []
    assert body["next"] is None


@pytest.mark.parametrize("path", ["/api/teams/acme-corp/keys", "/api/organizations/acme/teams"])
@pytest.mark.parametrize("name", ["limit", "offset"])
@pytest.mark.parametrize(
    ("value", "msg", "type_"),
    [
        ("-1", "ensure this value is greater than or equal to {minimum}", "value_error.number.not_ge"),
        ("abc", "value is not a valid integer", "type_error.integer"),
        ("1.5", "value is not a valid integer", "type_error.integer"),
    ],
)
def test_bad_pagination_values_are_422(admin, acme, path, name, value, msg, type_):
    msg = msg.format(minimum=1 if name == "limit" else 0)
    response = admin.get(path, {name: value})
    assert response.status_code == 422
    assert response.json() == {"detail": [{"loc": ["query", name], "msg": msg, "type": type_}]}


def test_list_shape(admin, acme):
    body = admin.get("/api/organizations/acme/teams").json()
    assert set(body) == {"count", "next", "previous", "results"}


# --- database failures are 503 JSON, never 500 --------------------------------------------------------


def test_database_outage_is_503_json(acme, monkeypatch):
    from django.db import OperationalError

    from tenants import auth

    def down(*args, **kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(auth, "resolve_api_key", down)
    response = acme.api.get("/api/teams/acme-corp")
    assert response.status_code == 503
    assert response["Retry-After"] == "1"
    assert response.json() == {"detail": "Database unavailable", "code": "database_unavailable"}


def test_unexpected_error_is_500_json_without_details(acme, monkeypatch):
    from tenants import api

    def boom(*args, **kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(api, "render_team", boom)
    response = acme.api.get("/api/teams/acme-corp")
    assert response.status_code == 500
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "Internal server error", "code": "internal_error"}
    assert b"secret internals" not in response.content


def test_json_is_utf8(admin):
    name = "Ünïcødé 株式会社"
    response = admin.post("/api/organizations/create", {"organization_id": "uni", "name": name})
    assert response.status_code == 201
    assert json.loads(response.content.decode("utf-8"))["name"] == name
    assert Organization.objects.get(id="uni").name == name
