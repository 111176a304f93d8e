"""Shared fixtures: an admin key and two tenants, `acme` and `globex`, for isolation checks."""

import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from django.core.cache import cache
from django.test import Client

from tenants import services as tenant_services
from tenants.models import Team


@dataclass
class Api:
    """A JSON client bound to one bearer key."""

    client: Client
    key: str | None

    def _headers(self, headers: dict | None) -> dict:
        out = {"HTTP_AUTHORIZATION": f"Bearer {self.key}"} if self.key else {}
        for name, value in (headers or {}).items():
            out["HTTP_" + name.upper().replace("-", "_")] = value
        return out

    def get(self, path: str, params: dict | None = None, headers: dict | None = None):
        return self.client.get(path, params or {}, **self._headers(headers))

    def post(
        self,
        path: str,
        body: Any = None,
        headers: dict | None = None,
        raw: str | None = None,
        content_type: str = "application/json",
    ):
        data = raw if raw is not None else json.dumps(body if body is not None else {})
        return self.client.post(path, data, content_type=content_type, **self._headers(headers))

    def put(self, path: str, body: Any, headers: dict | None = None):
        return self.client.put(path, json.dumps(body), content_type="application/json", **self._headers(headers))

    def patch(self, path: str, body: Any, headers: dict | None = None):
        return self.client.patch(path, json.dumps(body), content_type="application/json", **self._headers(headers))

    def delete(self, path: str, headers: dict | None = None):
        return self.client.delete(path, **self._headers(headers))


@dataclass
class Tenant:
    team: Team
    key: str
    api: Api


@pytest.fixture(autouse=True)
def _clear_cache():
    cache.clear()
    yield


@pytest.fixture
def anon(db) -> Api:
    return Api(Client(), None)


@pytest.fixture
def admin_key(db) -> str:
    return tenant_services.issue_key(team=None, name="test-admin")[1]


@pytest.fixture
def admin(admin_key) -> Api:
    return Api(Client(), admin_key)


def make_tenant(team_id: str, org_id: str, credits: Decimal | int = 100, **config: Any) -> Tenant:
    from tenants.models import Organization

    if not Organization.objects.filter(id=org_id).exists():
        tenant_services.create_organization(organization_id=org_id, name=org_id.title())
    team, key = tenant_services.create_team(
        team_id=team_id, organization_id=org_id, credits_allocated=Decimal(credits), actor="tests", **config
    )
    return Tenant(team=team, key=key, api=Api(Client(), key))


@pytest.fixture
def staff(db, settings) -> Client:
    """A logged-in superuser `root` of the Django admin."""
    from django.contrib.auth.models import User

    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # ~1 s per login otherwise
    User.objects.create_superuser("root", "root@example.com", "correct horse battery staple")
    client = Client()
    assert client.login(username="root", password="correct horse battery staple")
    return client


@pytest.fixture
def acme(db) -> Tenant:
    return make_tenant("acme-corp", "acme")


@pytest.fixture
def globex(db) -> Tenant:
    return make_tenant("globex-eng", "globex")


# --- registry, Router and the mock upstream ------------------------------------------------------


@pytest.fixture(autouse=True)
def _fresh_router():
    """Each test gets a Router built from its own registry (versions restart with the test DB)."""
    from models_registry.router import router_holder

    router_holder.reset()
    yield
    router_holder.reset()


@pytest.fixture
def private_redis():
    """A redis-server of the test's own on a free port (killed and restarted at will)."""
    import shutil

    from tests.live import RedisServer

    if shutil.which("redis-server") is None:
        pytest.skip("needs the redis-server binary")
    server = RedisServer()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mock_upstream():
    """One OpenAI-compatible mock upstream process for the whole session (reset per test by `mock`)."""
    from tests.live import MockControl, start_mock_upstream

    server = start_mock_upstream()
    yield MockControl(server.url)
    server.stop()


@pytest.fixture
def mock(mock_upstream):
    mock_upstream.reset()
    return mock_upstream


def make_alias(alias_name: str, mock_url: str, *, deployments: list[dict] | None = None, group: str = "standard", **fields):
    """An alias on the mock upstream (default: one deployment `openai/mock-model`) in access group `group`."""
    from models_registry import services as registry_services
    from models_registry.models import AccessGroup

    specs = deployments or [{"litellm_model": "openai/mock-model"}]
    for spec in specs:
        spec.setdefault("api_base", f"{mock_url}/v1")
        spec.setdefault("timeout_s", 5.0)
    alias = registry_services.create_alias(alias_name=alias_name, deployments=specs, **fields)
    existing = AccessGroup.objects.filter(name=group).first()
    if existing is None:
        registry_services.create_access_group(group_name=group, model_aliases=[alias_name])
    else:
        registry_services.update_access_group(group=existing, model_aliases=[*existing.aliases.values_list("name", flat=True), alias_name])
    return alias


@pytest.fixture
def chat_alias(db, mock):
    """`chat-fast` on the mock with explicit prices, in group `standard`."""
    return make_alias(
        "chat-fast",
        mock.url,
        deployments=[{"litellm_model": "openai/mock-model", "input_cost_per_token": "0.000001", "output_cost_per_token": "0.000002"}],
    )


@pytest.fixture
def llm_team(db, chat_alias):
    """Team `acme-corp` allowed to use `chat-fast` (its default model), 100 credits, job budget mode."""
    return make_tenant("acme-corp", "acme", access_groups=["standard"], default_model="chat-fast")


@pytest.fixture
def llm_other_team(db, chat_alias):
    return make_tenant("globex-eng", "globex", access_groups=["standard"], default_model="chat-fast")


# --- streaming helpers (appended for the jobs / LLM-call tests) ----------------------------------


@pytest.fixture
def sse_post():
    """POST to an SSE endpoint and read the whole body inside the request's own event loop.

    Django's sync test client would drain an async stream from a second event loop, which breaks
    litellm's upstream stream (it belongs to the loop that opened it); AsyncClient keeps one loop.
    Returns (response, body bytes).
    """
    from asgiref.sync import async_to_sync
    from django.test import AsyncClient

    def post(key: str | None, path: str, body: Any, headers: dict | None = None):
        async def run():
            sent = {"Authorization": f"Bearer {key}"} if key else {}
            sent.update(headers or {})
            data = body if isinstance(body, str) else json.dumps(body)
            response = await AsyncClient().post(path, data, content_type="application/json", headers=sent)
            if response.streaming:
                return response, b"".join([chunk async for chunk in response.streaming_content])
            return response, response.content

        return async_to_sync(run)()

    return post


def sse_events(body: bytes) -> list:
    """The `data:` payloads of an SSE body, JSON-decoded (the `[DONE]` terminator stays a string)."""
    assert body.endswith(b"\n\n"), body[-200:]
    events = []
    for block in body.split(b"\n\n")[:-1]:
        assert block.startswith(b"data: "), block
        payload = block[len(b"data: ") :]
        events.append("[DONE]" if payload == b"[DONE]" else json.loads(payload))
    return events


# --- live gateway, database URL for subprocesses, webhook receiver (appended for rate limits,
# --- idempotency and webhooks) -------------------------------------------------------------------


def subprocess_database_url() -> str:
    """The URL of the database the tests run against (the test DB), for server/worker subprocesses."""
    from django.conf import settings
    from django.db import connection

    db = settings.DATABASES["default"]
    if connection.vendor != "postgresql":
        raise RuntimeError("subprocesses can only share a Postgres test database")
    auth = db.get("USER") or ""
    if db.get("PASSWORD"):
        auth += f":{db['PASSWORD']}"
    return f"postgres://{auth}@{db.get('HOST') or '127.0.0.1'}:{db.get('PORT') or 5432}/{db['NAME']}"


def needs_postgres_and_redis():
    from django.conf import settings
    from django.db import connection

    return pytest.mark.skipif(
        connection.vendor != "postgresql" or not settings.REDIS_URL,
        reason="several processes share state only through Postgres and Redis (CI sets both)",
    )


@pytest.fixture(scope="session")
def live_gateway(django_db_setup):
    """`uvicorn --workers 2` serving the test database and Redis, for cross-process tests.

    Each worker keeps its litellm Router across tests, keyed by registry version and deployment
    ids. Tests that make LLM calls through it use `django_db(transaction=True, reset_sequences=True)`
    and the same alias fixture, so every test's registry is identical to the one the server has
    (same version, same ids) and no Router is rebuilt in the middle of a burst.
    """
    import sys

    from django.conf import settings

    from tests.live import ServerProcess

    server = ServerProcess(
        [sys.executable, "-m", "uvicorn", "saas_llm.asgi:application", "--host", "127.0.0.1", "--port", "{port}"]
        + ["--workers", "2", "--log-level", "info"],
        env={
            "SECRET_KEY": "live-rate-limit-tests-secret-key-0123456789",
            "DEBUG": "0",
            "DATABASE_URL": subprocess_database_url(),
            "REDIS_URL": settings.REDIS_URL,
            "CELERY_BROKER_URL": settings.REDIS_URL,
        },
        timeout=90,
    )
    try:
        import time

        deadline = time.monotonic() + 90
        while server.output().count("Application startup complete") < 2:  # both workers serve
            assert time.monotonic() < deadline, server.output()
            time.sleep(0.1)
        yield server
    finally:
        server.stop()


class WebhookReceiver:
    """A real HTTP endpoint on loopback that records every POST and answers with scripted statuses."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        receiver = self
        self.requests: list[dict] = []
        self.statuses: list[int] = []  # answered in order, then 200
        self._cond = threading.Condition()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with receiver._cond:
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    receiver.requests.append(
                        {"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body}
                    )
                    receiver._cond.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[dict]:
        with self._cond:
            self._cond.wait_for(lambda: len(self.requests) >= count, timeout=timeout)
            return list(self.requests)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def webhook_receiver():
    receiver = WebhookReceiver()
    yield receiver
    receiver.stop()
