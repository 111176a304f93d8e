"""/api/jobs/create, /api/jobs, /api/jobs/{id}, /complete, /costs (SPEC §5.1, §3, §4) and job expiry.

No LLM call is made here: calls are written with jobs.services.record_call (the same service the
LLM-call path uses), so these tests run in the ordinary test transaction. Charging per budget mode
is in test_job_charging.py; the full create → call → complete flow in test_llm_calls.py.
"""

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import timezone

from billing.models import CreditAccount, LedgerEntry, Reservation
from jobs import services
from jobs.models import Job
from jobs.services import CallRecord
from tenants import services as tenant_services
from tenants.models import ApiKey, TeamStatus
from tests.conftest import make_tenant

ONE = 10_000  # credit units per credit
MISMATCH = {"detail": "API key does not belong to team 'globex-eng'", "code": "team_mismatch"}
JOB_NOT_FOUND = {"detail": "Job not found", "code": "job_not_found"}
CREATED_FIELDS = {"job_id", "team_id", "job_type", "status", "created_at", "metadata", "user_id", "external_id"}
JOB_FIELDS = CREATED_FIELDS | {
    "started_at", "completed_at", "error_message", "total_calls", "successful_calls", "failed_calls",
    "prompt_tokens", "completion_tokens", "total_tokens", "cost_usd", "credits_charged", "models_used",
}  # fmt: skip


def job_of(tenant, **fields) -> Job:
    return services.create_job(team=tenant.team, job_type=fields.pop("job_type", "analysis"), **fields)


def add_call(job: Job, *, status: str = "success", alias: str = "chat-fast", **fields):
    record = CallRecord(
        model_alias=alias,
        status=status,
        resolved_model=fields.pop("resolved_model", "openai/gpt-4o-mini"),
        prompt_tokens=fields.pop("prompt_tokens", 10),
        completion_tokens=fields.pop("completion_tokens", 5),
        provider_cost_nanos=fields.pop("provider_cost_nanos", 1_000),
        cost_nanos=fields.pop("cost_nanos", 1_250),
        latency_ms=fields.pop("latency_ms", 100),
        **fields,
    )
    return services.record_call(team=job.team, job_id=job.id, record=record)


# --- authentication (every endpoint) -------------------------------------------------------------

ENDPOINTS = [
    ("post", "/api/jobs/create"),
    ("get", "/api/jobs"),
    ("get", "/api/jobs/{id}"),
    ("post", "/api/jobs/{id}/complete"),
    ("get", "/api/jobs/{id}/costs"),
    ("post", "/api/jobs/{id}/llm-call"),
    ("post", "/api/jobs/{id}/llm-call-stream"),
]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_no_key_is_401(anon, acme, method, path):
    job = job_of(acme)

    response = getattr(anon, method)(path.format(id=job.id))

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"
    assert response.json() == {"detail": "Missing API key: send 'Authorization: Bearer sk-…'"}
    assert Job.objects.count() == 1


@pytest.mark.parametrize(("method", "path"), ENDPOINTS[:5])  # the LLM-call views: test_llm_calls.py
def test_revoked_key_is_401(acme, method, path):
    job = job_of(acme)
    tenant_services.revoke_key(key=ApiKey.objects.get(team=acme.team))

    response = getattr(acme.api, method)(path.format(id=job.id))

    assert response.status_code == 401
    assert response.json() == {"detail": "API key has been revoked"}
    job.refresh_from_db()
    assert job.status == "pending"


# --- create --------------------------------------------------------------------------------------


def test_create_job_reserves_credits(acme):
    body = {
        "team_id": "acme-corp",
        "job_type": "resume_parsing",
        "metadata": {"doc": 7},
        "user_id": "u-1",
        "external_id": "ext-9",
    }

    response = acme.api.post("/api/jobs/create", body)

    assert response.status_code == 201
    out = response.json()
    assert set(out) == CREATED_FIELDS
    assert (out["team_id"], out["job_type"], out["status"], out["metadata"]) == (
        "acme-corp",
        "resume_parsing",
        "pending",
        {"doc": 7},
    )
    assert (out["user_id"], out["external_id"]) == ("u-1", "ext-9")
    assert out["created_at"].endswith("Z")
    job = Job.objects.get(id=out["job_id"])
    assert (job.team_id, job.status, job.metadata, job.user_id) == ("acme-corp", "pending", {"doc": 7}, "u-1")
    reservation = Reservation.objects.get(job_id=job.id)
    assert (reservation.status, reservation.amount_units) == ("open", ONE)  # credits_per_job = 1
    account = CreditAccount.objects.get(team=acme.team)
    assert (account.balance_units, account.reserved_units, account.remaining_units) == (100 * ONE, ONE, 99 * ONE)
    balance = acme.api.get("/api/credits/balance").json()
    assert (balance["credits_reserved"], balance["credits_remaining"]) == (1, 99)


def test_team_key_may_omit_team_id(acme):
    response = acme.api.post("/api/jobs/create", {"job_type": "x"})

    assert response.status_code == 201
    assert Job.objects.get(id=response.json()["job_id"]).team_id == "acme-corp"


def test_admin_key_creates_for_the_named_team(admin, acme):
    response = admin.post("/api/jobs/create", {"team_id": "acme-corp", "job_type": "x"})

    assert response.status_code == 201
    assert Job.objects.get(id=response.json()["job_id"]).team_id == "acme-corp"


def test_admin_key_without_team_id_is_422(admin, acme):
    response = admin.post("/api/jobs/create", {"job_type": "x"})

    assert response.status_code == 422
    assert response.json() == {
        "detail": [{"loc": ["body", "team_id"], "msg": "field required", "type": "value_error.missing"}]
    }
    assert not Job.objects.exists()


def test_admin_key_with_unknown_team_is_404(admin, acme):
    response = admin.post("/api/jobs/create", {"team_id": "nobody", "job_type": "x"})

    assert response.status_code == 404
    assert not Job.objects.exists()


def test_team_key_naming_another_team_is_403(acme, globex):
    response = acme.api.post("/api/jobs/create", {"team_id": "globex-eng", "job_type": "x"})

    assert response.status_code == 403
    assert response.json() == MISMATCH
    assert not Job.objects.exists()
    assert not Reservation.objects.exists()


@pytest.mark.parametrize(
    ("config", "credits"),
    [
        ({}, 0),
        ({"credits_per_job": 5}, 4),
        ({"budget_mode": "tokens", "min_reservation": 2}, 1),
        ({"budget_mode": "usd"}, 0),
    ],
)
def test_insufficient_credits_refuses_the_job(db, config, credits):
    team = make_tenant("acme-corp", "acme", credits=credits, **config)

    response = team.api.post("/api/jobs/create", {"job_type": "x"})

    assert response.status_code == 403
    assert response.json() == {"detail": "Insufficient credits", "code": "insufficient_credits"}
    assert not Job.objects.exists()  # the job row is rolled back with the refused reservation
    assert not Reservation.objects.exists()
    assert CreditAccount.objects.get(team=team.team).reserved_units == 0


def test_balance_covering_exactly_one_job(db):
    team = make_tenant("acme-corp", "acme", credits=1)

    first = team.api.post("/api/jobs/create", {"job_type": "x"})
    second = team.api.post("/api/jobs/create", {"job_type": "x"})

    assert (first.status_code, second.status_code) == (201, 403)
    assert Job.objects.count() == 1


def test_suspended_team_cannot_create_jobs(acme):
    tenant_services.set_team_status(team=acme.team, status=TeamStatus.SUSPENDED)

    response = acme.api.post("/api/jobs/create", {"job_type": "x"})

    assert response.status_code == 403
    assert response.json() == {"detail": "Team is suspended", "code": "team_suspended"}
    assert not Job.objects.exists()
    assert CreditAccount.objects.get(team=acme.team).reserved_units == 0


BAD_CREATE_BODIES = [
    ({}, ["body", "job_type"]),
    ({"job_type": ""}, ["body", "job_type"]),
    ({"job_type": "x" * 101}, ["body", "job_type"]),
    ({"job_type": 5}, ["body", "job_type"]),
    ({"job_type": None}, ["body", "job_type"]),
    ({"job_type": "x", "metadata": ["a"]}, ["body", "metadata"]),
    ({"job_type": "x", "metadata": "text"}, ["body", "metadata"]),
    ({"job_type": "x", "metadata": {"blob": "x" * (16 * 1024)}}, ["body", "metadata"]),
    ({"job_type": "x", "user_id": 5}, ["body", "user_id"]),
    ({"job_type": "x", "external_id": "e" * 256}, ["body", "external_id"]),
    ({"job_type": "x", "team_id": "Not A Slug"}, ["body", "team_id"]),
]


@pytest.mark.parametrize(("body", "loc"), BAD_CREATE_BODIES)
def test_create_validation_is_422(acme, body, loc):
    response = acme.api.post("/api/jobs/create", body)

    assert response.status_code == 422, response.json()
    errors = response.json()["detail"]
    assert all(error["loc"][0] == "body" and {"loc", "msg", "type"} == set(error) for error in errors)
    assert loc in [error["loc"] for error in errors]
    assert not Job.objects.exists()


def test_metadata_just_under_16_kb_is_accepted(acme):
    metadata = {"blob": "x" * (16 * 1024 - 12)}  # {"blob":"…"} is exactly 16 384 bytes

    response = acme.api.post("/api/jobs/create", {"job_type": "x", "metadata": metadata})

    assert response.status_code == 201
    assert Job.objects.get().metadata == metadata


@pytest.mark.parametrize(
    ("raw", "content_type"),
    [
        ('{"job_type": ', "application/json"),
        ("job_type=x", "application/x-www-form-urlencoded"),
        ("job_type", "text/plain"),
    ],
)
def test_malformed_json_or_wrong_content_type_is_400(acme, raw, content_type):
    response = acme.api.post("/api/jobs/create", raw=raw, content_type=content_type)

    assert response.status_code == 400
    assert isinstance(response.json()["detail"], str)
    assert not Job.objects.exists()


# --- read ----------------------------------------------------------------------------------------


def test_get_job_shows_every_field(acme):
    job = job_of(acme, user_id="u-1")
    add_call(job, alias="chat-fast")
    add_call(
        job, alias="chat-big", status="error", prompt_tokens=0, completion_tokens=0, cost_nanos=0, provider_cost_nanos=0
    )

    response = acme.api.get(f"/api/jobs/{job.id}")

    assert response.status_code == 200
    out = response.json()
    assert set(out) == JOB_FIELDS
    assert (out["job_id"], out["status"], out["user_id"]) == (str(job.id), "in_progress", "u-1")
    assert (out["total_calls"], out["successful_calls"], out["failed_calls"]) == (2, 1, 1)
    assert (out["prompt_tokens"], out["completion_tokens"], out["total_tokens"]) == (10, 5, 15)
    assert (out["cost_usd"], out["credits_charged"]) == (0.00000125, 0)
    assert out["models_used"] == ["chat-big", "chat-fast"]
    assert out["started_at"].endswith("Z") and out["completed_at"] is None
    assert acme.api.get(f"/api/v1/jobs/{job.id}").json() == out  # same handler under /api/v1


@pytest.mark.parametrize("suffix", ["", "/costs"])
@pytest.mark.parametrize("job_id", ["not-a-uuid", "123", str(uuid.UUID(int=0)), "%20"])
def test_unknown_or_malformed_job_id_is_404(acme, job_id, suffix):
    response = acme.api.get(f"/api/jobs/{job_id}{suffix}")

    assert response.status_code == 404
    assert response.json() == JOB_NOT_FOUND


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [("get", "", None), ("get", "/costs", None), ("post", "/complete", {"status": "completed"})],
)
def test_another_teams_job_is_404(acme, globex, method, suffix, body):
    job = job_of(acme)
    add_call(job)

    call = getattr(globex.api, method)
    response = call(f"/api/jobs/{job.id}{suffix}", body) if body else call(f"/api/jobs/{job.id}{suffix}")

    assert response.status_code == 404
    assert response.json() == JOB_NOT_FOUND
    job.refresh_from_db()
    assert job.status == "in_progress"
    assert Reservation.objects.get(job_id=job.id).status == "open"
    assert not LedgerEntry.objects.filter(job_id=job.id).exists()


def test_admin_key_reads_any_teams_job(admin, acme):
    job = job_of(acme)

    assert admin.get(f"/api/jobs/{job.id}").json()["team_id"] == "acme-corp"


# --- list ----------------------------------------------------------------------------------------


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


@pytest.fixture
def listed(acme, globex):
    """Three acme jobs on known dates with known costs/tokens, and one globex job."""
    first = job_of(acme, job_type="parse", user_id="u1")
    second = job_of(acme, job_type="parse", user_id="u2")
    third = job_of(acme, job_type="summarise", user_id="u1")
    other = job_of(globex, job_type="parse", user_id="u1")
    rows = [
        (first, "2024-10-01T10:00:00", "completed", 300, 50),
        (second, "2024-10-15T10:00:00", "failed", 100, 70),
        (third, "2024-10-31T23:00:00", "completed", 200, 10),
        (other, "2024-10-20T10:00:00", "completed", 999, 999),
    ]
    for job, created, status, cost, tokens in rows:
        Job.objects.filter(pk=job.pk).update(
            created_at=_at(created), status=status, cost_nanos=cost, total_tokens=tokens,
            completed_at=_at(created) + timedelta(hours=1),
        )  # fmt: skip
    return {"first": str(first.id), "second": str(second.id), "third": str(third.id), "other": str(other.id)}


def ids(response) -> list[str]:
    assert response.status_code == 200, response.json()
    return [job["job_id"] for job in response.json()["results"]]


def test_list_defaults_to_newest_first_of_the_keys_team(acme, listed):
    response = acme.api.get("/api/jobs")

    assert ids(response) == [listed["third"], listed["second"], listed["first"]]
    assert (response.json()["count"], response.json()["next"], response.json()["previous"]) == (3, None, None)
    assert set(response.json()["results"][0]) == JOB_FIELDS


LIST_FILTERS = [
    ({"status": "completed"}, ["third", "first"]),
    ({"status": "failed"}, ["second"]),
    ({"job_type": "parse"}, ["second", "first"]),
    ({"user_id": "u1"}, ["third", "first"]),
    ({"start_date": "2024-10-10"}, ["third", "second"]),
    ({"end_date": "2024-10-31"}, ["third", "second", "first"]),  # a date end_date is inclusive
    ({"end_date": "2024-10-30"}, ["second", "first"]),
    ({"start_date": "2024-10-01T10:00:00Z", "end_date": "2024-10-15T10:00:00Z"}, ["second", "first"]),
    ({"sort_by": "cost_usd", "order": "asc"}, ["second", "third", "first"]),
    ({"sort_by": "total_tokens", "order": "desc"}, ["second", "first", "third"]),
    ({"sort_by": "created_at", "order": "asc"}, ["first", "second", "third"]),
    ({"sort_by": "completed_at", "order": "desc"}, ["third", "second", "first"]),
    ({"status": "completed", "job_type": "parse", "user_id": "u1"}, ["first"]),
]


@pytest.mark.parametrize(("params", "expected"), LIST_FILTERS)
def test_list_filters_and_sorting(acme, listed, params, expected):
    response = acme.api.get("/api/jobs", params)

    assert ids(response) == [listed[name] for name in expected]
    assert response.json()["count"] == len(expected)


def test_list_pagination(acme, listed):
    page1 = acme.api.get("/api/jobs", {"limit": 2})
    page2 = acme.api.get("/api/jobs", {"limit": 2, "offset": 2})

    assert ids(page1) == [listed["third"], listed["second"]]
    assert page1.json()["count"] == 3
    assert "offset=2" in page1.json()["next"] and page1.json()["previous"] is None
    assert ids(page2) == [listed["first"]]
    assert page2.json()["next"] is None and page2.json()["previous"] is not None
    assert ids(acme.api.get("/api/jobs", {"limit": 5000})) == ids(acme.api.get("/api/jobs"))  # clamped, not refused


def test_admin_lists_every_team_and_filters_by_team(admin, listed):
    assert sorted(ids(admin.get("/api/jobs"))) == sorted(listed.values())
    assert ids(admin.get("/api/jobs", {"team_id": "globex-eng"})) == [listed["other"]]
    assert admin.get("/api/jobs", {"team_id": "nobody"}).status_code == 404


def test_team_key_listing_another_team_is_403(acme, listed):
    response = acme.api.get("/api/jobs", {"team_id": "globex-eng"})

    assert response.status_code == 403
    assert response.json() == MISMATCH


BAD_LIST_QUERIES = [
    ({"status": "done"}, "status"),
    ({"sort_by": "job_type"}, "sort_by"),
    ({"order": "up"}, "order"),
    ({"limit": "-1"}, "limit"),
    ({"limit": "ten"}, "limit"),
    ({"offset": "-5"}, "offset"),
    ({"start_date": "yesterday"}, "start_date"),
    ({"end_date": "2024-13-45"}, "end_date"),
    ({"start_date": "2024-10-10", "end_date": "2024-10-01"}, "end_date"),
    ({"team_id": "Not A Slug"}, "team_id"),
]


@pytest.mark.parametrize(("params", "field"), BAD_LIST_QUERIES)
def test_list_bad_filters_are_422(acme, listed, params, field):
    response = acme.api.get("/api/jobs", params)

    assert response.status_code == 422, response.json()
    assert ["query", field] in [error["loc"] for error in response.json()["detail"]]


# --- complete (charging itself: test_job_charging.py) --------------------------------------------


def test_complete_failed_merges_metadata_and_releases_the_hold(acme):
    job = job_of(acme, metadata={"a": 1, "b": 1})
    add_call(job)

    response = acme.api.post(
        f"/api/jobs/{job.id}/complete",
        {"status": "failed", "metadata": {"b": 2, "c": 3}, "error_message": "parser crashed"},
    )

    assert response.status_code == 200
    out = response.json()
    assert set(out) == {"job_id", "status", "completed_at", "costs", "credits_charged", "credits_remaining", "calls"}
    assert (out["status"], out["credits_charged"], out["credits_remaining"]) == ("failed", 0, 100)
    assert out["completed_at"].endswith("Z")
    job.refresh_from_db()
    assert (job.status, job.metadata, job.error_message) == ("failed", {"a": 1, "b": 2, "c": 3}, "parser crashed")
    assert Reservation.objects.get(job_id=job.id).status == "released"
    assert CreditAccount.objects.get(team=acme.team).reserved_units == 0
    assert not LedgerEntry.objects.filter(job_id=job.id).exists()
    assert acme.api.get(f"/api/jobs/{job.id}").json()["error_message"] == "parser crashed"


@pytest.mark.parametrize(
    ("body", "loc"),
    [({}, ["body", "status"]), ({"status": "done"}, ["body", "status"]), ({"status": "pending"}, ["body", "status"]),
     ({"status": "completed", "metadata": [1]}, ["body", "metadata"])],
)  # fmt: skip
def test_complete_validation_is_422(acme, body, loc):
    job = job_of(acme)

    response = acme.api.post(f"/api/jobs/{job.id}/complete", body)

    assert response.status_code == 422
    assert loc in [error["loc"] for error in response.json()["detail"]]
    job.refresh_from_db()
    assert job.status == "pending"


def test_suspended_team_can_still_complete_in_flight_jobs(acme):
    job = job_of(acme)
    add_call(job)
    tenant_services.set_team_status(team=acme.team, status=TeamStatus.SUSPENDED)

    response = acme.api.post(f"/api/jobs/{job.id}/complete", {"status": "completed"})

    assert response.status_code == 200
    assert response.json()["credits_charged"] == 1
    assert LedgerEntry.objects.get(job_id=job.id).amount_units == -ONE


# --- costs ---------------------------------------------------------------------------------------

TEAM_LINE_FIELDS = {
    "call_id", "model", "purpose", "prompt_tokens", "completion_tokens", "total_tokens", "cost_usd", "unpriced",
    "latency_ms", "status", "created_at",
}  # fmt: skip


@pytest.fixture
def costed(acme):
    job = job_of(acme)
    first = add_call(job, purpose="extract", provider_cost_nanos=1_000, cost_nanos=1_250)
    second = add_call(job, resolved_model="anthropic/claude-x", provider_cost_nanos=2_000, cost_nanos=2_500)
    return job, first, second


def test_costs_for_a_team_key_hide_provider_figures(acme, costed):
    job, first, second = costed

    response = acme.api.get(f"/api/jobs/{job.id}/costs")

    assert response.status_code == 200
    out = response.json()
    assert set(out) == {"job_id", "team_id", "job_type", "status", "total_cost_usd", "credits_charged", "breakdown"}
    assert (out["job_id"], out["team_id"], out["status"], out["total_cost_usd"]) == (
        str(job.id),
        "acme-corp",
        "in_progress",
        0.00000375,
    )
    assert [line["call_id"] for line in out["breakdown"]] == [str(first.id), str(second.id)]
    for line in out["breakdown"]:
        assert set(line) == TEAM_LINE_FIELDS  # no resolved_model, provider_cost_usd, margin_usd
    assert out["breakdown"][0] | {"created_at": None} == {
        "call_id": str(first.id), "model": "chat-fast", "purpose": "extract", "prompt_tokens": 10,
        "completion_tokens": 5, "total_tokens": 15, "cost_usd": 0.00000125, "unpriced": False, "latency_ms": 100,
        "status": "success", "created_at": None,
    }  # fmt: skip


def test_costs_with_expose_models_show_the_resolved_model_only(acme, costed):
    job, _, _ = costed
    acme.team.expose_models = True
    acme.team.save(update_fields=["expose_models"])

    out = acme.api.get(f"/api/jobs/{job.id}/costs").json()

    assert [line["resolved_model"] for line in out["breakdown"]] == ["openai/gpt-4o-mini", "anthropic/claude-x"]
    assert "provider_cost_usd" not in out and "margin_usd" not in out
    assert all("provider_cost_usd" not in line and "margin_usd" not in line for line in out["breakdown"])


def test_costs_for_an_admin_show_provider_cost_and_margin(admin, costed):
    job, _, _ = costed

    out = admin.get(f"/api/jobs/{job.id}/costs").json()

    assert (out["provider_cost_usd"], out["margin_usd"], out["total_cost_usd"]) == (0.000003, 0.00000075, 0.00000375)
    assert [(line["resolved_model"], line["provider_cost_usd"], line["margin_usd"]) for line in out["breakdown"]] == [
        ("openai/gpt-4o-mini", 0.000001, 0.00000025),
        ("anthropic/claude-x", 0.000002, 0.0000005),
    ]


# --- expiry (periodic task) ----------------------------------------------------------------------


def test_stale_jobs_expire_to_failed_and_release_their_hold(acme, settings):
    from jobs.tasks import expire_stale_jobs

    settings.SAAS_LLM_JOB_TIMEOUT_S = 3600
    stale_pending = job_of(acme)
    stale_running = job_of(acme)
    add_call(stale_running)
    fresh = job_of(acme)
    finished = job_of(acme)
    add_call(finished)
    services.complete_job(team=acme.team, job_id=finished.id, status="completed")
    two_hours_ago = timezone.now() - timedelta(hours=2)
    Job.objects.filter(pk__in=[stale_pending.pk, stale_running.pk, finished.pk]).update(created_at=two_hours_ago)

    expired = expire_stale_jobs()  # the Celery task body, run inline

    assert expired == 2
    for job in (stale_pending, stale_running):
        job.refresh_from_db()
        assert (job.status, job.error_message) == ("failed", "expired")
        assert job.completed_at is not None
        assert Reservation.objects.get(job_id=job.id).status == "released"
        assert not LedgerEntry.objects.filter(job_id=job.id).exists()
    fresh.refresh_from_db()
    finished.refresh_from_db()
    assert (fresh.status, finished.status) == ("pending", "completed")
    assert Reservation.objects.get(job_id=fresh.id).status == "open"
    account = CreditAccount.objects.get(team=acme.team)
    assert (account.reserved_units, account.balance_units) == (ONE, 99 * ONE)  # fresh's hold; finished's charge
    assert services.expire_stale_jobs() == 0  # idempotent
    assert acme.api.get(f"/api/jobs/{stale_pending.id}").json()["error_message"] == "expired"
