"""Production settings (DEBUG=0): `manage.py check --deploy` is clean with a production environment,
and SAAS_LLM_HTTPS turns on what serving over TLS needs (README, "Run it in production")."""

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.test import Client

ROOT = Path(__file__).resolve().parent.parent


def check_deploy(**env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL")}
    return subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env={**base, "DEBUG": "0", "SECRET_KEY": secrets.token_urlsafe(50), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_check_deploy_is_clean_with_a_production_environment():
    done = check_deploy(SAAS_LLM_HTTPS="1", SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto", ALLOWED_HOSTS="llm.example.com")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no issues" in done.stdout


def test_check_deploy_names_what_plain_http_lacks():
    done = check_deploy(ALLOWED_HOSTS="llm.example.com")
    assert done.returncode != 0
    for check in ("security.W004", "security.W008", "security.W012", "security.W016"):
        assert check in done.stderr + done.stdout


@pytest.fixture
def https(settings):
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 31536000
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    return Client()


def test_plain_http_is_redirected_but_health_is_not(https, db):
    assert https.get("/api/jobs").status_code == 301
    assert https.get("/api/jobs").headers["Location"] == "https://testserver/api/jobs"
    assert https.get("/health").status_code == 200  # load balancers check over plain HTTP


def test_requests_through_the_tls_proxy_get_hsts(https, db):
    response = https.get("/health", headers={"X-Forwarded-Proto": "https"})
    assert response.status_code == 200
    assert response.headers["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains"
