"""Model registry API (SPEC §5.6, §3): /api/model-aliases, /api/model-access-groups, and the
`create_model_alias` / `create_access_group` management commands. Every write is checked in the DB.
"""

from decimal import Decimal

import pytest
from django.core.management import CommandError, call_command

from models_registry.models import AccessGroup, Deployment, ModelAlias, RegistryVersion
from models_registry.services import create_access_group, create_alias
from tenants import services as tenant_services
from tenants.models import ApiKey
from tests.conftest import make_tenant

ADMIN_REQUIRED = {"detail": "This endpoint requires an admin API key", "code": "admin_required"}
PRIMARY = {
    "litellm_model": "openai/gpt-4o-mini",
    "api_key": "os.environ/OPENAI_API_KEY",
    "priority": 0,
    "weight": 3,
    "timeout_s": 20,
    "input_cost_per_token": "0.00000015",
    "output_cost_per_token": 0.0000006,
}
FALLBACK = {
    "litellm_model": "anthropic/claude-3-5-haiku-20241022",
    "api_key": "os.environ/ANTHROPIC_API_KEY",
    "priority": 1,
}
PUBLIC_FIELDS = {"alias_name", "display_name", "description", "status"}


def version() -> int:
    return RegistryVersion.objects.filter(pk=1).values_list("version", flat=True).first() or 0


def errors_at(response) -> list:
    assert response.status_code == 422, response.json()
    return [error["loc"] for error in response.json()["detail"]]


@pytest.fixture
def standard(db):
    return create_access_group(group_name="standard", display_name="Standard")


@pytest.fixture
def registry(db):
    """chat-fast in `standard` (granted to acme), chat-premium in `premium` (granted to nobody)."""
    create_alias(
        alias_name="chat-fast", display_name="Fast chat", deployments=[{"litellm_model": "openai/gpt-4o-mini"}]
    )
    create_alias(alias_name="chat-premium", deployments=[{"litellm_model": "openai/gpt-4o"}])
    create_access_group(group_name="standard", model_aliases=["chat-fast"])
    create_access_group(group_name="premium", model_aliases=["chat-premium"])


@pytest.fixture
def acme_std(registry):
    return make_tenant("acme-corp", "acme", access_groups=["standard"], default_model="chat-fast")


# --- aliases: create / get -----------------------------------------------------------------------


def test_create_alias(admin, standard):
    before = version()
    body = {
        "alias_name": "chat-fast",
        "display_name": "Fast chat",
        "description": "cheap and quick",
        "access_groups": ["standard"],
        "deployments": [PRIMARY, FALLBACK],
    }

    response = admin.post("/api/model-aliases/create", body)

    assert response.status_code == 201, response.json()
    out = response.json()
    assert (out["alias_name"], out["display_name"], out["description"], out["status"]) == (
        "chat-fast", "Fast chat", "cheap and quick", "active",
    )  # fmt: skip
    assert out["access_groups"] == ["standard"]
    assert out["deployments"][0] == {
        "litellm_model": "openai/gpt-4o-mini",
        "api_base": "",
        "api_key": "os.environ/OPENAI_API_KEY",  # the reference, shown as given
        "priority": 0,
        "weight": 3,
        "timeout_s": 20.0,
        "input_cost_per_token": 0.00000015,
        "output_cost_per_token": 0.0000006,
    }
    assert out["deployments"][1]["litellm_model"] == "anthropic/claude-3-5-haiku-20241022"
    assert out["deployments"][1]["input_cost_per_token"] is None
    assert out["created_at"].endswith("Z")
    alias = ModelAlias.objects.get(name="chat-fast")
    assert list(alias.access_groups.values_list("name", flat=True)) == ["standard"]
    rows = list(
        alias.deployments.order_by("position").values_list(
            "litellm_model", "api_key", "priority", "weight", "timeout_s"
        )
    )
    assert rows == [
        ("openai/gpt-4o-mini", "os.environ/OPENAI_API_KEY", 0, 3, 20.0),
        ("anthropic/claude-3-5-haiku-20241022", "os.environ/ANTHROPIC_API_KEY", 1, 1, 60.0),
    ]
    primary = alias.deployments.get(priority=0)
    assert (primary.input_cost_per_token, primary.output_cost_per_token) == (
        Decimal("0.00000015"),
        Decimal("0.0000006"),
    )
    assert version() > before  # every worker's Router is rebuilt

    fetched = admin.get("/api/model-aliases/chat-fast")
    assert fetched.status_code == 200
    assert fetched.json() == out


def test_get_unknown_alias_is_404(admin):
    response = admin.get("/api/model-aliases/nope")

    assert response.status_code == 404
    assert response.json() == {"detail": "Model alias 'nope' not found", "code": "model_not_found"}


def test_duplicate_alias_is_409(admin, registry):
    response = admin.post("/api/model-aliases/create", {"alias_name": "chat-fast", "deployments": [PRIMARY]})

    assert response.status_code == 409
    assert response.json() == {"detail": "Model alias 'chat-fast' already exists", "code": "model_alias_exists"}
    assert Deployment.objects.filter(alias_id="chat-fast").count() == 1


def test_unknown_access_group_is_404_and_nothing_is_created(admin, db):
    response = admin.post(
        "/api/model-aliases/create", {"alias_name": "chat-x", "access_groups": ["ghost"], "deployments": [PRIMARY]}
    )

    assert response.status_code == 404
    assert response.json() == {"detail": "Access group 'ghost' not found", "code": "access_group_not_found"}
    assert not ModelAlias.objects.exists()
    assert not Deployment.objects.exists()


BAD_ALIASES = [
    # (change to a valid body, expected loc)
    ({"deployments": [{**PRIMARY, "api_key": "sk-live-0123456789abcdef"}]}, ["body", "deployments", 0, "api_key"]),
    ({"deployments": [{**PRIMARY, "api_key": "os.environ/"}]}, ["body", "deployments", 0, "api_key"]),
    ({"deployments": [{**PRIMARY, "api_key": "os.environ/A B"}]}, ["body", "deployments", 0, "api_key"]),
    (
        {"deployments": [PRIMARY, {**FALLBACK, "api_key": "AKIAIOSFODNN7EXAMPLE"}]},
        ["body", "deployments", 1, "api_key"],
    ),
    ({"deployments": []}, ["body", "deployments"]),
    ({"deployments": None}, ["body", "deployments"]),
    ({"deployments": [{"priority": 0}]}, ["body", "deployments", 0, "litellm_model"]),
    ({"deployments": [{**PRIMARY, "rpm": 5}]}, ["body", "deployments", 0, "rpm"]),
    ({"deployments": [{**PRIMARY, "priority": "0"}]}, ["body", "deployments", 0, "priority"]),
    ({"deployments": [{**PRIMARY, "priority": -1}]}, ["body", "deployments", 0, "priority"]),
    ({"deployments": [{**PRIMARY, "weight": 0}]}, ["body", "deployments", 0, "weight"]),
    ({"deployments": [{**PRIMARY, "timeout_s": 0}]}, ["body", "deployments", 0, "timeout_s"]),
    (
        {"deployments": [{**PRIMARY, "input_cost_per_token": "-0.1"}]},
        ["body", "deployments", 0, "input_cost_per_token"],
    ),
    (
        {"deployments": [{**PRIMARY, "input_cost_per_token": "cheap"}]},
        ["body", "deployments", 0, "input_cost_per_token"],
    ),
    ({"deployments": [{**PRIMARY, "api_base": "not a url"}]}, ["body", "deployments", 0, "api_base"]),
    # Server settings are not provider keys: litellm would send their value to `api_base` (SPEC §5.6).
    *[
        ({"deployments": [{**PRIMARY, "api_key": f"os.environ/{name}"}]}, ["body", "deployments", 0, "api_key"])
        for name in ("DATABASE_URL", "SECRET_KEY", "REDIS_URL", "CELERY_BROKER_URL", "HOME", "SAAS_LLM_ADMIN_API_KEY")
    ],
    ({"deployments": [{**PRIMARY, "timeout_s": "20"}]}, ["body", "deployments", 0, "timeout_s"]),
    (
        {"deployments": [{**PRIMARY, "input_cost_per_token": "\u0661"}]},
        ["body", "deployments", 0, "input_cost_per_token"],
    ),
    ({"alias_name": "Chat Fast"}, ["body", "alias_name"]),
    ({"alias_name": 5}, ["body", "alias_name"]),
    ({"status": "retired"}, ["body", "status"]),
    ({"access_groups": "standard"}, ["body", "access_groups"]),
    ({"display_nmae": "typo"}, ["body", "display_nmae"]),
]


@pytest.mark.parametrize(("change", "loc"), BAD_ALIASES)
def test_create_alias_validation_is_422(admin, standard, change, loc):
    body = {"alias_name": "chat-x", "deployments": [PRIMARY], **change}

    response = admin.post("/api/model-aliases/create", body)

    assert loc in errors_at(response)
    assert all(error["loc"][0] == "body" for error in response.json()["detail"])
    assert not ModelAlias.objects.exists()


def test_missing_fields_are_reported_as_missing(admin, db):
    response = admin.post("/api/model-aliases/create", {})

    assert response.status_code == 422
    missing = {tuple(error["loc"]) for error in response.json()["detail"] if error["type"] == "value_error.missing"}
    assert missing == {("body", "alias_name"), ("body", "deployments")}


@pytest.mark.parametrize(
    ("raw", "content_type"), [('{"alias_name": ', "application/json"), ("a=b", "application/x-www-form-urlencoded")]
)
def test_malformed_body_is_400(admin, db, raw, content_type):
    response = admin.post("/api/model-aliases/create", raw=raw, content_type=content_type)

    assert response.status_code == 400
    assert not ModelAlias.objects.exists()


def test_alias_names_are_case_sensitive_slugs_as_given(admin, db):
    response = admin.post("/api/model-aliases/create", {"alias_name": "gpt-4o.mini_v2", "deployments": [PRIMARY]})

    assert response.status_code == 201
    assert ModelAlias.objects.filter(name="gpt-4o.mini_v2").exists()


# --- aliases: put / list -------------------------------------------------------------------------


def test_put_alias_replaces_fields_deployments_and_groups(admin, registry):
    before = version()

    response = admin.put(
        "/api/model-aliases/chat-fast",
        {"display_name": "Faster chat", "status": "inactive", "access_groups": ["premium"], "deployments": [FALLBACK]},
    )

    assert response.status_code == 200, response.json()
    out = response.json()
    assert (out["display_name"], out["status"], out["access_groups"]) == ("Faster chat", "inactive", ["premium"])
    assert [d["litellm_model"] for d in out["deployments"]] == ["anthropic/claude-3-5-haiku-20241022"]
    alias = ModelAlias.objects.get(name="chat-fast")
    assert (alias.display_name, alias.status) == ("Faster chat", "inactive")
    assert list(alias.deployments.values_list("litellm_model", "priority")) == [
        ("anthropic/claude-3-5-haiku-20241022", 1)
    ]
    assert list(alias.access_groups.values_list("name", flat=True)) == ["premium"]
    assert version() > before


def test_put_alias_is_partial(admin, registry):
    response = admin.put("/api/model-aliases/chat-fast", {"description": "now documented"})

    assert response.status_code == 200
    alias = ModelAlias.objects.get(name="chat-fast")
    assert (alias.description, alias.display_name, alias.status) == ("now documented", "Fast chat", "active")
    assert list(alias.deployments.values_list("litellm_model", flat=True)) == ["openai/gpt-4o-mini"]
    assert list(alias.access_groups.values_list("name", flat=True)) == ["standard"]


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"deployments": [{**PRIMARY, "api_key": "sk-proj-abcdefghijklmnop"}]}, ["body", "deployments", 0, "api_key"]),
        ({"deployments": []}, ["body", "deployments"]),
        ({"alias_name": "renamed"}, ["body", "alias_name"]),  # the name is the id: not updatable
        ({"stauts": "inactive"}, ["body", "stauts"]),
    ],
)
def test_put_alias_validation_is_422(admin, registry, body, loc):
    response = admin.put("/api/model-aliases/chat-fast", body)

    assert loc in errors_at(response)
    assert list(Deployment.objects.filter(alias_id="chat-fast").values_list("api_key", flat=True)) == [""]


def test_put_unknown_alias_is_404(admin, registry):
    response = admin.put("/api/model-aliases/nope", {"display_name": "x"})

    assert response.status_code == 404
    assert response.json()["code"] == "model_not_found"


def test_list_aliases_for_admin(admin, registry):
    response = admin.get("/api/model-aliases")

    assert response.status_code == 200
    out = response.json()
    assert (out["count"], out["next"], out["previous"]) == (2, None, None)
    assert [alias["alias_name"] for alias in out["results"]] == ["chat-fast", "chat-premium"]
    assert out["results"][0]["deployments"][0]["litellm_model"] == "openai/gpt-4o-mini"
    page = admin.get("/api/model-aliases", {"limit": 1, "offset": 1}).json()
    assert [alias["alias_name"] for alias in page["results"]] == ["chat-premium"]
    assert admin.get("/api/model-aliases", {"limit": "-1"}).status_code == 422


def test_list_aliases_for_a_team_shows_only_allowed_without_deployments(acme_std):
    response = acme_std.api.get("/api/model-aliases")

    assert response.status_code == 200
    assert response.json()["count"] == 1
    [alias] = response.json()["results"]
    assert set(alias) == PUBLIC_FIELDS
    assert alias["alias_name"] == "chat-fast"


# --- aliases: team keys --------------------------------------------------------------------------


def test_team_key_reads_an_allowed_alias_without_deployments(acme_std):
    response = acme_std.api.get("/api/model-aliases/chat-fast")

    assert response.status_code == 200
    assert response.json() == {
        "alias_name": "chat-fast",
        "display_name": "Fast chat",
        "description": "",
        "status": "active",
    }
    assert "gpt-4o" not in response.content.decode()  # no provider model name anywhere


@pytest.mark.parametrize("name", ["chat-premium", "nope"])
def test_team_key_reading_a_not_allowed_or_unknown_alias_is_404(acme_std, name):
    response = acme_std.api.get(f"/api/model-aliases/{name}")

    assert response.status_code == 404
    assert response.json() == {"detail": f"Model alias '{name}' not found", "code": "model_not_found"}


def test_team_key_loses_sight_of_an_alias_in_an_inactive_group(acme_std):
    AccessGroup.objects.filter(name="standard").update(status="inactive")

    assert acme_std.api.get("/api/model-aliases/chat-fast").status_code == 404


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "/api/model-aliases/create", {"alias_name": "chat-x", "deployments": [PRIMARY]}),
        ("put", "/api/model-aliases/chat-fast", {"display_name": "hijacked"}),
        ("post", "/api/model-access-groups/create", {"group_name": "mine", "model_aliases": ["chat-premium"]}),
        ("get", "/api/model-access-groups/standard", None),
        ("put", "/api/model-access-groups/standard", {"model_aliases": ["chat-fast", "chat-premium"]}),
    ],
)
def test_team_key_cannot_manage_the_registry(acme_std, method, path, body):
    before = version()

    response = getattr(acme_std.api, method)(path, body) if body is not None else acme_std.api.get(path)

    assert response.status_code == 403
    assert response.json() == ADMIN_REQUIRED
    assert version() == before
    assert not ModelAlias.objects.filter(name="chat-x").exists()
    assert ModelAlias.objects.get(name="chat-fast").display_name == "Fast chat"
    assert list(AccessGroup.objects.get(name="standard").aliases.values_list("name", flat=True)) == ["chat-fast"]
    assert not AccessGroup.objects.filter(name="mine").exists()


@pytest.mark.parametrize(
    ("method", "path"),
    [("post", "/api/model-aliases/create"), ("get", "/api/model-aliases"), ("get", "/api/model-aliases/chat-fast"),
     ("put", "/api/model-aliases/chat-fast"), ("post", "/api/model-access-groups/create"),
     ("get", "/api/model-access-groups/standard"), ("put", "/api/model-access-groups/standard")],
)  # fmt: skip
def test_no_key_or_revoked_key_is_401(anon, admin, admin_key, registry, method, path):
    call = getattr(anon, method)
    response = call(path) if method == "get" else call(path, {})
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"

    tenant_services.revoke_key(key=ApiKey.objects.get(team__isnull=True))
    call = getattr(admin, method)
    response = call(path) if method == "get" else call(path, {"display_name": "x"})
    assert response.status_code == 401
    assert response.json() == {"detail": "API key has been revoked"}
    assert ModelAlias.objects.get(name="chat-fast").display_name == "Fast chat"


# --- access groups -------------------------------------------------------------------------------


def test_create_get_put_access_group(admin, registry):
    created = admin.post(
        "/api/model-access-groups/create",
        {
            "group_name": "gold",
            "display_name": "Gold",
            "description": "all of it",
            "model_aliases": ["chat-fast", "chat-premium"],
        },
    )

    assert created.status_code == 201, created.json()
    out = created.json()
    assert (out["group_name"], out["display_name"], out["description"], out["status"]) == (
        "gold",
        "Gold",
        "all of it",
        "active",
    )
    assert out["model_aliases"] == ["chat-fast", "chat-premium"]
    assert sorted(AccessGroup.objects.get(name="gold").aliases.values_list("name", flat=True)) == [
        "chat-fast",
        "chat-premium",
    ]
    assert admin.get("/api/model-access-groups/gold").json() == out

    updated = admin.put(
        "/api/model-access-groups/gold", {"display_name": "Gold tier", "model_aliases": ["chat-premium"]}
    )

    assert updated.status_code == 200
    assert (updated.json()["display_name"], updated.json()["model_aliases"]) == ("Gold tier", ["chat-premium"])
    group = AccessGroup.objects.get(name="gold")
    assert (group.display_name, group.description) == ("Gold tier", "all of it")  # partial: description kept
    assert list(group.aliases.values_list("name", flat=True)) == ["chat-premium"]

    emptied = admin.put("/api/model-access-groups/gold", {"model_aliases": [], "status": "inactive"})
    assert emptied.json()["model_aliases"] == []
    assert AccessGroup.objects.get(name="gold").status == "inactive"


def test_access_group_changes_what_a_team_may_use(admin, acme_std):
    assert acme_std.api.get("/api/model-aliases/chat-premium").status_code == 404

    admin.put("/api/model-access-groups/standard", {"model_aliases": ["chat-fast", "chat-premium"]})

    assert acme_std.api.get("/api/model-aliases/chat-premium").status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "expected"),
    [
        (
            {"group_name": "standard"},
            409,
            {"detail": "Access group 'standard' already exists", "code": "access_group_exists"},
        ),
        (
            {"group_name": "new", "model_aliases": ["ghost"]},
            404,
            {"detail": "Model alias 'ghost' not found", "code": "model_not_found"},
        ),
        ({"group_name": "Bad Name"}, 422, ["body", "group_name"]),
        ({}, 422, ["body", "group_name"]),
        ({"group_name": "new", "model_aliases": "chat-fast"}, 422, ["body", "model_aliases"]),
        ({"group_name": "new", "aliases": ["chat-fast"]}, 422, ["body", "aliases"]),
        ({"group_name": "new", "status": "archived"}, 422, ["body", "status"]),
    ],
)
def test_create_access_group_errors(admin, registry, body, status, expected):
    response = admin.post("/api/model-access-groups/create", body)

    assert response.status_code == status
    if status == 422:
        assert expected in errors_at(response)
    else:
        assert response.json() == expected
    assert sorted(AccessGroup.objects.values_list("name", flat=True)) == ["premium", "standard"]


def test_access_group_unknown_is_404(admin, registry):
    for response in (
        admin.get("/api/model-access-groups/ghost"),
        admin.put("/api/model-access-groups/ghost", {"display_name": "x"}),
    ):
        assert response.status_code == 404
        assert response.json() == {"detail": "Access group 'ghost' not found", "code": "access_group_not_found"}


def test_put_access_group_with_unknown_alias_changes_nothing(admin, registry):
    response = admin.put("/api/model-access-groups/standard", {"display_name": "x", "model_aliases": ["ghost"]})

    assert response.status_code == 404
    group = AccessGroup.objects.get(name="standard")
    assert (group.display_name, list(group.aliases.values_list("name", flat=True))) == ("", ["chat-fast"])


# --- management commands -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["OPENAI_API_KEY", "AZURE_API_TOKEN", "AWS_SECRET_ACCESS_KEY", "MY_PROVIDER_API_KEY"])
def test_provider_key_variables_are_allowed(admin, standard, name):
    response = admin.post(
        "/api/model-aliases/create",
        {"alias_name": "chat-x", "deployments": [{**PRIMARY, "api_key": f"os.environ/{name}"}]},
    )
    assert response.status_code == 201, response.content
    assert Deployment.objects.get().api_key == f"os.environ/{name}"


def test_the_provider_key_allowlist_is_a_setting_that_never_admits_server_settings(admin, standard, settings):
    settings.SAAS_LLM_PROVIDER_KEY_ENV = ["VENDOR_*", "*"]

    def create(name: str):
        deployment = {**PRIMARY, "api_key": f"os.environ/{name}"}
        return admin.post("/api/model-aliases/create", {"alias_name": f"c-{name.lower()}", "deployments": [deployment]})

    assert create("VENDOR_SECRET").status_code == 201
    for name in ("DATABASE_URL", "SECRET_KEY", "REDIS_URL", "DJANGO_SETTINGS_MODULE", "SAAS_LLM_METRICS_TOKEN"):
        response = create(name)
        assert response.status_code == 422, name
        assert "is not a provider key variable" in response.json()["detail"][0]["msg"]


def test_a_stored_deployment_with_a_server_setting_as_key_is_never_routed(db, caplog):
    """A row written before the allowlist existed (or by hand) is skipped when the routing table is
    built: the value of DATABASE_URL never leaves for an `api_base` someone else chose."""
    from models_registry.router import registry_model_list

    create_alias(alias_name="chat-safe", deployments=[{"litellm_model": "openai/gpt-4o-mini"}])
    alias = create_alias(alias_name="chat-leak", deployments=[{"litellm_model": "openai/gpt-4o-mini"}])
    Deployment.objects.filter(alias=alias).update(api_key="os.environ/DATABASE_URL", api_base="https://evil.test/v1")

    model_list, infos = registry_model_list()

    assert [entry["model_name"] for entry in model_list] == ["chat-safe"]
    assert {info.alias for info in infos.values()} == {"chat-safe"}
    assert "api_key DATABASE_URL is not a provider key variable" in caplog.text


def test_put_updates_deployments_in_place_and_never_rewrites_call_history(admin, registry):
    """Found in a code read: PUT deleted and recreated every deployment, so past calls lost theirs."""
    from jobs import services as job_services
    from jobs.models import LLMCall
    from jobs.services import CallRecord

    other = {"litellm_model": "openai/gpt-4o", "api_base": "https://other.example/v1"}
    assert admin.put("/api/model-aliases/chat-fast", {"deployments": [PRIMARY, other]}).status_code == 200
    primary, second = ModelAlias.objects.get(name="chat-fast").deployments.order_by("position")
    team = make_tenant("acme-corp", "acme", access_groups=["standard"]).team
    job = job_services.create_job(team=team, job_type="history")
    for deployment in (primary, second):
        record = CallRecord(model_alias="chat-fast", status="success", deployment_id=deployment.id, prompt_tokens=1)
        job_services.record_call(team=team, job_id=job.id, record=record)
    before = version()

    response = admin.put(
        "/api/model-aliases/chat-fast",
        {"deployments": [FALLBACK, {**PRIMARY, "weight": 7, "timeout_s": 5}]},  # `other` is dropped
    )

    assert response.status_code == 200, response.content
    assert [(d["litellm_model"], d["weight"]) for d in response.json()["deployments"]] == [
        ("openai/gpt-4o-mini", 7),  # priority 0
        ("anthropic/claude-3-5-haiku-20241022", 1),
    ]
    kept = Deployment.objects.get(pk=primary.pk)  # the same row, updated in place
    assert (kept.position, kept.weight, kept.timeout_s, kept.retired_at) == (1, 7, 5.0, None)
    retired = Deployment.all_objects.get(pk=second.pk)
    assert retired.retired_at is not None
    assert not Deployment.objects.filter(pk=second.pk).exists()  # gone from the registry
    assert sorted(LLMCall.objects.values_list("deployment_id", flat=True)) == sorted([primary.id, second.id])
    assert version() > before


def test_an_alias_with_call_history_cannot_be_deleted(db, registry):
    from django.db.models import ProtectedError

    from jobs import services as job_services
    from jobs.services import CallRecord

    team = make_tenant("acme-corp", "acme").team
    deployment = Deployment.objects.get(alias_id="chat-fast")
    job = job_services.create_job(team=team, job_type="history")
    job_services.record_call(
        team=team,
        job_id=job.id,
        record=CallRecord(model_alias="chat-fast", status="success", deployment_id=deployment.id),
    )

    with pytest.raises(ProtectedError):
        ModelAlias.objects.get(name="chat-fast").delete()


def test_create_model_alias_command(standard, capsys):
    call_command(
        "create_model_alias",
        "chat-cli",
        "--deployment", "openai/gpt-4o-mini,api_key=os.environ/OPENAI_API_KEY",
        "--deployment", "openai/local,api_base=http://127.0.0.1:8100/v1,priority=1,weight=2,timeout_s=2.5",
        "--display-name", "From the CLI",
        "--access-group", "standard",
    )  # fmt: skip

    assert "created model alias chat-cli with 2 deployment(s)" in capsys.readouterr().out
    alias = ModelAlias.objects.get(name="chat-cli")
    assert alias.display_name == "From the CLI"
    assert list(
        alias.deployments.order_by("position").values_list("litellm_model", "api_key", "api_base", "priority", "weight")
    ) == [
        ("openai/gpt-4o-mini", "os.environ/OPENAI_API_KEY", "", 0, 1),
        ("openai/local", "", "http://127.0.0.1:8100/v1", 1, 2),
    ]
    assert list(alias.access_groups.values_list("name", flat=True)) == ["standard"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["chat-x", "--deployment", "openai/gpt-4o-mini,api_key=sk-live-secret"], "api_key"),
        (["chat-x", "--deployment", "openai/gpt-4o-mini,api_key=os.environ/DATABASE_URL"], "not a provider key"),
        (["chat-x", "--deployment", "openai/gpt-4o-mini,timeout_s=soon"], "timeout_s must be a number"),
        (["chat-x", "--deployment", "openai/gpt-4o-mini,bogus"], "bogus"),
        (["chat-x", "--deployment", "openai/gpt-4o-mini", "--access-group", "ghost"], "ghost"),
        (["Chat X", "--deployment", "openai/gpt-4o-mini"], "alias_name"),
        (["chat-dup", "--deployment", "openai/gpt-4o-mini"], "already exists"),
    ],
)
def test_create_model_alias_command_errors(standard, args, message):
    create_alias(alias_name="chat-dup", deployments=[{"litellm_model": "openai/gpt-4o"}])

    with pytest.raises(CommandError, match=message):
        call_command("create_model_alias", *args)

    assert list(ModelAlias.objects.values_list("name", flat=True)) == ["chat-dup"]


def test_create_access_group_command(registry, capsys):
    call_command(
        "create_access_group", "cli-group", "--alias", "chat-fast", "--alias", "chat-premium", "--display-name", "CLI"
    )

    assert "created access group cli-group with 2 alias(es)" in capsys.readouterr().out
    group = AccessGroup.objects.get(name="cli-group")
    assert group.display_name == "CLI"
    assert sorted(group.aliases.values_list("name", flat=True)) == ["chat-fast", "chat-premium"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["standard"], "already exists"),
        (["new-group", "--alias", "ghost"], "ghost"),
        (["Bad Group"], "invalid group name"),
    ],
)
def test_create_access_group_command_errors(registry, args, message):
    with pytest.raises(CommandError, match=message):
        call_command("create_access_group", *args)

    assert sorted(AccessGroup.objects.values_list("name", flat=True)) == ["premium", "standard"]
