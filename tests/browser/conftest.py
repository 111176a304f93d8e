"""A real browser (Playwright driving Debian's Chromium) against a real uvicorn serving the test DB.

Never downloads a browser: Chromium comes from apt (`.ci/run` installs it). Outside CI a machine
without it skips these tests; in CI a missing browser is a failure, not a skip.
"""

import os
import sys
from pathlib import Path

import pytest

from tests.live import ROOT

CHROMIUM = os.environ.get("SAAS_LLM_CHROMIUM", "/usr/bin/chromium")  # Debian's package
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
IN_CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _browser_missing() -> str | None:
    """Why no browser can run here, or None."""
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -r requirements-dev.txt)"
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        return f"Chromium is not installed at {CHROMIUM} (apt-get install chromium; .ci/run does it in CI)"
    return None


def needs_postgres():
    from django.db import connection

    return pytest.mark.skipif(
        connection.vendor != "postgresql",
        reason="the browser tests' uvicorn subprocess shares the test database, which needs Postgres (CI sets DATABASE_URL)",
    )


@pytest.fixture(scope="module")
def chromium_browser():
    reason = _browser_missing()
    if reason:
        if IN_CI:
            pytest.fail(f"browser tests cannot run in CI: {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps its asyncio loop running on this thread (in a greenlet) for as
    # long as it is open, and Django's async-safety check then refuses every ORM call, the test
    # database flush included. Those calls are all plain synchronous ones: let them through.
    with pytest.MonkeyPatch.context() as patch, sync_playwright() as playwright:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def admin_server(django_db_setup):
    """One uvicorn worker (DEBUG=0, as in production) on the Postgres test database."""
    from django.conf import settings

    from tests.conftest import subprocess_database_url
    from tests.live import ServerProcess

    env = {
        "SECRET_KEY": "browser-tests-secret-key-0123456789-abcdefghij",
        "DEBUG": "0",
        "DATABASE_URL": subprocess_database_url(),
        "REDIS_URL": settings.REDIS_URL,
        "CELERY_BROKER_URL": settings.REDIS_URL,
    }
    server = ServerProcess(
        [sys.executable, "-m", "uvicorn", "saas_llm.asgi:application", "--host", "127.0.0.1", "--port", "{port}"]
        + ["--workers", "1", "--log-level", "warning"],
        env=env,
        timeout=60,
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    for old in ARTIFACTS.glob("*.png"):
        old.unlink()
    return ARTIFACTS
