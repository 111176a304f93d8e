"""The real ASGI app under uvicorn, over real HTTP, with DEBUG=0 (SPEC §2, §4)."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.live

PROJECT = Path(__file__).resolve().parent.parent


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "SECRET_KEY", "DEBUG")}
    env.update(
        DJANGO_SETTINGS_MODULE="saas_llm.settings",
        DATABASE_URL=f"sqlite:///{tmp / 'live.sqlite3'}",
        SECRET_KEY="live-test-secret-key-not-the-dev-one-0123456789",
        DEBUG="0",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def _manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args], cwd=PROJECT, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("live")
    env = _env(tmp)
    _manage(env, "migrate", "--noinput")
    admin_key = _manage(env, "create_api_key", "--admin", "--name", "live").strip().splitlines()[-1]
    log_path = tmp / "uvicorn.log"
    log = log_path.open("w")
    # Port 0: the kernel picks a free port while uvicorn binds it, so a parallel run cannot take it
    # between our choosing and uvicorn's binding; uvicorn logs the port it got.
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "saas_llm.asgi:application", "--host", "127.0.0.1", "--port", "0"],
        cwd=PROJECT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        base = _wait_until_serving(server, log_path)
        with httpx.Client(base_url=base, timeout=10, trust_env=False) as client:
            yield {"client": client, "admin_key": admin_key}
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def _wait_until_serving(server: subprocess.Popen, log_path: Path) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"uvicorn exited early:\n{log_path.read_text()}")
        match = re.search(r"Uvicorn running on (http://127\.0\.0\.1:\d+)", log_path.read_text())
        if match:
            return match.group(1)
        time.sleep(0.05)
    pytest.fail(f"uvicorn did not start:\n{log_path.read_text()}")


def test_health_over_http(live):
    response = live["client"].get("/health", headers={"X-Request-Id": "live-check-1"})
    assert response.status_code == 200
    assert response.json()["status"] == "healthy"
    assert response.json()["checks"] == {"database": "ok", "cache": "ok"}
    assert response.headers["x-request-id"] == "live-check-1"


def test_authenticated_round_trip_over_http(live):
    client, auth = live["client"], {"Authorization": f"Bearer {live['admin_key']}"}
    created = client.post(
        "/api/organizations/create", json={"organization_id": "live-org", "name": "Live"}, headers=auth
    )
    assert created.status_code == 201, created.text
    assert created.json()["organization_id"] == "live-org"

    team = client.post(
        "/api/v1/teams/create",
        json={"team_id": "live-team", "organization_id": "live-org", "credits_allocated": 3},
        headers=auth,
    )
    assert team.status_code == 201, team.text
    virtual_key = team.json()["virtual_key"]

    # Read back through the other process's database with the team's own key.
    mine = client.get("/api/teams/live-team", headers={"Authorization": f"Bearer {virtual_key}"})
    assert mine.status_code == 200
    assert mine.json()["credits_remaining"] == 3
    assert "markup_percent" not in mine.json()
    assert re.fullmatch(r"[0-9a-f]{32}", mine.headers["x-request-id"])

    org = client.get("/api/organizations/live-org", headers=auth)
    assert org.json()["team_count"] == 1


def test_errors_over_http_are_json(live):
    client = live["client"]
    no_key = client.get("/api/teams/live-team")
    assert no_key.status_code == 401
    assert no_key.headers["www-authenticate"] == "Bearer"

    # A real client sends no CSRF cookie: unknown routes must still be a JSON 404 for every method.
    for method in ("GET", "POST", "DELETE"):
        unknown = client.request(method, "/api/does-not-exist", content=b"{}")
        assert unknown.status_code == 404, (method, unknown.text[:200])
        assert unknown.headers["content-type"] == "application/json"
        assert unknown.json() == {"detail": "Not found", "code": "not_found"}

    bad = client.post(
        "/api/organizations/create",
        content=b"{not json",
        headers={"Authorization": f"Bearer {live['admin_key']}", "Content-Type": "application/json"},
    )
    assert bad.status_code == 400
    assert bad.json()["code"] == "invalid_request"


def test_docs_and_static_files_are_served_with_debug_off(live):
    client = live["client"]
    docs = client.get("/docs")
    assert docs.status_code == 200
    bundle = client.get("/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js")
    assert bundle.status_code == 200
    assert len(bundle.content) > 10_000
    admin_css = client.get("/static/admin/css/base.css")
    assert admin_css.status_code == 200


def test_asgi_app_refuses_the_dev_secret_key_with_debug_off(tmp_path):
    env = _env(tmp_path)
    del env["SECRET_KEY"]
    done = subprocess.run(
        [sys.executable, "-c", "import saas_llm.asgi"], cwd=PROJECT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert "SECRET_KEY must be set when DEBUG=0" in done.stderr


def test_every_middleware_can_run_async():
    """A sync-only middleware makes Django run it in a thread and the rest of the chain — every API
    request — back through async_to_sync (WhiteNoise's own middleware is sync-only)."""
    from django.conf import settings
    from django.utils.module_loading import import_string

    sync_only = [path for path in settings.MIDDLEWARE if not getattr(import_string(path), "async_capable", False)]
    assert sync_only == []


def test_static_files_are_served_under_asgi(live):
    response = live["client"].get("/static/admin/css/base.css")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/css")
    assert b"body" in response.content
