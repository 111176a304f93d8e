"""Teams (SPEC §5.3): create, read, update (PUT/PATCH), suspend/resume."""

from decimal import Decimal

import pytest

from billing.models import CreditAccount, LedgerEntry
from models_registry.models import AccessGroup, ModelAlias
from tenants.models import ApiKey, Team, TeamStatus, hash_key

TEAM_FIELDS = {
    "team_id",
    "organization_id",
    "team_alias",
    "status",
    "access_groups",
    "allowed_models",
    "default_model",
    "budget_mode",
    "credits_per_job",
    "credits_per_dollar",
    "tokens_per_credit",
    "min_reservation",
    "rpm_limit",
    "tpm_limit",
    "max_parallel_requests",
    "low_balance_threshold",
    "store_prompts",
    "expose_models",
    "charge_failed_jobs",
    "metadata",
    "credits_remaining",
    "uncharged_cost_usd",
    "keys",
    "created_at",
    "updated_at",
}
ADMIN_ONLY_FIELDS = {"markup_percent", "uncharged_provider_cost_usd"}
KEY_FIELDS = {"key_id", "name", "prefix", "created_at", "last_used_at", "expires_at", "revoked_at"}


@pytest.fixture
def registry(db):
    fast = ModelAlias.objects.create(name="chat-fast")
    old = ModelAlias.objects.create(name="chat-old", status="inactive")
    smart = ModelAlias.objects.create(name="chat-smart")
    hidden = ModelAlias.objects.create(name="chat-hidden")
    basic = AccessGroup.objects.create(name="basic")
    basic.aliases.set([fast, old])
    premium = AccessGroup.objects.create(name="premium")
    premium.aliases.set([smart, fast])
    retired = AccessGroup.objects.create(name="retired", status="inactive")
    retired.aliases.set([hidden])
    return {"basic": basic, "premium": premium, "retired": retired}


def _team_count_and_keys() -> tuple[int, int, int]:
    return Team.objects.count(), ApiKey.objects.count(), LedgerEntry.objects.count()


# --- create -------------------------------------------------------------------------------------


def test_create_team_full(admin, acme, registry):
    body = {
        "team_id": "acme-labs",
        "organization_id": "acme",
        "team_alias": "Acme Labs",
        "access_groups": ["basic", "retired"],
        "default_model": "chat-fast",
        "credits_allocated": "250.5",
        "budget_mode": "usd",
        "credits_per_job": 2.5,
        "credits_per_dollar": 20,
        "tokens_per_credit": 5000,
        "min_reservation": "0.0001",
        "markup_percent": 15.25,
        "rpm_limit": 60,
        "tpm_limit": 100000,
        "max_parallel_requests": 4,
        "low_balance_threshold": 10,
        "store_prompts": True,
        "expose_models": True,
        "charge_failed_jobs": True,
        "metadata": {"plan": "pro", "seats": 3},
    }
    response = admin.post("/api/teams/create", body)
    assert response.status_code == 201, response.content
    out = response.json()
    assert set(out) == TEAM_FIELDS | ADMIN_ONLY_FIELDS | {"virtual_key"}
    assert out["team_id"] == "acme-labs"
    assert out["organization_id"] == "acme"
    assert out["team_alias"] == "Acme Labs"
    assert out["status"] == "active"
    assert out["access_groups"] == ["basic", "retired"]
    # Only active aliases of active groups.
    assert out["allowed_models"] == ["chat-fast"]
    assert out["default_model"] == "chat-fast"
    assert out["budget_mode"] == "usd"
    assert out["credits_per_job"] == 2.5
    assert out["credits_per_dollar"] == 20
    assert out["tokens_per_credit"] == 5000
    assert out["min_reservation"] == 0.0001
    assert out["markup_percent"] == 15.25
    assert (out["rpm_limit"], out["tpm_limit"], out["max_parallel_requests"]) == (60, 100000, 4)
    assert out["low_balance_threshold"] == 10
    assert out["store_prompts"] is True and out["expose_models"] is True
    assert out["charge_failed_jobs"] is True
    assert out["metadata"] == {"plan": "pro", "seats": 3}
    assert out["credits_remaining"] == 250.5
    assert (out["uncharged_cost_usd"], out["uncharged_provider_cost_usd"]) == (0, 0)
    assert len(out["keys"]) == 1 and set(out["keys"][0]) == KEY_FIELDS
    assert out["virtual_key"].startswith("sk-")
    assert out["keys"][0]["prefix"] == out["virtual_key"][:11]

    team = Team.objects.get(id="acme-labs")
    assert team.organization_id == "acme"
    assert team.default_model_id == "chat-fast"
    assert sorted(team.access_groups.values_list("name", flat=True)) == ["basic", "retired"]
    assert team.budget_mode == "usd"
    assert team.credits_per_job == Decimal("2.5")
    assert team.min_reservation == Decimal("0.0001")
    assert team.markup_percent == Decimal("15.25")
    assert team.low_balance_threshold == Decimal("10")
    assert (team.rpm_limit, team.tpm_limit, team.max_parallel_requests) == (60, 100000, 4)
    assert team.charge_failed_jobs is True
    assert team.metadata == {"plan": "pro", "seats": 3}
    key = ApiKey.objects.get(team=team)
    assert key.key_hash == hash_key(out["virtual_key"])
    assert str(key.id) == out["keys"][0]["key_id"]
    entry = LedgerEntry.objects.get(team=team)
    assert (entry.kind, entry.amount_units, entry.balance_after_units) == ("grant", 2_505_000, 2_505_000)
    assert entry.actor == f"api-key:{ApiKey.objects.get(key_hash=hash_key(admin.key)).prefix}"
    assert CreditAccount.objects.get(team=team).balance_units == 2_505_000

    # The key shown once works for its own team.
    mine = admin.client.get("/api/teams/acme-labs", HTTP_AUTHORIZATION=f"Bearer {out['virtual_key']}")
    assert mine.status_code == 200


def test_create_team_minimal_uses_documented_defaults(admin, acme):
    response = admin.post("/api/teams/create", {"team_id": "acme-min", "organization_id": "acme"})
    assert response.status_code == 201
    out = response.json()
    assert out["team_alias"] == ""
    assert out["access_groups"] == [] and out["allowed_models"] == []
    assert out["default_model"] is None
    assert out["budget_mode"] == "job"
    assert out["credits_per_job"] == 1
    assert out["credits_per_dollar"] == 10
    assert out["tokens_per_credit"] == 10000
    assert out["min_reservation"] == 1
    assert out["markup_percent"] == 0
    assert out["rpm_limit"] is None and out["tpm_limit"] is None and out["max_parallel_requests"] is None
    assert out["low_balance_threshold"] is None
    assert out["store_prompts"] is False and out["expose_models"] is False
    assert out["charge_failed_jobs"] is False
    assert Team.objects.get(id="acme-min").charge_failed_jobs is False
    assert out["metadata"] == {}
    assert out["credits_remaining"] == 0
    assert not LedgerEntry.objects.filter(team_id="acme-min").exists()
    assert CreditAccount.objects.get(team_id="acme-min").balance_units == 0


@pytest.mark.parametrize(
    ("field", "value", "type_"),
    [
        ("team_id", None, "type_error.none.not_allowed"),
        ("team_id", 7, "type_error"),
        ("team_id", "Acme-Labs", "type_error"),
        ("team_id", "acme labs", "type_error"),
        ("organization_id", ["acme"], "type_error"),
        ("team_alias", 12, "type_error"),
        ("team_alias", "a" * 201, "value_error.any_str.max_length"),
        ("access_groups", "basic", "type_error.list"),
        ("default_model", 3, "type_error"),
        ("budget_mode", "credits", "value_error.enum"),
        ("credits_allocated", -1, "value_error.number.not_ge"),
        ("credits_allocated", "abc", "type_error"),
        ("credits_allocated", True, "type_error"),
        ("credits_allocated", "1.00001", "value_error.decimal.max_places"),
        ("credits_allocated", 0.00001, "value_error.decimal.max_places"),
        ("credits_allocated", 1_000_000_001, "value_error.number.not_le"),
        ("credits_per_job", -0.5, "value_error.number.not_ge"),
        ("credits_per_job", 1.23456, "value_error.decimal.max_places"),
        ("credits_per_dollar", "10.00001", "value_error.decimal.max_places"),
        ("min_reservation", {"v": 1}, "type_error"),
        ("markup_percent", 1.23456, "value_error.decimal.max_places"),
        ("markup_percent", -1, "value_error.number.not_ge"),
        ("low_balance_threshold", "0.00005", "value_error.decimal.max_places"),
        ("tokens_per_credit", 0, "value_error.number.not_ge"),
        ("tokens_per_credit", "1000", "type_error"),
        ("rpm_limit", "60", "type_error"),
        ("rpm_limit", 1.5, "type_error"),
        ("rpm_limit", 0, "value_error.number.not_ge"),
        ("tpm_limit", True, "type_error"),
        ("max_parallel_requests", -3, "value_error.number.not_ge"),
        ("store_prompts", "true", "type_error"),
        ("expose_models", 1, "type_error"),
        ("charge_failed_jobs", "true", "type_error"),
        ("charge_failed_jobs", 1, "type_error"),
        ("charge_failed_jobs", None, "type_error.none.not_allowed"),
        ("metadata", [1, 2], "type_error.dict"),
        ("metadata", {"blob": "x" * (16 * 1024)}, "value_error.too_large"),
        ("rpm_limt", 60, "extra_forbidden"),
        ("credits", 10, "extra_forbidden"),
        ("status", "suspended", "extra_forbidden"),
    ],
)
def test_create_team_validation(admin, acme, field, value, type_):
    before = _team_count_and_keys()
    body = {"team_id": "acme-new", "organization_id": "acme", field: value}
    response = admin.post("/api/teams/create", body)
    assert response.status_code == 422, response.content
    errors = response.json()["detail"]
    assert (["body", field], type_) in [(e["loc"], e["type"]) for e in errors]
    assert all(e["loc"] == ["body", field] and e["msg"] for e in errors)
    assert _team_count_and_keys() == before


@pytest.mark.parametrize("missing", ["team_id", "organization_id"])
def test_create_team_missing_required_field(admin, acme, missing):
    body = {"team_id": "acme-new", "organization_id": "acme"}
    del body[missing]
    response = admin.post("/api/teams/create", body)
    assert response.status_code == 422
    assert response.json() == {
        "detail": [{"loc": ["body", missing], "msg": "field required", "type": "value_error.missing"}]
    }


@pytest.mark.parametrize(
    ("extra", "detail", "code"),
    [
        ({"organization_id": "nope"}, "Organization 'nope' not found", "organization_not_found"),
        ({"access_groups": ["basic", "nope"]}, "Access group 'nope' not found", "access_group_not_found"),
        ({"default_model": "nope"}, "Model alias 'nope' not found", "model_not_found"),
    ],
)
def test_create_team_with_unknown_reference_is_404_and_writes_nothing(admin, acme, registry, extra, detail, code):
    before = _team_count_and_keys()
    body = {"team_id": "acme-new", "organization_id": "acme", "credits_allocated": 5, **extra}
    response = admin.post("/api/teams/create", body)
    assert response.status_code == 404
    assert response.json() == {"detail": detail, "code": code}
    assert _team_count_and_keys() == before
    assert not Team.objects.filter(id="acme-new").exists()


def test_duplicate_team_is_409_and_leaves_the_original_alone(admin, acme, globex):
    before = _team_count_and_keys()
    response = admin.post(
        "/api/teams/create", {"team_id": "acme-corp", "organization_id": "globex", "credits_allocated": 50}
    )
    assert response.status_code == 409
    assert response.json() == {"detail": "Team 'acme-corp' already exists", "code": "team_exists"}
    assert _team_count_and_keys() == before
    team = Team.objects.get(id="acme-corp")
    assert team.organization_id == "acme"
    assert CreditAccount.objects.get(team=team).balance_units == 100 * 10_000


def test_team_ids_are_case_sensitive_slugs(admin, acme):
    # Upper case is not a slug: it cannot collide with an existing lower-case team.
    response = admin.post("/api/teams/create", {"team_id": "ACME-CORP", "organization_id": "acme"})
    assert response.status_code == 422
    assert Team.objects.count() == 1


# --- read -----------------------------------------------------------------------------------------


def test_get_team_with_own_key_hides_markup(acme):
    Team.objects.filter(id="acme-corp").update(markup_percent=Decimal("30"))
    response = acme.api.get("/api/teams/acme-corp")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == TEAM_FIELDS
    assert "markup_percent" not in body and "uncharged_provider_cost_usd" not in body
    assert body["team_id"] == "acme-corp"
    assert body["credits_remaining"] == 100
    assert [set(k) for k in body["keys"]] == [KEY_FIELDS]
    # Neither the raw key nor its hash is ever shown again.
    assert acme.key not in response.content.decode()
    assert hash_key(acme.key) not in response.content.decode()


def test_get_team_with_admin_key_shows_markup(admin, acme):
    Team.objects.filter(id="acme-corp").update(markup_percent=Decimal("30.5"))
    body = admin.get("/api/teams/acme-corp").json()
    assert body["markup_percent"] == 30.5
    assert set(body) == TEAM_FIELDS | ADMIN_ONLY_FIELDS


def test_get_team_lists_keys_including_revoked(admin, acme):
    from tenants import services

    extra, _ = services.issue_key(team=acme.team, name="ci")
    services.revoke_key(key=extra)
    keys = admin.get("/api/teams/acme-corp").json()["keys"]
    assert [k["name"] for k in keys] == ["default", "ci"]
    assert keys[0]["revoked_at"] is None
    assert keys[1]["revoked_at"].endswith("Z")


def test_get_unknown_team_with_admin_key_is_404(admin):
    response = admin.get("/api/teams/nope")
    assert response.status_code == 404
    assert response.json() == {"detail": "Team 'nope' not found", "code": "team_not_found"}


def test_get_team_shows_what_its_uncharged_failed_jobs_cost(admin, acme, globex):
    """Σ cost of failed/cancelled jobs that went uncharged (SPEC §6); provider cost to admin keys only."""
    from jobs import services as job_services
    from jobs.services import CallRecord

    def finished_job(tenant, status: str, cost: int, provider_cost: int, call_status: str = "success") -> None:
        job = job_services.create_job(team=tenant.team, job_type="t")
        record = CallRecord(
            model_alias="chat-fast", status=call_status, prompt_tokens=10, completion_tokens=5,
            cost_nanos=cost, provider_cost_nanos=provider_cost,
        )  # fmt: skip
        job_services.record_call(team=tenant.team, job_id=job.id, record=record)
        if status != "in_progress":
            job_services.complete_job(team=tenant.team, job_id=job.id, status=status)

    finished_job(acme, "failed", 1_000, 800)
    finished_job(acme, "cancelled", 20, 10, call_status="error")
    finished_job(acme, "completed", 50_000, 40_000)  # charged
    finished_job(acme, "in_progress", 300_000, 200_000)  # not finished
    finished_job(globex, "failed", 7_000_000, 6_000_000)  # another team's
    Team.objects.filter(id="acme-corp").update(charge_failed_jobs=True)
    acme.team.refresh_from_db()
    finished_job(acme, "failed", 4_000, 3_000)  # charged under the flag
    finished_job(acme, "cancelled", 500, 400, call_status="error")  # nothing billable: uncharged all the same

    own = acme.api.get("/api/teams/acme-corp").json()
    assert own["uncharged_cost_usd"] == 0.00000152
    assert "uncharged_provider_cost_usd" not in own
    staff = admin.get("/api/teams/acme-corp").json()
    assert (staff["uncharged_cost_usd"], staff["uncharged_provider_cost_usd"]) == (0.00000152, 0.00000121)
    other = admin.get("/api/teams/globex-eng").json()
    assert (other["uncharged_cost_usd"], other["uncharged_provider_cost_usd"]) == (0.007, 0.006)


def test_get_another_team_with_team_key_is_403(acme, globex):
    response = acme.api.get("/api/teams/globex-eng")
    assert response.status_code == 403
    assert response.json() == {"detail": "API key does not belong to team 'globex-eng'", "code": "team_mismatch"}


# --- update ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["put", "patch"])
def test_update_is_partial(admin, acme, registry, method):
    Team.objects.filter(id="acme-corp").update(team_alias="Before", tpm_limit=999, metadata={"keep": True})
    before = Team.objects.get(id="acme-corp")
    body = {
        "rpm_limit": 120,
        "markup_percent": "7.5",
        "access_groups": ["premium"],
        "default_model": "chat-smart",
        "store_prompts": True,
        "charge_failed_jobs": True,
    }
    response = getattr(admin, method)("/api/teams/acme-corp", body)
    assert response.status_code == 200, response.content
    out = response.json()
    assert out["rpm_limit"] == 120
    assert out["markup_percent"] == 7.5
    assert out["access_groups"] == ["premium"]
    assert out["allowed_models"] == ["chat-fast", "chat-smart"]
    assert out["default_model"] == "chat-smart"
    assert out["store_prompts"] is True
    assert out["charge_failed_jobs"] is True
    # Untouched fields keep their values.
    assert out["team_alias"] == "Before"
    assert out["tpm_limit"] == 999
    assert out["metadata"] == {"keep": True}
    assert out["credits_remaining"] == 100

    team = Team.objects.get(id="acme-corp")
    assert team.rpm_limit == 120
    assert team.markup_percent == Decimal("7.5")
    assert list(team.access_groups.values_list("name", flat=True)) == ["premium"]
    assert team.default_model_id == "chat-smart"
    assert team.store_prompts is True
    assert team.charge_failed_jobs is True
    assert (team.team_alias, team.tpm_limit, team.metadata) == ("Before", 999, {"keep": True})
    assert team.updated_at > before.updated_at
    assert team.created_at == before.created_at


def test_update_can_clear_nullable_fields(admin, acme, registry):
    Team.objects.filter(id="acme-corp").update(
        rpm_limit=5, low_balance_threshold=Decimal("3"), default_model_id="chat-fast"
    )
    acme.team.access_groups.set([registry["basic"]])
    response = admin.put(
        "/api/teams/acme-corp",
        {"rpm_limit": None, "low_balance_threshold": None, "default_model": None, "access_groups": []},
    )
    assert response.status_code == 200
    out = response.json()
    assert out["rpm_limit"] is None and out["low_balance_threshold"] is None and out["default_model"] is None
    assert out["access_groups"] == [] and out["allowed_models"] == []
    team = Team.objects.get(id="acme-corp")
    assert (team.rpm_limit, team.low_balance_threshold, team.default_model_id) == (None, None, None)
    assert team.access_groups.count() == 0


def test_update_with_empty_body_changes_nothing(admin, acme):
    before = Team.objects.values().get(id="acme-corp")
    response = admin.put("/api/teams/acme-corp", {})
    assert response.status_code == 200
    after = Team.objects.values().get(id="acme-corp")
    after.pop("updated_at"), before.pop("updated_at")
    assert after == before


@pytest.mark.parametrize(
    ("field", "value", "type_"),
    [
        ("team_id", "renamed", "extra_forbidden"),
        ("organization_id", "globex", "extra_forbidden"),
        ("credits_allocated", 1000, "extra_forbidden"),
        ("rpm_limt", 10, "extra_forbidden"),
        ("status", "suspended", "extra_forbidden"),
        ("rpm_limit", "10", "type_error"),
        ("credits_per_job", "0.00001", "value_error.decimal.max_places"),
        ("markup_percent", 0.123456, "value_error.decimal.max_places"),
        ("metadata", {"blob": "y" * 17_000}, "value_error.too_large"),
        ("budget_mode", "JOB", "value_error.enum"),
        ("charge_failed_jobs", "yes", "type_error"),
        ("charge_failed_jobs", 0, "type_error"),
    ],
)
@pytest.mark.parametrize("method", ["put", "patch"])
def test_update_validation_writes_nothing(admin, acme, method, field, value, type_):
    before = Team.objects.values().get(id="acme-corp")
    response = getattr(admin, method)("/api/teams/acme-corp", {"team_alias": "Changed", field: value})
    assert response.status_code == 422
    assert response.json()["detail"][0] == {
        "loc": ["body", field],
        "msg": response.json()["detail"][0]["msg"],
        "type": type_,
    }
    assert Team.objects.values().get(id="acme-corp") == before
    assert CreditAccount.objects.get(team_id="acme-corp").balance_units == 100 * 10_000


@pytest.mark.parametrize(
    ("extra", "detail", "code"),
    [
        ({"access_groups": ["nope"]}, "Access group 'nope' not found", "access_group_not_found"),
        ({"default_model": "nope"}, "Model alias 'nope' not found", "model_not_found"),
    ],
)
def test_update_with_unknown_reference_is_404_and_writes_nothing(admin, acme, registry, extra, detail, code):
    before = Team.objects.values().get(id="acme-corp")
    response = admin.put("/api/teams/acme-corp", {"rpm_limit": 7, **extra})
    assert response.status_code == 404
    assert response.json() == {"detail": detail, "code": code}
    assert Team.objects.values().get(id="acme-corp") == before


def test_update_unknown_team_is_404(admin):
    response = admin.patch("/api/teams/nope", {"rpm_limit": 1})
    assert response.status_code == 404
    assert response.json() == {"detail": "Team 'nope' not found", "code": "team_not_found"}


def test_update_malformed_json_is_400(admin, acme):
    response = admin.client.put(
        "/api/teams/acme-corp",
        "{rpm_limit: 1}",
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {admin.key}",
    )
    assert response.status_code == 400
    assert Team.objects.get(id="acme-corp").rpm_limit is None


# --- suspend / resume -----------------------------------------------------------------------------


def test_suspend_and_resume_are_idempotent(admin, acme):
    first = admin.post("/api/teams/acme-corp/suspend")
    assert first.status_code == 200
    assert first.json() == {"team_id": "acme-corp", "status": "suspended"}
    suspended_at = Team.objects.get(id="acme-corp").updated_at

    again = admin.post("/api/teams/acme-corp/suspend")
    assert again.status_code == 200
    assert again.json() == {"team_id": "acme-corp", "status": "suspended"}
    team = Team.objects.get(id="acme-corp")
    assert team.status == TeamStatus.SUSPENDED
    assert team.updated_at == suspended_at  # the second call wrote nothing

    assert admin.get("/api/teams/acme-corp").json()["status"] == "suspended"

    resumed = admin.post("/api/teams/acme-corp/resume")
    assert resumed.json() == {"team_id": "acme-corp", "status": "active"}
    assert admin.post("/api/v1/teams/acme-corp/resume").json() == {"team_id": "acme-corp", "status": "active"}
    assert Team.objects.get(id="acme-corp").status == TeamStatus.ACTIVE


def test_suspending_one_team_leaves_others_active(admin, acme, globex):
    admin.post("/api/teams/globex-eng/suspend")
    assert dict(Team.objects.values_list("id", "status")) == {"acme-corp": "active", "globex-eng": "suspended"}
    # The suspended team's key can still read.
    assert globex.api.get("/api/teams/globex-eng").json()["status"] == "suspended"


@pytest.mark.parametrize("action", ["suspend", "resume"])
def test_suspend_resume_unknown_team_is_404(admin, action):
    response = admin.post(f"/api/teams/nope/{action}")
    assert response.status_code == 404
    assert response.json() == {"detail": "Team 'nope' not found", "code": "team_not_found"}


@pytest.mark.parametrize("action", ["suspend", "resume"])
def test_suspend_resume_need_a_key(anon, acme, action):
    response = anon.post(f"/api/teams/acme-corp/{action}")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"
    assert Team.objects.get(id="acme-corp").status == TeamStatus.ACTIVE


def test_revoked_key_cannot_read_team(acme):
    from tenants import services

    services.revoke_key(key=ApiKey.objects.get(key_hash=hash_key(acme.key)))
    response = acme.api.get("/api/teams/acme-corp")
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"
