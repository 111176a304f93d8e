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
