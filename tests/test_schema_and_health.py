"""OpenAPI schema, docs pages, /health and CORS (SPEC §2, §5.8)."""

import re

import pytest
from django.conf import settings as django_settings
from django.core.management import call_command
from django.test import Client

TENANT_OPERATIONS = [
    ("post", "/api/organizations/create"),
    ("get", "/api/organizations/{organization_id}"),
    ("get", "/api/organizations/{organization_id}/teams"),
    ("post", "/api/teams/create"),
    ("get", "/api/teams/{team_id}"),
    ("put", "/api/teams/{team_id}"),
    ("patch", "/api/teams/{team_id}"),
    ("post", "/api/teams/{team_id}/suspend"),
    ("post", "/api/teams/{team_id}/resume"),
    ("get", "/api/teams/{team_id}/keys"),
    ("post", "/api/teams/{team_id}/keys"),
    ("post", "/api/teams/{team_id}/keys/{key_id}/revoke"),
]


@pytest.fixture(scope="module")
def schema() -> dict:
    # Generating the schema touches no database, so one fetch serves the whole module.
    response = Client().get("/openapi.json")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/vnd.oai.openapi+json")
    return response.json()


def test_schema_validates_without_warnings(tmp_path):
    target = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(target))
    assert target.read_text().startswith("openapi: 3")


def test_schema_has_the_bearer_scheme(schema):
    assert schema["openapi"].startswith("3.")
    assert schema["info"]["version"] == django_settings.VERSION
    assert schema["components"]["securitySchemes"]["bearerAuth"]["type"] == "http"
    assert schema["components"]["securitySchemes"]["bearerAuth"]["scheme"] == "bearer"


@pytest.mark.parametrize(("method", "path"), TENANT_OPERATIONS)
def test_every_tenant_operation_is_documented_and_secured(schema, method, path):
    operation = schema["paths"][path][method]
    assert {"bearerAuth": []} in operation["security"]
    assert "200" in operation["responses"] or "201" in operation["responses"]


@pytest.mark.parametrize(
    ("path", "method", "component"),
    [
        ("/api/teams/create", "post", "TeamCreateInRequest"),
        ("/api/teams/{team_id}", "put", "TeamConfigInRequest"),
        ("/api/organizations/create", "post", "OrganizationInRequest"),
        ("/api/teams/{team_id}/keys", "post", "KeyCreateInRequest"),
    ],
)
def test_write_operations_have_request_schemas(schema, path, method, component):
    body = schema["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": f"#/components/schemas/{component}"}
    assert component in schema["components"]["schemas"]


def test_versioned_twins_are_not_documented_twice(schema):
    assert not [path for path in schema["paths"] if path.startswith("/api/v1/")]


def test_health_is_public_in_the_schema(schema):
    assert not schema["paths"]["/health"]["get"].get("security")


def test_team_create_response_documents_the_key_and_markup(schema):
    created = schema["components"]["schemas"]["TeamCreatedOut"]["properties"]
    assert "virtual_key" in created and "markup_percent" in created
    assert "markup_percent" not in schema["components"]["schemas"]["TeamCreatedOut"].get("required", [])


# --- docs pages ---------------------------------------------------------------------------------

EXTERNAL_URL = re.compile(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", re.I)


def _static_urls(html: str) -> list[str]:
    return re.findall(r"""(?:src|href)=["'](/static/[^"']+)["']""", html)


def test_swagger_ui_is_served_without_a_cdn(anon):
    response = anon.get("/docs")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    assert "swagger-ui" in html
    assert not EXTERNAL_URL.search(html), EXTERNAL_URL.search(html)
    assert "cdn.jsdelivr.net" not in html and "unpkg.com" not in html
    assets = _static_urls(html)
    assert any("swagger-ui-bundle.js" in url for url in assets)
    for url in assets:
        assert anon.client.get(url).status_code == 200, url


def test_redoc_page_loads_its_bundle_locally(anon):
    response = anon.get("/redoc")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    assert "cdn.jsdelivr.net" not in html and "unpkg.com" not in html
    assets = _static_urls(html)
    assert any("redoc.standalone.js" in url for url in assets)
    for url in assets:
        assert anon.client.get(url).status_code == 200, url


def test_redoc_page_references_no_external_host(anon):
    html = anon.get("/redoc").content.decode()
    assert not EXTERNAL_URL.search(html), EXTERNAL_URL.search(html)


# --- /health ------------------------------------------------------------------------------------


def test_health_is_healthy(anon):
    response = anon.get("/health")
    assert response.status_code == 200
    assert response.json() == {
        "status": "healthy",
        "version": django_settings.VERSION,
        "checks": {"database": "ok", "cache": "ok"},
    }


def cache_backend_class():
    """The cache backend's class: /health checks on its own threads, each with its own backend instance."""
    from django.core.cache import caches

    return type(caches["default"])


def test_health_is_503_when_the_cache_fails(anon, monkeypatch):
    def broken(*args, **kwargs):
        raise ConnectionError("redis is down")

    monkeypatch.setattr(cache_backend_class(), "set", broken)
    response = anon.get("/health")
    assert response.status_code == 503
    assert response.json() == {
        "status": "unhealthy",
        "version": django_settings.VERSION,
        "checks": {"database": "ok", "cache": "error"},
    }


def test_health_is_503_when_the_cache_loses_writes(anon, monkeypatch):
    monkeypatch.setattr(cache_backend_class(), "get", lambda *args, **kwargs: None)
    response = anon.get("/health")
    assert response.status_code == 503
    assert response.json()["checks"] == {"database": "ok", "cache": "error"}


def test_health_is_503_when_the_database_fails(anon, monkeypatch):
    from django.db import OperationalError

    from saas_llm import api

    class DownConnection:
        def cursor(self):
            raise OperationalError("could not connect to server")

    monkeypatch.setattr(api, "connection", DownConnection())
    response = anon.get("/health")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "unhealthy"
    assert body["checks"] == {"database": "error", "cache": "ok"}


def test_health_answers_within_2_seconds_when_a_check_hangs(anon, monkeypatch):
    """A frozen database (connection open, no answers) made /health hang for 20 s and more."""
    import threading
    import time

    release = threading.Event()

    def frozen(*args, **kwargs):
        release.wait(10)
        raise ConnectionError("no answer")

    monkeypatch.setattr(cache_backend_class(), "set", frozen)
    try:
        started = time.monotonic()
        response = anon.get("/health")
        elapsed = time.monotonic() - started
    finally:
        release.set()

    assert response.status_code == 503
    assert response.json()["checks"] == {"database": "ok", "cache": "error"}
    assert elapsed < 2.0


# --- CORS ---------------------------------------------------------------------------------------

ORIGIN = "https://app.example.com"


@pytest.fixture
def cors(settings):
    settings.CORS_ALLOWED_ORIGINS = [ORIGIN]


def test_cors_allows_a_configured_origin(cors, acme):
    response = acme.api.get("/api/teams/acme-corp", headers={"Origin": ORIGIN})
    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == ORIGIN
    exposed = {h.strip().lower() for h in response["Access-Control-Expose-Headers"].split(",")}
    assert {"x-request-id", "retry-after", "idempotent-replayed"} <= exposed


def test_cors_ignores_other_origins(cors, acme):
    response = acme.api.get("/api/teams/acme-corp", headers={"Origin": "https://evil.example.com"})
    assert response.status_code == 200
    assert "Access-Control-Allow-Origin" not in response


def test_cors_preflight_allows_authorization_and_idempotency_key(cors, anon):
    response = anon.client.options(
        "/api/teams/create",
        HTTP_ORIGIN=ORIGIN,
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization, content-type, idempotency-key",
    )
    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == ORIGIN
    allowed = {h.strip().lower() for h in response["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type", "idempotency-key", "x-request-id"} <= allowed
    assert "POST" in response["Access-Control-Allow-Methods"]


def test_no_cors_origins_by_default(anon):
    response = anon.get("/health", headers={"Origin": ORIGIN})
    assert "Access-Control-Allow-Origin" not in response
