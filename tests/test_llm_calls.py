"""POST /api/jobs/{id}/llm-call (SPEC §5.2, §5.6 routing, §4 errors) against the real mock upstream.

The LLM-call views do their DB work in worker threads, so every test that calls them commits its
rows (`transaction=True`). Each test asserts the LLMCall / Job rows, not only the response.
"""

import json
import threading
import time
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.conf import settings
from django.db.models import Sum

from billing.models import LedgerEntry
from jobs.models import Job, LLMCall
from models_registry.models import Deployment
from tenants import services as tenant_services
from tenants.models import ApiKey, TeamStatus
from tests.conftest import make_alias, make_tenant, needs_postgres_and_redis

pytestmark = pytest.mark.django_db(transaction=True)

CONTENT = "".join(f"tok{i} " for i in range(20))  # what the mock answers by default
HELLO = [{"role": "user", "content": "Hello"}]  # 4 prompt tokens at the mock
PRICED = {"input_cost_per_token": "0.000001", "output_cost_per_token": "0.000002"}


def new_job(tenant, **fields) -> str:
    response = tenant.api.post("/api/jobs/create", {"job_type": "analysis", **fields})
    assert response.status_code == 201, response.json()
    return response.json()["job_id"]


def call(tenant, job_id: str, **body):
    return tenant.api.post(f"/api/jobs/{job_id}/llm-call", {"messages": HELLO, **body})


def served(mock) -> list[tuple[str, str | None]]:
    return [(entry["model"], entry["fault"]) for entry in mock.stats()["served"]]


# --- the seed flow -------------------------------------------------------------------------------


def test_seed_flow_create_call_without_model_complete_costs(llm_team, mock):
    """api-reference.txt "Create Job → Make Call → Complete", exactly as written (no model: the default alias)."""
    api = llm_team.api
    created = api.post("/api/jobs/create", {"team_id": "acme-corp", "job_type": "analysis"})
    assert created.status_code == 201
    job_id = created.json()["job_id"]

    response = api.post(f"/api/jobs/{job_id}/llm-call", {"messages": [{"role": "user", "content": "Hello"}]})

    assert response.status_code == 200, response.json()
    body = response.json()
    assert set(body) == {"call_id", "job_id", "model", "response", "usage", "cost_usd", "latency_ms"}
    assert body["job_id"] == job_id
    assert body["model"] == "chat-fast"
    assert body["response"] == {"role": "assistant", "content": CONTENT, "finish_reason": "stop", "tool_calls": None}
    assert body["usage"] == {"prompt_tokens": 4, "completion_tokens": 20, "total_tokens": 24}
    assert body["cost_usd"] == 0.000044  # 4 × 1e-6 + 20 × 2e-6
    assert isinstance(body["latency_ms"], int) and body["latency_ms"] >= 0
    row = LLMCall.objects.get(id=body["call_id"])
    deployment = Deployment.objects.get(alias_id="chat-fast")
    assert (str(row.job_id), row.team_id, row.model_alias, row.status, row.stream) == (
        job_id,
        "acme-corp",
        "chat-fast",
        "success",
        False,
    )
    assert (row.deployment_id, row.resolved_model, row.provider_response_id) == (
        deployment.id,
        "openai/mock-model",
        "chatcmpl-mock-1",
    )
    assert (row.prompt_tokens, row.completion_tokens, row.total_tokens) == (4, 20, 24)
    assert (row.provider_cost_nanos, row.cost_nanos, row.unpriced, row.finish_reason) == (44_000, 44_000, False, "stop")
    assert row.price_snapshot["source"] == "deployment"
    assert (row.request_body, row.response_body) == (None, None)  # store_prompts is off by default
    job = Job.objects.get(id=job_id)
    assert (job.status, job.total_calls) == ("in_progress", 1)
    assert job.started_at is not None

    done = api.post(f"/api/jobs/{job_id}/complete", {"status": "completed"})

    assert done.status_code == 200, done.json()
    result = done.json()
    assert result["status"] == "completed"
    assert result["costs"] == {
        "total_calls": 1,
        "successful_calls": 1,
        "failed_calls": 0,
        "prompt_tokens": 4,
        "completion_tokens": 20,
        "total_tokens": 24,
        "cost_usd": 0.000044,
        "avg_latency_ms": float(row.latency_ms),
    }
    assert (result["credits_charged"], result["credits_remaining"]) == (1.0, 99.0)
    assert result["calls"] == [
        {
            "call_id": body["call_id"],
            "model": "chat-fast",
            "purpose": "",
            "total_tokens": 24,
            "cost_usd": 0.000044,
            "latency_ms": row.latency_ms,
            "status": "success",
            "error": None,
        }
    ]
    charge = LedgerEntry.objects.get(job_id=job_id)
    assert (charge.kind, charge.amount_units) == ("charge", -10_000)

    costs = api.get(f"/api/jobs/{job_id}/costs")
    assert costs.status_code == 200
    assert costs.json()["total_cost_usd"] == 0.000044
    assert costs.json()["credits_charged"] == 1.0
    assert [line["call_id"] for line in costs.json()["breakdown"]] == [body["call_id"]]


def test_explicit_model_overrides_the_default_alias(llm_team, mock):
    make_alias("chat-other", mock.url, deployments=[{"litellm_model": "openai/mock-other", **PRICED}])
    job_id = new_job(llm_team)

    response = call(llm_team, job_id, model="chat-other", purpose="summarise")

    assert response.status_code == 200, response.json()
    assert response.json()["model"] == "chat-other"
    row = LLMCall.objects.get(id=response.json()["call_id"])
    assert (row.model_alias, row.resolved_model, row.purpose) == ("chat-other", "openai/mock-other", "summarise")
    assert served(mock) == [("mock-other", None)]
    assert llm_team.api.get(f"/api/jobs/{job_id}").json()["models_used"] == ["chat-other"]

    default = call(llm_team, job_id, model=None)  # an explicit null is the default alias too

    assert default.json()["model"] == "chat-fast"
    assert llm_team.api.get(f"/api/jobs/{job_id}").json()["models_used"] == ["chat-fast", "chat-other"]


def test_team_without_default_model_must_name_one(mock, chat_alias):
    team = make_tenant("acme-corp", "acme", access_groups=["standard"])
    job_id = new_job(team)

    response = call(team, job_id)

    assert response.status_code == 422
    assert response.json() == {"detail": "No model given and the team has no default model", "code": "model_required"}
    assert mock.requests == 0
    assert LLMCall.objects.count() == 0


# --- routing: retries, fallbacks, timeouts, provider errors (§5.6, §4) ---------------------------


def test_fallback_to_priority_1_when_the_primary_fails(llm_team, mock):
    make_alias(
        "chat-fb",
        mock.url,
        deployments=[
            {"litellm_model": "openai/mock-fail-500", "priority": 0},
            {"litellm_model": "openai/mock-model", "priority": 1, **PRICED},
        ],
    )
    job_id = new_job(llm_team)

    response = call(llm_team, job_id, model="chat-fb")

    assert response.status_code == 200, response.json()
    assert response.json()["model"] == "chat-fb"
    assert response.json()["response"]["content"] == CONTENT
    seen = served(mock)
    assert seen[-1] == ("mock-model", None)
    assert set(seen[:-1]) == {("mock-fail-500", "500")} and len(seen) >= 2
    row = LLMCall.objects.get(job_id=job_id)  # one row per call, whatever was retried
    fallback = Deployment.objects.get(alias_id="chat-fb", priority=1)
    assert (row.status, row.deployment_id, row.resolved_model) == ("success", fallback.id, "openai/mock-model")
    assert row.fallbacks >= 1
    assert row.cost_nanos == 44_000  # priced with the deployment that answered
    job = Job.objects.get(id=job_id)
    assert (job.total_calls, job.successful_calls, job.failed_calls) == (1, 1, 0)


def test_429_is_retried_then_succeeds(llm_team, mock):
    job_id = new_job(llm_team)
    mock.control(fail_next=1, fault="429")

    response = call(llm_team, job_id)

    assert response.status_code == 200, response.json()
    assert served(mock) == [("mock-model", "429"), ("mock-model", None)]
    row = LLMCall.objects.get(job_id=job_id)
    assert (row.status, row.prompt_tokens, row.completion_tokens, row.cost_nanos) == ("success", 4, 20, 44_000)


def test_timeout_is_504_within_retries_plus_one_times_timeout(llm_team, mock):
    timeout_s = 0.5
    make_alias("chat-hang", mock.url, deployments=[{"litellm_model": "openai/mock-hang", "timeout_s": timeout_s}])
    job_id = new_job(llm_team)
    assert call(llm_team, job_id).status_code == 200  # warm: litellm imported, Router built
    mock.reset()

    started = time.monotonic()
    response = call(llm_team, job_id, model="chat-hang")
    elapsed = time.monotonic() - started

    assert response.status_code == 504
    assert response.json() == {"detail": "The provider did not answer in time", "code": "upstream_timeout"}
    attempts = settings.SAAS_LLM_NUM_RETRIES + 1
    assert elapsed <= attempts * timeout_s + 1.0, f"answered after {elapsed:.2f}s"
    # A timed-out attempt is not retried on its own tier (models_registry/router.py: litellm's backoff
    # between retries would break the bound above); a lower-priority tier would still be tried.
    assert served(mock) == [("mock-hang", "hang")]
    row = LLMCall.objects.get(job_id=job_id, model_alias="chat-hang")
    assert (row.status, row.error_code, row.total_tokens, row.cost_nanos) == ("error", "upstream_timeout", 0, 0)
    job = Job.objects.get(id=job_id)
    assert (job.status, job.total_calls, job.successful_calls, job.failed_calls) == ("in_progress", 2, 1, 1)


def test_timed_out_primary_falls_back_to_the_next_tier(llm_team, mock):
    make_alias(
        "chat-slowfb",
        mock.url,
        deployments=[
            {"litellm_model": "openai/mock-hang", "timeout_s": 0.5},
            {"litellm_model": "openai/mock-model", "priority": 1, **PRICED},
        ],
    )
    job_id = new_job(llm_team)

    response = call(llm_team, job_id, model="chat-slowfb")

    assert response.status_code == 200, response.json()
    assert served(mock)[-1] == ("mock-model", None)
    assert ("mock-hang", "hang") in served(mock)
    row = LLMCall.objects.get(job_id=job_id)
    assert (row.status, row.deployment_id) == ("success", Deployment.objects.get(alias_id="chat-slowfb", priority=1).id)


PROVIDER_FAILURES = [
    # (deployment model, retries, status, body, Retry-After); litellm sleeps ~1 s before each retry,
    # so one row proves retrying and the others fail fast.
    (
        "openai/mock-fail-500",
        1,
        502,
        {"detail": "The provider returned an invalid or failed response", "code": "upstream_error"},
        None,
    ),
    (
        "openai/mock-malformed",
        0,
        502,
        {"detail": "The provider returned an invalid or failed response", "code": "upstream_error"},
        None,
    ),
    (
        "openai/mock-fail-429",
        0,
        429,
        {"detail": "The provider rate limited the request", "code": "upstream_rate_limited"},
        "1",
    ),
]


@pytest.mark.parametrize(("model", "retries", "status", "expected", "retry_after"), PROVIDER_FAILURES)
def test_provider_failing_everywhere(llm_team, mock, settings, model, retries, status, expected, retry_after):
    settings.SAAS_LLM_NUM_RETRIES = retries
    make_alias("chat-bad", mock.url, deployments=[{"litellm_model": model, **PRICED}])
    job_id = new_job(llm_team)

    response = call(llm_team, job_id, model="chat-bad", purpose="doomed")

    assert response.status_code == status
    assert response.json() == expected
    assert response.get("Retry-After") == retry_after
    assert len(served(mock)) == retries + 1  # retried, then given up
    row = LLMCall.objects.get(job_id=job_id)
    assert (row.status, row.error_code, row.purpose, row.model_alias) == (
        "error",
        expected["code"],
        "doomed",
        "chat-bad",
    )
    assert row.error  # the provider's failure is kept for support
    assert (row.total_tokens, row.cost_nanos) == (0, 0)
    job = Job.objects.get(id=job_id)
    assert (job.status, job.total_calls, job.failed_calls, job.billable_calls) == ("in_progress", 1, 1, 0)
    # The job stays usable: complete it, nothing billable → nothing charged.
    done = llm_team.api.post(f"/api/jobs/{job_id}/complete", {"status": "completed"})
    assert done.json()["calls"][0]["status"] == "error"
    assert done.json()["calls"][0]["error"]
    assert not LedgerEntry.objects.filter(job_id=job_id).exists()


def test_provider_400_is_passed_on_without_retries_or_fallbacks(llm_team, mock):
    make_alias(
        "chat-fb",
        mock.url,
        deployments=[{"litellm_model": "openai/mock-model"}, {"litellm_model": "openai/mock-other", "priority": 1}],
    )
    job_id = new_job(llm_team)

    response = call(llm_team, job_id, model="chat-fb", messages=[{"role": "user", "content": "[[mock:bogus=1]]"}])

    assert response.status_code == 400
    # The provider's own message, without our library's exception names (was "litellm.BadRequestError:
    # OpenAIException - …"); staff still see the whole text on the call row.
    assert response.json() == {"detail": "invalid mock directive [[mock:bogus=1]]", "code": "provider_bad_request"}
    assert mock.stats()["requests"] == 1
    call_row = LLMCall.objects.get(job_id=job_id)
    assert call_row.status == "error" and "OpenAIException" in call_row.error


# --- strings the database cannot hold (found by an attacker: calls served, never recorded) --------

UNSTORABLE = [
    pytest.param('"a\\u0000b"', ["messages", 0, "content"], id="nul-in-content"),
    pytest.param('"a\\ud800b"', ["messages", 0, "content"], id="lone-surrogate-in-content"),
    pytest.param('[{"type": "text", "text": "x\\u0000"}]', ["messages", 0, "content", 0, "text"], id="nul-in-part"),
]


@pytest.mark.parametrize("path", ["llm-call", "llm-call-stream"])
@pytest.mark.parametrize(("content", "loc"), UNSTORABLE)
def test_unstorable_text_is_422_before_the_provider_is_called(llm_team, mock, sse_post, path, content, loc):
    """A store_prompts team's NUL reached the provider, then the stored request body failed in Postgres:
    500, the job left in_progress holding its credit, the call never recorded."""
    tenant_services.update_team(team=llm_team.team, store_prompts=True)
    job_id = new_job(llm_team)
    raw = '{"messages": [{"role": "user", "content": ' + content + "}]}"

    response, _ = sse_post(llm_team.key, f"/api/jobs/{job_id}/{path}", raw)

    assert response.status_code == 422, response.content
    [error] = json.loads(response.content)["detail"]
    assert error["loc"] == ["body", *loc]
    assert error["type"] in ("value_error.null_characters_not_allowed", "value_error.surrogate_characters_not_allowed")
    assert mock.requests == 0
    assert not LLMCall.objects.exists()
    assert Job.objects.get(id=job_id).status == "pending"


@pytest.mark.parametrize(
    "raw",
    [
        '{"messages": [{"role": "user", "content": "hi", "name": "a\\u0000"}]}',
        '{"messages": [{"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", '
        '"function": {"name": "f", "arguments": "{\\"a\\": \\"\\u0000\\"}"}}]}]}',
        '{"messages": [{"role": "user", "content": "hi"}], "metadata": {"k": "\\udc00"}}',
        '{"messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function", "function": '
        '{"name": "f", "parameters": {"description": "\\u0000"}}}]}',
        '{"messages": [{"role": "user", "content": "hi"}], "purpose": "\\ud800"}',
    ],
    ids=["name", "tool-arguments", "metadata", "tool-parameters", "purpose"],
)
def test_unstorable_text_anywhere_in_the_body_is_422(llm_team, mock, raw):
    job_id = new_job(llm_team)

    response = llm_team.api.post(f"/api/jobs/{job_id}/llm-call", raw=raw)

    assert response.status_code == 422, response.content
    assert mock.requests == 0
    assert not LLMCall.objects.exists()


def test_a_call_is_recorded_whatever_the_provider_sent_back(llm_team):
    """What comes back is recorded, never refused: NULs and lone surrogates are replaced."""
    from jobs import services as job_services
    from jobs.services import CallRecord

    tenant_services.update_team(team=llm_team.team, store_prompts=True)
    job = job_services.create_job(team=llm_team.team, job_type="odd-bytes")
    record = CallRecord(
        model_alias="chat-fast",
        status="success",
        prompt_tokens=3,
        completion_tokens=2,
        provider_response_id="id\x00",
        finish_reason="stop",
        request_body={"messages": [{"role": "user", "content": "fine"}]},
        response_body={"role": "assistant", "content": "a\x00b\ud800c", "tool_calls": [{"arguments": "\udfff"}]},
        error="provider said \x00",
    )

    call_row = job_services.record_call(team=llm_team.team, job_id=job.id, record=record)

    stored = LLMCall.objects.get(id=call_row.id)
    assert stored.response_body["content"] == "a\ufffdb\ufffdc"
    assert stored.response_body["tool_calls"] == [{"arguments": "\ufffd"}]
    assert (stored.provider_response_id, stored.error) == ("id\ufffd", "provider said \ufffd")
    assert Job.objects.get(id=job.id).total_calls == 1


# --- admission errors: nothing reaches the provider (§3, §5.2, §5.6, §6) -------------------------


def test_another_teams_job_is_404_and_nothing_is_called(llm_team, llm_other_team, mock):
    job_id = new_job(llm_team)

    response = call(llm_other_team, job_id)

    assert response.status_code == 404
    assert response.json() == {"detail": "Job not found", "code": "job_not_found"}
    assert mock.requests == 0
    assert LLMCall.objects.count() == 0
    assert Job.objects.get(id=job_id).status == "pending"


def test_admin_key_may_call_on_any_teams_job(llm_team, admin, mock):
    job_id = new_job(llm_team)

    response = admin.post(f"/api/jobs/{job_id}/llm-call", {"messages": HELLO})

    assert response.status_code == 200, response.json()
    assert LLMCall.objects.get(job_id=job_id).team_id == "acme-corp"


def test_unknown_or_malformed_job_id_is_404(llm_team, mock):
    for job_id in ["not-a-uuid", "12345", "00000000-0000-0000-0000-000000000000"]:
        response = call(llm_team, job_id)

        assert response.status_code == 404, job_id
        assert response.json() == {"detail": "Job not found", "code": "job_not_found"}
    assert mock.requests == 0


def test_unknown_alias_is_404_model_not_found(llm_team, mock):
    job_id = new_job(llm_team)

    response = call(llm_team, job_id, model="no-such-model")

    assert response.status_code == 404
    assert response.json() == {"detail": "Model alias 'no-such-model' not found", "code": "model_not_found"}
    assert mock.requests == 0
    assert LLMCall.objects.count() == 0
    assert Job.objects.get(id=job_id).status == "pending"  # a refused call does not start the job


def test_alias_outside_the_teams_groups_is_403_model_not_allowed(llm_team, mock):
    make_alias("chat-premium", mock.url, group="premium")
    job_id = new_job(llm_team)

    response = call(llm_team, job_id, model="chat-premium")

    assert response.status_code == 403
    assert response.json() == {"detail": "Team is not allowed to use model 'chat-premium'", "code": "model_not_allowed"}
    assert mock.requests == 0
    assert LLMCall.objects.count() == 0


def test_inactive_alias_cannot_be_called(llm_team, admin, mock):
    job_id = new_job(llm_team)
    assert admin.put("/api/model-aliases/chat-fast", {"status": "inactive"}).status_code == 200

    response = call(llm_team, job_id)

    # SPEC §5.6: a known alias the team may not call (inactive) is a 403, not an unknown one.
    assert response.status_code == 403
    assert response.json() == {"detail": "Team is not allowed to use model 'chat-fast'", "code": "model_not_allowed"}
    assert mock.requests == 0
    assert LLMCall.objects.count() == 0


def test_inactive_group_does_not_grant_access(llm_team, admin, mock):
    job_id = new_job(llm_team)
    assert admin.put("/api/model-access-groups/standard", {"status": "inactive"}).status_code == 200

    response = call(llm_team, job_id)

    assert response.status_code == 403
    assert response.json()["code"] == "model_not_allowed"
    assert mock.requests == 0


def test_suspended_team_cannot_call(llm_team, mock):
    job_id = new_job(llm_team)
    tenant_services.set_team_status(team=llm_team.team, status=TeamStatus.SUSPENDED)

    response = call(llm_team, job_id)

    assert response.status_code == 403
    assert response.json() == {"detail": "Team is suspended", "code": "team_suspended"}
    assert mock.requests == 0
    assert LLMCall.objects.count() == 0
    # Reads and completing the in-flight job keep working (§3).
    assert llm_team.api.get(f"/api/jobs/{job_id}").status_code == 200
    assert llm_team.api.post(f"/api/jobs/{job_id}/complete", {"status": "cancelled"}).status_code == 200


def test_call_on_a_finished_job_is_409(llm_team, mock):
    for status in ["completed", "failed", "cancelled"]:
        job_id = new_job(llm_team)
        assert llm_team.api.post(f"/api/jobs/{job_id}/complete", {"status": status}).status_code == 200

        response = call(llm_team, job_id)

        assert response.status_code == 409, status
        assert response.json() == {"detail": f"Job is already {status}", "code": "job_already_finished"}
    assert mock.requests == 0
    assert LLMCall.objects.count() == 0


def test_usage_mode_team_with_nothing_left_is_403_before_the_provider(mock, chat_alias):
    # tokens mode, 1 token = 1 credit: the first call (24 tokens) eats the 10 credits and more.
    team = make_tenant(
        "acme-corp", "acme", credits=10, access_groups=["standard"], default_model="chat-fast",
        budget_mode="tokens", tokens_per_credit=1, min_reservation=Decimal(1),
    )  # fmt: skip
    job_id = new_job(team)
    assert call(team, job_id).status_code == 200
    assert mock.requests == 1

    response = call(team, job_id)

    assert response.status_code == 403
    assert response.json() == {"detail": "Insufficient credits", "code": "insufficient_credits"}
    assert mock.requests == 1  # the refused call never reached the provider
    assert LLMCall.objects.filter(job_id=job_id).count() == 1
    # The overshoot of the call that was already admitted is recorded honestly, not capped.
    assert team.api.post(f"/api/jobs/{job_id}/complete", {"status": "completed"}).json()["credits_charged"] == 24
    charge = LedgerEntry.objects.get(job_id=job_id)
    assert (charge.amount_units, charge.balance_after_units) == (-240_000, -140_000)


def test_no_key_is_401(llm_team, anon, mock):
    job_id = new_job(llm_team)

    response = anon.post(f"/api/jobs/{job_id}/llm-call", {"messages": HELLO})

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"
    assert response.json() == {"detail": "Missing API key: send 'Authorization: Bearer sk-…'"}
    assert mock.requests == 0


def test_revoked_key_is_401(llm_team, mock):
    job_id = new_job(llm_team)
    tenant_services.revoke_key(key=ApiKey.objects.get(team=llm_team.team))

    response = call(llm_team, job_id)

    assert response.status_code == 401
    assert response.json() == {"detail": "API key has been revoked"}
    assert mock.requests == 0


# --- validation (§4, §5.2) -----------------------------------------------------------------------

BAD_BODIES = [
    # (body, expected loc)
    ({}, ["body", "messages"]),
    ({"messages": []}, ["body", "messages"]),
    ({"messages": "hello"}, ["body", "messages"]),
    ({"messages": [{"role": "robot", "content": "hi"}]}, ["body", "messages", 0, "role"]),
    ({"messages": [{"content": "hi"}]}, ["body", "messages", 0, "role"]),
    ({"messages": [{"role": "user"}]}, ["body", "messages", 0, "content"]),
    ({"messages": [{"role": "user", "content": 5}]}, ["body", "messages", 0, "content"]),
    ({"messages": HELLO, "temperature": "hot"}, ["body", "temperature"]),
    ({"messages": HELLO, "temperature": 3}, ["body", "temperature"]),
    ({"messages": HELLO, "max_tokens": "5"}, ["body", "max_tokens"]),
    ({"messages": HELLO, "max_tokens": 0}, ["body", "max_tokens"]),
    ({"messages": HELLO, "top_p": True}, ["body", "top_p"]),
    ({"messages": HELLO, "stop": ["a", "b", "c", "d", "e"]}, ["body", "stop"]),
    ({"messages": HELLO, "stop": 5}, ["body", "stop"]),
    ({"messages": HELLO, "seed": 1.5}, ["body", "seed"]),
    ({"messages": HELLO, "tools": "all"}, ["body", "tools"]),
    (
        {"messages": HELLO, "tools": [{"type": "function", "function": {"description": "no name"}}]},
        ["body", "tools", 0, "function", "name"],
    ),
    ({"messages": HELLO, "tools": [{"type": "web", "function": {"name": "f"}}]}, ["body", "tools", 0, "type"]),
    (
        # Found by fuzzing: malformed tool calls reached the provider and came back as a 503.
        {"messages": [{"role": "assistant", "content": None, "tool_calls": [{"": {"x": None}}]}]},
        ["body", "messages", 0, "tool_calls", 0, "id"],
    ),
    (
        {
            "messages": [
                {
                    "role": "assistant",
                    "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": {}}}],
                }
            ]
        },
        ["body", "messages", 0, "tool_calls", 0, "function", "arguments"],
    ),
    ({"messages": HELLO, "tool_choice": "sometimes"}, ["body", "tool_choice"]),
    ({"messages": HELLO, "purpose": "x" * 201}, ["body", "purpose"]),
    ({"messages": HELLO, "model": 5}, ["body", "model"]),
    ({"messages": HELLO, "metadata": ["not", "an", "object"]}, ["body", "metadata"]),
    ({"messages": HELLO, "metadata": {"blob": "x" * (16 * 1024)}}, ["body", "metadata"]),
]


def test_bad_bodies_are_422(llm_team, mock):
    # One job for the whole table: these tests need committed rows, and flushing them costs ~1 s each.
    job_id = new_job(llm_team)
    for body, loc in BAD_BODIES:
        response = llm_team.api.post(f"/api/jobs/{job_id}/llm-call", body)

        assert response.status_code == 422, (body, response.json())
        errors = response.json()["detail"]
        assert isinstance(errors, list) and errors, body
        assert all(error["loc"][0] == "body" and {"loc", "msg", "type"} <= set(error) for error in errors), body
        assert loc in [error["loc"] for error in errors], (body, errors)
    response = llm_team.api.post(f"/api/jobs/{job_id}/llm-call", [{"role": "user", "content": "hi"}])
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body"]
    assert mock.requests == 0
    assert LLMCall.objects.count() == 0
    assert Job.objects.get(id=job_id).status == "pending"


MALFORMED = [
    ('{"messages": [', "application/json"),
    ("messages=hi", "application/x-www-form-urlencoded"),
    ("[1", "application/json"),
]


def test_malformed_json_or_wrong_content_type_is_400(llm_team, mock):
    job_id = new_job(llm_team)
    for raw, content_type in MALFORMED:
        response = llm_team.api.post(f"/api/jobs/{job_id}/llm-call", raw=raw, content_type=content_type)

        assert response.status_code == 400, raw
        assert response.json()["code"] == "invalid_request"
        assert isinstance(response.json()["detail"], str)
    assert mock.requests == 0


# --- pricing (§5.2) ------------------------------------------------------------------------------


def test_unpriced_model_costs_zero_and_is_flagged(llm_team, mock, admin):
    make_alias("chat-unpriced", mock.url, deployments=[{"litellm_model": "openai/mock-unknown-model-xyz"}])
    job_id = new_job(llm_team)

    response = call(llm_team, job_id, model="chat-unpriced")

    assert response.status_code == 200, response.json()
    assert response.json()["cost_usd"] == 0
    row = LLMCall.objects.get(job_id=job_id)
    assert (row.unpriced, row.cost_nanos, row.provider_cost_nanos, row.total_tokens) == (True, 0, 0, 24)
    assert row.price_snapshot["source"] == "unpriced"
    line = admin.get(f"/api/jobs/{job_id}/costs").json()["breakdown"][0]
    assert (line["unpriced"], line["cost_usd"], line["provider_cost_usd"]) == (True, 0, 0)


def test_price_map_model_uses_litellms_prices(llm_team, mock):
    import litellm

    info = litellm.get_model_info("openai/gpt-4o-mini")
    make_alias("chat-4o", mock.url, deployments=[{"litellm_model": "openai/gpt-4o-mini"}])
    job_id = new_job(llm_team)

    assert call(llm_team, job_id, model="chat-4o").status_code == 200

    row = LLMCall.objects.get(job_id=job_id)
    expected = Decimal(4) * Decimal(str(info["input_cost_per_token"])) + Decimal(20) * Decimal(
        str(info["output_cost_per_token"])
    )
    assert row.unpriced is False
    assert row.price_snapshot["source"] == "litellm"
    assert row.provider_cost_nanos == int((expected * 10**9).to_integral_value(rounding="ROUND_CEILING"))


MARKUPS = [("0", 44_000), ("25", 55_000), ("12.5", 49_500), ("33.3333", 58_667)]  # 44 000 × (1 + m/100), rounded up


def test_markup_is_applied_to_the_provider_cost(mock, chat_alias, admin):
    team = make_tenant("acme-corp", "acme", access_groups=["standard"], default_model="chat-fast")
    for markup, cost_nanos in MARKUPS:
        team.team.markup_percent = Decimal(markup)
        team.team.save(update_fields=["markup_percent"])
        job_id = new_job(team)

        response = call(team, job_id)

        assert response.status_code == 200, response.json()
        row = LLMCall.objects.get(job_id=job_id)
        assert (row.provider_cost_nanos, row.cost_nanos) == (44_000, cost_nanos), markup
        assert row.price_snapshot["markup_percent"] == str(Decimal(markup).quantize(Decimal("0.0001")))
        assert response.json()["cost_usd"] == cost_nanos / 1e9
        team_view = team.api.get(f"/api/jobs/{job_id}/costs").json()
        assert team_view["total_cost_usd"] == cost_nanos / 1e9
        assert "provider_cost_usd" not in team_view and "margin_usd" not in team_view
        admin_view = admin.get(f"/api/jobs/{job_id}/costs").json()
        assert (admin_view["provider_cost_usd"], admin_view["margin_usd"]) == (
            44_000 / 1e9,
            (cost_nanos - 44_000) / 1e9,
        )


# --- what is forwarded and returned --------------------------------------------------------------


class _CapturingUpstream(BaseHTTPRequestHandler):
    """An OpenAI-compatible upstream that records every request body it receives."""

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.bodies.append(body)
        payload = json.dumps(
            {
                "id": "chatcmpl-capture",
                "object": "chat.completion",
                "created": 1700000000,
                "model": body.get("model"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def capturing_upstream():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _CapturingUpstream)
    server.bodies = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


SENT_PARAMS = [
    {},
    {"temperature": 0.2},
    {"max_tokens": 7, "stop": ["END"], "seed": 42},
    {"top_p": 0.5, "presence_penalty": 0.1, "frequency_penalty": -0.2, "response_format": {"type": "json_object"}},
]


def test_only_client_sent_parameters_are_forwarded(llm_team, capturing_upstream):
    url = f"http://127.0.0.1:{capturing_upstream.server_address[1]}/v1"
    make_alias("chat-capture", url, deployments=[{"litellm_model": "openai/capture-model"}])
    job_id = new_job(llm_team)
    for params in SENT_PARAMS:
        capturing_upstream.bodies.clear()

        response = call(llm_team, job_id, model="chat-capture", purpose="p", metadata={"k": "v"}, **params)

        assert response.status_code == 200, response.json()
        [sent] = capturing_upstream.bodies
        assert sent["model"] == "capture-model"
        assert sent["messages"] == HELLO
        forwarded = {key: value for key, value in sent.items() if key not in ("model", "messages")}
        assert forwarded == params  # nothing forced (no default temperature), nothing of ours (purpose, metadata)


def test_max_tokens_reaches_the_provider(llm_team, mock):
    job_id = new_job(llm_team)

    response = call(llm_team, job_id, max_tokens=5)

    assert response.status_code == 200
    assert response.json()["response"]["finish_reason"] == "length"
    assert response.json()["usage"]["completion_tokens"] == 5
    assert LLMCall.objects.get(job_id=job_id).finish_reason == "length"


def test_tool_call_is_returned_openai_style(llm_team, mock):
    tools = [
        {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}}
    ]
    job_id = new_job(llm_team)

    response = call(
        llm_team, job_id, messages=[{"role": "user", "content": "weather? [[mock:tool=get_weather]]"}], tools=tools
    )

    assert response.status_code == 200, response.json()
    answer = response.json()["response"]
    assert answer["finish_reason"] == "tool_calls"
    assert answer["content"] is None
    [tool_call] = answer["tool_calls"]
    assert (tool_call["type"], tool_call["function"]["name"], tool_call["function"]["arguments"]) == (
        "function",
        "get_weather",
        "{}",
    )
    # The OpenAI tool round trip is accepted as is: assistant message without content, then the tool's answer.
    conversation = [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [tool_call]},
        {"role": "tool", "tool_call_id": tool_call["id"], "content": '{"temp": 21}'},
        {"role": "user", "content": [{"type": "text", "text": "and so?"}]},
    ]
    followup = call(llm_team, job_id, messages=conversation, tools=tools)
    assert followup.status_code == 200, followup.json()
    assert followup.json()["response"]["finish_reason"] == "stop"
    assert LLMCall.objects.filter(job_id=job_id, status="success").count() == 2


def test_gateway_overhead_header_is_present(llm_team, mock):
    job_id = new_job(llm_team)

    response = call(llm_team, job_id)

    assert response.status_code == 200
    assert float(response["X-Gateway-Overhead-Ms"]) >= 0
    assert response["X-Request-Id"]


def test_expose_models_adds_resolved_model_but_model_stays_the_alias(mock, chat_alias):
    team = make_tenant("acme-corp", "acme", access_groups=["standard"], default_model="chat-fast", expose_models=True)
    job_id = new_job(team)

    body = call(team, job_id).json()

    assert (body["model"], body["resolved_model"]) == ("chat-fast", "openai/mock-model")


def test_store_prompts_keeps_request_and_response_bodies(mock, chat_alias):
    team = make_tenant("acme-corp", "acme", access_groups=["standard"], default_model="chat-fast", store_prompts=True)
    job_id = new_job(team)

    assert call(team, job_id, temperature=0.5).status_code == 200

    row = LLMCall.objects.get(job_id=job_id)
    assert row.request_body == {"messages": HELLO, "temperature": 0.5}
    assert row.response_body["content"] == CONTENT


def test_registry_change_reaches_the_router_within_a_second(llm_team, admin, mock):
    job_id = new_job(llm_team)
    assert call(llm_team, job_id).status_code == 200
    update = admin.put(
        "/api/model-aliases/chat-fast",
        {"deployments": [{"litellm_model": "openai/mock-model-v2", "api_base": f"{mock.url}/v1", **PRICED}]},
    )
    assert update.status_code == 200
    time.sleep(1.05)

    assert call(llm_team, job_id).status_code == 200

    assert [row.resolved_model for row in LLMCall.objects.filter(job_id=job_id).order_by("created_at")] == [
        "openai/mock-model",
        "openai/mock-model-v2",
    ]
    assert served(mock)[-1] == ("mock-model-v2", None)


# --- concurrency ---------------------------------------------------------------------------------


@pytest.mark.skipif(
    settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"),
    reason="the in-memory shared-cache SQLite test DB answers 'database table is locked' at once (no busy "
    "timeout); on SQLite this is covered against a live server with a file DB (test_streaming.py)",
)
def test_concurrent_calls_on_one_job_roll_up_exactly(llm_team, mock):
    from django.db import connection
    from django.test import Client

    from tests.conftest import Api

    job_id = new_job(llm_team)
    statuses: list[int] = []
    errors: list[BaseException] = []

    def one(index: int) -> None:
        try:
            api = Api(Client(), llm_team.key)
            content = f"call number {index} " + "word " * index  # different prompt sizes
            response = api.post(f"/api/jobs/{job_id}/llm-call", {"messages": [{"role": "user", "content": content}]})
            statuses.append(response.status_code)
        except BaseException as exc:  # surfaced below, not swallowed by the thread
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=one, args=(index,)) for index in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert not errors
    assert statuses == [200] * 20
    job = Job.objects.get(id=job_id)
    sums = LLMCall.objects.filter(job_id=job_id).aggregate(
        prompt=Sum("prompt_tokens"), completion=Sum("completion_tokens"), total=Sum("total_tokens"),
        cost=Sum("cost_nanos"), provider=Sum("provider_cost_nanos"), latency=Sum("latency_ms"),
    )  # fmt: skip
    assert LLMCall.objects.filter(job_id=job_id, status="success").count() == 20
    assert (job.total_calls, job.successful_calls, job.billable_calls) == (20, 20, 20)
    assert (job.prompt_tokens, job.completion_tokens, job.total_tokens) == (
        sums["prompt"],
        sums["completion"],
        sums["total"],
    )
    assert (job.cost_nanos, job.provider_cost_nanos, job.total_latency_ms) == (
        sums["cost"],
        sums["provider"],
        sums["latency"],
    )
    assert job.billable_tokens == sums["total"] and job.billable_cost_nanos == sums["cost"]
    assert sums["prompt"] == sum(len(f"call number {i} ".split()) + i + 3 for i in range(20))


# --- robustness of the worker threads' database connections --------------------------------------


@pytest.mark.live
@pytest.mark.django_db(transaction=True, reset_sequences=True)  # the registry the live server has cached
@needs_postgres_and_redis()
def test_llm_calls_recover_after_the_database_drops_connections(llm_team, mock, live_gateway):
    import httpx
    from django.db import connection

    client = httpx.Client(base_url=live_gateway.url, headers={"Authorization": f"Bearer {llm_team.key}"}, timeout=30)
    job_id = client.post("/api/jobs/create", json={"job_type": "db-drop"}).json()["job_id"]
    path = f"/api/jobs/{job_id}/llm-call"
    assert [client.post(path, json={"messages": HELLO}).status_code for _ in range(6)] == [200] * 6
    with connection.cursor() as cursor:  # what a Postgres restart does to every open connection
        cursor.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )

    statuses = [client.post(path, json={"messages": HELLO}).status_code for _ in range(20)]

    assert statuses[-6:] == [200] * 6, statuses  # a failure right after the drop is fine; staying broken is not
    assert client.get(f"/api/jobs/{job_id}").status_code == 200


@pytest.mark.live
@pytest.mark.django_db(transaction=True, reset_sequences=True)  # the registry the live server has cached
@needs_postgres_and_redis()
def test_client_disconnect_before_the_provider_answers_is_recorded_as_cancelled(llm_team, mock, live_gateway):
    """Found by the full-stack fault test: the cancelled view skipped the call row, so the provider's
    work vanished from the books (a /v1 single-call job stayed open with its credits held, a stream's
    rate-limit slot was not given back). Non-stream and stream (before the first byte), both routes."""
    import httpx

    headers = {"Authorization": f"Bearer {llm_team.key}"}
    with httpx.Client(base_url=live_gateway.url, headers=headers, timeout=30) as client:
        job_id = client.post("/api/jobs/create", json={"job_type": "hang-up"}).json()["job_id"]
    slow = [{"role": "user", "content": "take your time [[mock:latency=1500]]"}]
    for path, body in (
        (f"/api/jobs/{job_id}/llm-call", {"messages": slow}),
        (f"/api/jobs/{job_id}/llm-call-stream", {"messages": slow}),
        ("/v1/chat/completions", {"model": "chat-fast", "messages": slow}),
    ):
        with (
            pytest.raises(httpx.ReadTimeout),
            httpx.Client(base_url=live_gateway.url, headers=headers, timeout=0.6) as client,
        ):
            client.post(path, json=body)

    deadline = time.monotonic() + 10
    while LLMCall.objects.count() < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    calls = list(LLMCall.objects.order_by("created_at"))
    assert [(call.status, call.error_code, call.stream) for call in calls] == [
        ("cancelled", "client_disconnected", False),
        ("cancelled", "client_disconnected", True),
        ("cancelled", "client_disconnected", False),
    ]
    assert all(call.prompt_tokens > 0 and call.cost_nanos > 0 for call in calls)  # priced: the prompt was sent
    assert Job.objects.get(id=job_id).total_calls == 2
    single = Job.objects.get(job_type="chat.completions")
    deadline = time.monotonic() + 5
    while single.status != "completed" and time.monotonic() < deadline:
        time.sleep(0.1)
        single.refresh_from_db()
    assert single.status == "completed" and single.credits_charged_units > 0  # closed and charged, hold released


@pytest.mark.live
@pytest.mark.django_db(transaction=True, reset_sequences=True)  # the registry the live server has cached
@needs_postgres_and_redis()
def test_a_new_alias_serves_every_call_at_once_on_every_worker(llm_team, mock, live_gateway):
    """Found by an attacker: right after an alias was created, a few concurrent calls to it answered
    400 "litellm.BadRequestError: … There are no healthy deployments for this model" (3 of 64, two
    workers): a worker whose Router predated the alias refused instead of loading it."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    with httpx.Client(base_url=live_gateway.url, timeout=30, trust_env=False) as client:
        headers = {"Authorization": f"Bearer {llm_team.key}"}
        job_id = client.post("/api/jobs/create", json={"job_type": "fresh-alias"}, headers=headers).json()["job_id"]
        # Both workers have a Router for the current registry (chat-fast), checked within the last second.
        assert [client.post(f"/api/jobs/{job_id}/llm-call", json={"messages": HELLO}, headers=headers).status_code for _ in range(8)] == [200] * 8  # fmt: skip
        make_alias("chat-new", mock.url)  # in `standard`, which the team has

        def send(index: int) -> httpx.Response:
            with httpx.Client(base_url=live_gateway.url, timeout=30, trust_env=False) as one:
                if index % 2:
                    body = {"model": "chat-new", "messages": HELLO}
                    return one.post("/v1/chat/completions", json=body, headers=headers)
                return one.post(f"/api/jobs/{job_id}/llm-call", json={"model": "chat-new", "messages": HELLO}, headers=headers)  # fmt: skip

        with ThreadPoolExecutor(32) as pool:
            responses = list(pool.map(send, range(64)))

    assert [(r.status_code, r.text[:200]) for r in responses if r.status_code != 200] == []
    assert LLMCall.objects.filter(model_alias="chat-new", status="success").count() == 64
