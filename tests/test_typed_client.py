"""The typed client (examples/typed_client.py) and the examples, end to end against a real server.

One module-wide gateway: the mock upstream and uvicorn as subprocesses, on a temporary SQLite file
database migrated and seeded with `manage.py seed_demo` (team acme-corp, alias chat-fast, 100
credits, a team key and an admin key), with no Redis (in-process limits, eager Celery). The tests
only talk HTTP: they never touch pytest-django's test database.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from examples.typed_client import (
    APIConnectionError,
    AuthenticationError,
    ChatChunk,
    ChatMessage,
    ChatResult,
    ConflictError,
    InsufficientCreditsError,
    Job,
    JobCompletion,
    NotFoundError,
    PermissionDeniedError,
    RateLimitError,
    SaaSLLMClient,
    SaaSLLMError,
    ServerError,
    StreamError,
    SyncSaaSLLMClient,
    TeamSuspendedError,
    ValidationError,
    verify_webhook,
)
from tests.live import ROOT, ServerProcess, free_port

pytestmark = pytest.mark.live

TEAM = "acme-corp"
MODEL = "chat-fast"


@dataclass
class Gateway:
    url: str
    team_key: str
    admin_key: str

    def client(self, **kwargs) -> SaaSLLMClient:
        kwargs.setdefault("team_id", TEAM)
        kwargs.setdefault("virtual_key", self.team_key)
        return SaaSLLMClient(base_url=self.url, **kwargs)

    def admin(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {self.admin_key}"}, timeout=10, trust_env=False
        )

    def new_team(self, team_id: str, **config) -> str:
        """A fresh team in the demo org allowed to use chat-fast; returns its key."""
        body = {"team_id": team_id, "organization_id": "acme", "access_groups": ["standard"], "default_model": MODEL}
        body.update(config)
        with self.admin() as admin:
            response = admin.post("/api/teams/create", json=body)
        assert response.status_code == 201, response.text
        return response.json()["virtual_key"]


def _server_env(tmp: Path) -> dict[str, str]:
    return {
        "DATABASE_URL": f"sqlite:///{tmp / 'db.sqlite3'}",
        "SECRET_KEY": "x",
        "DEBUG": "0",
        "SAAS_LLM_WEBHOOK_ALLOW_PRIVATE": "1",
        "REDIS_URL": "",  # embedded defaults: local-memory cache, in-process limits, eager Celery
        "CELERY_BROKER_URL": "",
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture(scope="module")
def gateway(tmp_path_factory) -> Gateway:
    """Migrate + seed, the mock upstream and uvicorn, all started at once (each takes seconds)."""
    tmp = tmp_path_factory.mktemp("typed_client")
    env = {**os.environ, **_server_env(tmp)}
    mock_port = free_port()

    def prepare() -> dict:
        for args in (
            ["migrate", "--noinput"],
            ["seed_demo", "--mock-port", str(mock_port), "--keys-file", str(tmp / "keys.json")],
        ):
            done = subprocess.run(
                [sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
            )
            assert done.returncode == 0, f"manage.py {args[0]} failed:\n{done.stdout}{done.stderr}"
        return json.loads((tmp / "keys.json").read_text())

    def start_mock() -> ServerProcess:  # tests.live.start_mock_upstream, on the port given to seed_demo
        return ServerProcess([sys.executable, "manage.py", "mock_llm_server", "--port", "{port}"], port=mock_port)

    def start_gateway() -> ServerProcess:
        return ServerProcess(
            [sys.executable, "-m", "uvicorn", "saas_llm.asgi:application", "--host", "127.0.0.1", "--port", "{port}"],
            env=_server_env(tmp),
            timeout=90,
        )

    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = [pool.submit(prepare), pool.submit(start_mock), pool.submit(start_gateway)]
    processes = [f.result() for f in futures[1:] if f.exception() is None]
    try:
        keys, mock, server = (f.result() for f in futures)
        yield Gateway(url=server.url, team_key=keys["team_key"], admin_key=keys["admin_key"])
    finally:
        for process in processes:
            process.stop()


def run(coro):
    return asyncio.run(coro)


class Recorder(httpx.AsyncBaseTransport):
    """Real HTTP, recording every request; `drop(request)` → read the answer, then raise
    RemoteProtocolError once, as if the connection died just before the response arrived."""

    def __init__(self, drop=None) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.drop = drop
        self.dropped: list[tuple[int, bytes]] = []
        self.requests: list[httpx.Request] = []
        self.responses: list[httpx.Response] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        response = await self.inner.handle_async_request(request)
        if self.drop is not None and not self.dropped and self.drop(request):
            body = await response.aread()
            await response.aclose()
            self.dropped.append((response.status_code, body))
            raise httpx.RemoteProtocolError("Server disconnected without sending a response.", request=request)
        self.responses.append(response)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()


def creates(request: httpx.Request) -> bool:
    return request.method == "POST" and request.url.path == "/api/jobs/create"


# --- the seed snippet, jobs ---------------------------------------------------------------------


def test_seed_snippet_works_as_written(gateway):
    async def main():
        async with SaaSLLMClient(base_url=gateway.url, team_id="acme-corp", virtual_key=gateway.team_key) as client:
            job_id = await client.create_job("test")
            assert isinstance(job_id, str) and uuid.UUID(job_id)
            job = await client.get_job(job_id)
            assert isinstance(job, Job)
            assert (job.job_id, job.team_id, job.job_type, job.status) == (job_id, TEAM, "test", "pending")
            assert job["status"] == "pending"  # dict-style access, as in the seed's client code

    run(main())


def test_jobs_create_get_list_and_pagination(gateway):
    job_type = f"list-{uuid.uuid4().hex[:8]}"

    async def main():
        async with gateway.client() as client:
            full = await client.create_job_full(
                job_type, metadata={"doc": "cv.pdf", "pages": 3}, user_id="user-7", external_id="ext-1"
            )
            assert full.status == "pending" and full.metadata == {"doc": "cv.pdf", "pages": 3}
            assert (full.user_id, full.external_id, full.total_calls, full.cost_usd) == ("user-7", "ext-1", 0, 0)
            assert full.created_at.tzinfo is not None
            ids = [full.job_id] + [await client.create_job(job_type, user_id="user-8") for _ in range(2)]

            listed = await client.list_jobs(job_type=job_type)
            assert listed.count == 3 and [j.job_id for j in listed.results] == ids[::-1]  # newest first
            page1 = await client.list_jobs(job_type=job_type, limit=2, sort_by="created_at", order="asc")
            assert page1.count == 3 and [j.job_id for j in page1.results] == ids[:2] and page1.next
            page2 = await client.list_jobs(job_type=job_type, limit=2, offset=2, sort_by="created_at", order="asc")
            assert [j.job_id for j in page2.results] == ids[2:] and page2.next is None and page2.previous
            assert [j.job_id async for j in client.iter_jobs(job_type=job_type, page_size=1, order="asc")] == ids
            only = await client.list_jobs(job_type=job_type, user_id="user-7", status="pending")
            assert [j.job_id for j in only.results] == [full.job_id]
            from datetime import date, timedelta

            today = date.today()
            assert (
                await client.list_jobs(
                    job_type=job_type, start_date=today - timedelta(days=1), end_date=today + timedelta(days=1)
                )
            ).count == 3
            assert (await client.list_jobs(job_type=job_type, status="completed")).count == 0
            with pytest.raises(ValidationError) as bad:
                await client.list_jobs(limit=-1)
            assert bad.value.status == 422 and bad.value.errors[0]["loc"] == ["query", "limit"]
            for job_id in ids:
                await client.complete_job(job_id, status="cancelled")

    run(main())


# --- LLM calls, completion, costs, credits ------------------------------------------------------


def test_chat_complete_costs_balance_transactions(gateway):
    async def main():
        async with gateway.client() as client:
            before = await client.get_balance()
            job_id = await client.create_job("analysis")
            first = await client.chat(
                job_id,
                [ChatMessage(role="system", content="Be brief."), {"role": "user", "content": "Hello there"}],
                model=MODEL,
                purpose="greet",
                max_tokens=3,
                temperature=0.2,
            )
            assert isinstance(first, ChatResult)
            assert (first.job_id, first.model, first.finish_reason) == (job_id, MODEL, "length")
            assert first.content == "tok0 tok1 tok2 " and first.response.role == "assistant"
            assert first.usage.completion_tokens == 3 and first.usage.total_tokens == first.usage.prompt_tokens + 3
            assert isinstance(first.cost_usd, Decimal) and first.cost_usd > 0 and first.latency_ms >= 0
            assert first.request_id and first.rate_limit is None  # the demo team has no limits
            second = await client.chat(job_id, "Classify this", purpose="classify")  # default model
            assert second.model == MODEL and second.finish_reason == "stop" and second.usage.completion_tokens == 20

            job = await client.get_job(job_id)
            assert job.status == "in_progress" and job.total_calls == 2 and job.models_used == [MODEL]
            assert job.cost_usd == first.cost_usd + second.cost_usd  # exact: Decimal from the JSON text

            done = await client.complete_job(job_id, metadata={"outcome": "ok"})
            assert isinstance(done, JobCompletion)
            assert done.status == "completed" and done.credits_charged == 1
            assert done.costs.total_calls == 2 and done.costs.cost_usd == job.cost_usd
            assert [c.call_id for c in done.calls] == [first.call_id, second.call_id]
            assert [c.purpose for c in done.calls] == ["greet", "classify"]
            again = await client.complete_job(job_id)  # terminal and idempotent: never charged twice
            assert again.credits_charged == 1 and again.credits_remaining == done.credits_remaining
            with pytest.raises(ConflictError) as conflict:
                await client.complete_job(job_id, status="failed", error_message="too late")
            assert conflict.value.status == 409 and conflict.value.code == "job_already_finished"
            with pytest.raises(ConflictError):
                await client.chat(job_id, "one more")
            assert (await client.get_job(job_id)).metadata == {"outcome": "ok"}

            costs = await client.get_costs(job_id)
            assert costs.total_cost_usd == job.cost_usd and costs.credits_charged == 1
            assert [line.call_id for line in costs.breakdown] == [first.call_id, second.call_id]
            assert costs.breakdown[0].prompt_tokens == first.usage.prompt_tokens
            assert costs.breakdown[0].cost_usd == first.cost_usd and costs.breakdown[0].status == "success"
            assert costs.provider_cost_usd is None and costs.breakdown[0].resolved_model is None  # team key

            after = await client.get_balance()
            assert after.team_id == TEAM and after.budget_mode == "job"
            assert after.credits_used == before.credits_used + 1
            assert after.credits_remaining == after.credits_allocated - after.credits_used - after.credits_reserved
            assert after.credits_remaining > 0  # the seed's `balance["credits_remaining"] > 0` pattern
            assert after["credits_remaining"] == after.credits_remaining

            charges = await client.get_transactions(job_id=job_id)
            assert charges.count == 1 and charges.results[0].kind == "charge" and charges.results[0].amount == -1
            grants = await client.get_transactions(kind="grant", limit=1)
            assert grants.results[0].kind == "grant" and grants.results[0].amount == 100
            assert grants.results[0].created_at.tzinfo is not None

    run(main())


def test_chat_stream_chunks_and_final_usage(gateway):
    async def main():
        recorder = Recorder()
        async with gateway.client(transport=recorder) as client:
            job_id = await client.create_job("stream")
            # `async with` + collect(); parameters are forwarded. (Also warms the server's stream path:
            # a worker's first streamed call stalls ~2 s, then flushes its chunks at once.)
            async with client.chat_stream(job_id, [{"role": "user", "content": "Short"}], max_tokens=2) as short:
                await short.collect()
            assert short.content == "tok0 tok1 " and short.finish_reason == "length" and short.usage.total_tokens > 2

            stream = client.chat_stream(
                job_id, "Stream please [[mock:chunks=6]] [[mock:chunk_delay=60]]", purpose="story"
            )
            started, arrivals, chunks = time.perf_counter(), [], []
            async for chunk in stream:
                assert isinstance(chunk, ChatChunk) and chunk.object == "chat.completion.chunk"
                chunks.append(chunk)
                if chunk.content:
                    arrivals.append(time.perf_counter() - started)
            assert stream.done and stream.error is None
            assert "".join(c.content for c in chunks) == stream.content == "tok0 tok1 tok2 tok3 tok4 tok5 "
            assert chunks[0].choices[0].delta.role == "assistant"
            assert all(c.model == MODEL for c in chunks)
            final = chunks[-1]
            assert final.is_final and final.choices == [] and final.usage is not None
            assert (final.call_id, final.job_id, final.cost_usd) == (stream.call_id, job_id, stream.cost_usd)
            assert stream.usage.completion_tokens == 6 and stream.cost_usd > 0 and stream.finish_reason == "stop"
            assert arrivals[-1] - arrivals[0] > 0.2  # tokens arrive as they are produced, not all at the end
            assert stream.chunks == len(chunks)

            # The streaming endpoint refuses Idempotency-Key: the client never sends it there.
            sent = [r for r in recorder.requests if r.url.path.endswith("/llm-call-stream")]
            assert len(sent) == 2 and not any("idempotency-key" in r.headers for r in sent)
            assert all(
                "idempotency-key" in r.headers for r in recorder.requests if r.method == "POST" and r not in sent
            )

            costs = await client.get_costs(job_id)  # both streamed calls are on the books
            assert [line.call_id for line in costs.breakdown] == [short.call_id, stream.call_id]
            assert costs.breakdown[1].cost_usd == stream.cost_usd
            assert (await client.complete_job(job_id)).costs.total_calls == 2

    run(main())


def test_stream_errors_before_and_after_the_first_byte(gateway):
    async def main():
        async with gateway.client() as client:
            with pytest.raises(NotFoundError) as missing:  # before the first byte: a JSON error
                async for _ in client.chat_stream(str(uuid.uuid4()), "hi"):
                    pass
            assert missing.value.status == 404 and missing.value.code == "job_not_found"

            job_id = await client.create_job("stream-error")
            stream = client.chat_stream(job_id, "cut me [[mock:fault=cut]] [[mock:chunks=6]]")
            seen = []
            with pytest.raises(StreamError) as broken:
                async for chunk in stream:
                    seen.append(chunk.content)
            assert broken.value is stream.error and broken.value.code == "upstream_error"
            assert isinstance(broken.value, SaaSLLMError) and stream.done and stream.usage is None
            assert "tok0 " in seen  # the tokens that arrived before the provider failed
            calls = (await client.get_costs(job_id)).breakdown
            assert len(calls) == 1 and calls[0].status == "error"
            await client.complete_job(job_id, status="failed", error_message="provider cut the stream")

        # A 400 is a ValidationError: here, an Idempotency-Key forced onto the streaming endpoint.
        async with gateway.client(headers={"Idempotency-Key": "forced"}) as forced:
            job_id = await forced.create_job("stream-400", idempotency_key=str(uuid.uuid4()))
            with pytest.raises(ValidationError) as refused:
                await forced.chat_stream(job_id, "hi").collect()
            assert refused.value.status == 400 and refused.value.code == "idempotency_not_supported"
            await forced.complete_job(job_id, status="cancelled", idempotency_key=str(uuid.uuid4()))

    run(main())


# --- usage, team, models ------------------------------------------------------------------------


def test_usage_team_and_models(gateway):
    async def main():
        async with gateway.client() as client:
            job_id = await client.create_job("usage-report")
            await client.chat(job_id, "count me", max_tokens=2)
            await client.complete_job(job_id)

            by_model = await client.get_usage(group_by="model")
            assert by_model.team_id == TEAM and by_model.group_by == "model"
            assert [row.key for row in by_model.results] == [MODEL]
            assert by_model.summary.calls >= 1 and by_model.summary.cost_usd > 0 and by_model.summary.credits_used >= 1
            by_type = await client.get_usage("job_type")
            row = next(r for r in by_type.results if r.key == "usage-report")
            assert (row.jobs, row.completed_jobs, row.calls, row.credits_used) == (1, 1, 1, 1)
            by_day = await client.get_usage()
            assert by_day.end_date.date().isoformat() in [row.key for row in by_day.results]
            assert by_day.summary.total_tokens == by_model.summary.total_tokens
            paged = await client.get_usage("job_type", limit=1)
            assert len(paged.results) == 1 and paged.count == by_type.count

            team = await client.get_team()
            assert team.team_id == TEAM and team.status == "active" and team.allowed_models == [MODEL]
            assert team.default_model == MODEL and team.markup_percent is None and team.keys
            assert team.credits_remaining == (await client.get_balance()).credits_remaining

            models = await client.list_models()
            assert models.count == 1 and models.results[0].alias_name == MODEL
            assert models.results[0].deployments is None  # team view: no deployments or prices
            assert (await client.get_model(MODEL)).status == "active"
            with pytest.raises(NotFoundError) as unknown:
                await client.get_model("no-such-model")
            assert unknown.value.code == "model_not_found"

    run(main())


# --- webhooks -----------------------------------------------------------------------------------


def test_webhooks(gateway, webhook_receiver):
    async def main():
        async with gateway.client() as client:
            created = await client.register_webhook(
                webhook_receiver.url, ["job.completed", "job.failed"], description="typed client test"
            )
            assert created.secret.startswith("whsec_") and created.team_id == TEAM
            assert created.events == ["job.completed", "job.failed"] and created.webhook_url == webhook_receiver.url
            fetched = await client.get_webhook(created.webhook_id)
            assert fetched.webhook_id == created.webhook_id and "secret" not in fetched.model_dump()
            assert created.webhook_id in [w.webhook_id for w in (await client.list_webhooks()).results]

            job_id = await client.create_job("hooked")
            await client.complete_job(job_id)
            received = await asyncio.to_thread(webhook_receiver.wait_for, 1)
            assert len(received) == 1
            event = verify_webhook(received[0]["body"], received[0]["headers"], created.secret)
            assert event["event"] == "job.completed" and event["job_id"] == job_id and event["team_id"] == TEAM
            deliveries = await client.list_deliveries(created.webhook_id)
            assert deliveries.count == 1
            delivery = deliveries.results[0]
            assert (delivery.event, delivery.status, delivery.attempts) == ("job.completed", "delivered", 1)
            assert delivery.event_id == event["event_id"] and delivery.last_status_code == 200

            with pytest.raises(ValidationError) as bad:
                await client.register_webhook("ftp://example.com/hook", ["job.completed"])
            assert bad.value.status == 422 and bad.value.errors[0]["loc"] == ["body", "webhook_url"]
            with pytest.raises(ValidationError):
                await client.register_webhook(webhook_receiver.url, ["job.exploded"])

            await client.delete_webhook(created.webhook_id)
            with pytest.raises(NotFoundError):
                await client.get_webhook(created.webhook_id)
            with pytest.raises(NotFoundError):
                await client.delete_webhook(created.webhook_id)  # a first attempt's 404 is an error
            assert created.webhook_id not in [w.webhook_id for w in (await client.list_webhooks()).results]

    run(main())


# --- typed errors -------------------------------------------------------------------------------


def test_typed_errors(gateway):
    async def main():
        recorder = Recorder()
        async with gateway.client(virtual_key="sk-" + "x" * 40, transport=recorder) as bad_key:
            with pytest.raises(AuthenticationError) as unauthorized:
                await bad_key.create_job("nope")
            assert unauthorized.value.status == 401 and unauthorized.value.request_id
            assert len(recorder.requests) == 1  # a 401 is never retried

        async with gateway.client() as client:
            with pytest.raises(NotFoundError) as missing:
                await client.get_job(str(uuid.uuid4()))
            assert missing.value.status == 404 and missing.value.code == "job_not_found"
            with pytest.raises(NotFoundError):
                await client.get_costs("not-a-uuid")

            job_id = await client.create_job("errors")
            with pytest.raises(NotFoundError) as model:
                await client.chat(job_id, "hi", model="no-such-model")
            assert model.value.code == "model_not_found" and "no-such-model" in model.value.detail
            with pytest.raises(ValidationError) as invalid:
                await client.chat(job_id, [])
            assert invalid.value.status == 422
            assert invalid.value.errors[0]["loc"] == ["body", "messages"]
            with pytest.raises(ValidationError) as bad_param:
                await client.chat(job_id, "hi", temperature=5)
            assert bad_param.value.errors[0]["loc"] == ["body", "temperature"]
            await client.complete_job(job_id, status="cancelled")

        async with gateway.client(team_id="globex-eng") as wrong_team:
            with pytest.raises(PermissionDeniedError) as mismatch:
                await wrong_team.create_job("x")
            assert mismatch.value.status == 403 and not isinstance(mismatch.value, InsufficientCreditsError)
            assert mismatch.value.detail == "API key does not belong to team 'globex-eng'"

        # Nothing listening: APIConnectionError after the retries (status None).
        async with SaaSLLMClient(
            base_url=f"http://127.0.0.1:{free_port()}",
            team_id=TEAM,
            virtual_key=gateway.team_key,
            max_retries=1,
            backoff_base=0.01,
        ) as nowhere:
            with pytest.raises(APIConnectionError) as down:
                await nowhere.get_balance()
            assert down.value.status is None and isinstance(down.value, SaaSLLMError)

    run(main())


def test_insufficient_credits_and_suspended_team(gateway):
    broke_key = gateway.new_team("broke-team", credits_allocated=0)
    paused_key = gateway.new_team("paused-team", credits_allocated=10)

    async def main():
        async with gateway.client(team_id="broke-team", virtual_key=broke_key) as broke:
            with pytest.raises(InsufficientCreditsError) as poor:
                await broke.create_job("x")
            assert isinstance(poor.value, PermissionDeniedError)
            assert (poor.value.status, poor.value.code, poor.value.detail) == (
                403,
                "insufficient_credits",
                "Insufficient credits",
            )
            assert (await broke.list_jobs()).count == 0

        async with gateway.client(team_id="paused-team", virtual_key=paused_key) as paused:
            job_id = await paused.create_job("in-flight")
            with gateway.admin() as admin:
                assert admin.post("/api/teams/paused-team/suspend").json()["status"] == "suspended"
            with pytest.raises(TeamSuspendedError) as suspended:
                await paused.create_job("x")
            assert isinstance(suspended.value, PermissionDeniedError)
            assert not isinstance(suspended.value, InsufficientCreditsError)
            assert (suspended.value.status, suspended.value.code) == (403, "team_suspended")
            with pytest.raises(PermissionDeniedError):
                await paused.chat(job_id, "hi")
            assert (await paused.get_balance()).credits_remaining == 9  # reads keep working
            assert (await paused.complete_job(job_id, status="cancelled")).status == "cancelled"
            with gateway.admin() as admin:
                assert admin.post("/api/teams/paused-team/resume").json()["status"] == "active"
            await paused.complete_job(await paused.create_job("after-resume"), status="cancelled")

    run(main())


# --- retries ------------------------------------------------------------------------------------


def test_rate_limit_retry_honours_retry_after(gateway):
    key = gateway.new_team("rl-team", credits_allocated=10)
    with gateway.admin() as admin:
        response = admin.put("/api/teams/rl-team", json={"rpm_limit": 1})
        assert response.status_code == 200 and response.json()["rpm_limit"] == 1

    async def main():
        async with gateway.client(team_id="rl-team", virtual_key=key) as client:
            job_id = await client.create_job("limited")
            first = await client.chat(job_id, "one", max_tokens=1)
            assert first.rate_limit.limit_requests == 1 and first.rate_limit.remaining_requests == 0

        # Retries exhausted: a RateLimitError carrying Retry-After.
        async with gateway.client(team_id="rl-team", virtual_key=key, max_retries=0) as no_retry:
            with pytest.raises(RateLimitError) as limited:
                await no_retry.chat(job_id, "two")
        error = limited.value
        assert error.status == 429 and error.code == "rate_limited" and error.detail.startswith("Rate limit exceeded")
        assert isinstance(error.retry_after, float) and 1 <= error.retry_after <= 60
        assert error.headers["x-ratelimit-limit-requests"] == "1"

        # A Retry-After longer than max_retry_wait is not waited for.
        async with gateway.client(team_id="rl-team", virtual_key=key, max_retries=3, max_retry_wait=0.5) as impatient:
            slept: list[float] = []

            async def no_sleep(delay: float) -> None:
                slept.append(delay)

            impatient._sleep = no_sleep
            with pytest.raises(RateLimitError):
                await impatient.chat(job_id, "three")
            assert slept == []

        # Retried after exactly Retry-After; meanwhile the limit is lifted, so the retry succeeds.
        async with gateway.client(team_id="rl-team", virtual_key=key, max_retries=2) as patient:
            waits: list[float] = []

            async def lift_limit_instead_of_sleeping(delay: float) -> None:
                waits.append(delay)
                async with httpx.AsyncClient(
                    base_url=gateway.url, headers={"Authorization": f"Bearer {gateway.admin_key}"}
                ) as admin:
                    (await admin.put("/api/teams/rl-team", json={"rpm_limit": None})).raise_for_status()

            patient._sleep = lift_limit_instead_of_sleeping
            result = await patient.chat(job_id, "four", max_tokens=1)
            assert result.usage.completion_tokens == 1
            assert len(waits) == 1 and 1 <= waits[0] <= 60 and waits[0] == float(int(waits[0]))  # the header value
            done = await patient.complete_job(job_id)
            assert done.costs.total_calls == 2  # the refused attempts left no call

    run(main())


def test_backoff_with_jitter_on_5xx_and_connection_errors():
    """Transport-level (no server needed): 502/503/504 and dropped connections are retried with
    capped exponential backoff and jitter; a 500 or a 4xx is not."""
    script = [httpx.ConnectError("refused"), 503, 502, 504, 200]
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        step = script.pop(0)
        if isinstance(step, Exception):
            raise step
        if step == 200:
            return httpx.Response(
                200,
                json={
                    "job_id": "j",
                    "team_id": TEAM,
                    "job_type": "t",
                    "status": "pending",
                    "created_at": "2026-01-01T00:00:00Z",
                    "metadata": {},
                },
            )
        return httpx.Response(step, json={"detail": "upstream trouble", "code": "upstream_error"})

    async def main():
        client = SaaSLLMClient(
            base_url="http://gateway.invalid",
            team_id=TEAM,
            virtual_key="sk-test",
            max_retries=4,
            backoff_base=0.1,
            backoff_max=0.3,
            transport=httpx.MockTransport(handler),
        )
        waits: list[float] = []

        async def record(delay: float) -> None:
            waits.append(delay)

        client._sleep = record
        async with client:
            assert await client.create_job("t") == "j"
        assert len(waits) == 4
        for attempt, wait in enumerate(waits):
            ceiling = min(0.3, 0.1 * 2**attempt)
            assert ceiling / 2 <= wait <= ceiling
        keys = {request.headers["Idempotency-Key"] for request in seen}
        assert len(seen) == 5 and len(keys) == 1 and uuid.UUID(keys.pop())  # one key for the logical POST

        script[:] = [500, 200]
        async with SaaSLLMClient(
            base_url="http://gateway.invalid",
            team_id=TEAM,
            virtual_key="sk-test",
            transport=httpx.MockTransport(handler),
        ) as client:
            with pytest.raises(ServerError) as server_error:
                await client.get_balance()
            assert server_error.value.status == 500 and script == [200]

    run(main())


def test_idempotent_retry_after_a_dropped_connection(gateway):
    job_type = f"idem-{uuid.uuid4().hex[:8]}"

    async def main():
        recorder = Recorder(drop=creates)
        async with gateway.client(transport=recorder, backoff_base=0.01) as client:
            job_id = await client.create_job(job_type)
        status, body = recorder.dropped[0]
        assert status == 201 and json.loads(body)["job_id"] == job_id  # the server did create it…
        sent = [r for r in recorder.requests if creates(r)]
        assert len(sent) == 2 and sent[0].headers["Idempotency-Key"] == sent[1].headers["Idempotency-Key"]
        assert recorder.responses[-1].headers["Idempotent-Replayed"] == "true"  # …and the retry replayed it

        async with gateway.client() as client:
            listed = await client.list_jobs(job_type=job_type)
            assert listed.count == 1 and listed.results[0].job_id == job_id  # exactly one new job

            # The same for an LLM call and a completion: one call, one charge.
            calls = Recorder(drop=lambda r: r.method == "POST" and r.url.path.endswith(("/llm-call", "/complete")))
            async with gateway.client(transport=calls, backoff_base=0.01) as flaky:
                result = await flaky.chat(job_id, "once", max_tokens=1)
                calls.dropped.clear()
                done = await flaky.complete_job(job_id)
            assert (await client.get_job(job_id)).total_calls == 1 and done.calls[0].call_id == result.call_id
            charges = await client.get_transactions(job_id=job_id, kind="charge")
            assert charges.count == 1 and done.credits_charged == 1

            # A caller-supplied key makes a retry safe across processes too.
            key = f"create-{job_type}"
            assert await client.create_job(job_type, idempotency_key=key) == await client.create_job(
                job_type, idempotency_key=key
            )
            with pytest.raises(ValidationError) as mismatch:
                await client.create_job(job_type + "-other", idempotency_key=key)
            assert mismatch.value.code == "idempotency_mismatch"
            assert (await client.list_jobs(job_type=job_type)).count == 2

    run(main())


# --- helpers on top of the endpoints --------------------------------------------------------------


def test_job_context_manager_and_admin_key(gateway):
    async def main():
        async with gateway.client() as client:
            async with client.job("ctx", metadata={"k": "v"}) as run_:
                answer = await run_.chat("hi", max_tokens=2)
                streamed = await run_.chat_stream("hey", max_tokens=2).collect()
            assert run_.completion.status == "completed" and run_.completion.costs.total_calls == 2
            assert answer.call_id != streamed.call_id

            with pytest.raises(RuntimeError):
                async with client.job("ctx-fail") as failing:
                    raise RuntimeError("parser crashed")
            job = await client.get_job(failing.job_id)
            assert job.status == "failed" and job.error_message == "RuntimeError: parser crashed"

        # An admin key acts on the client's team_id and also sees provider costs.
        async with gateway.client(virtual_key=gateway.admin_key) as admin:
            assert (await admin.get_balance()).team_id == TEAM
            costs = await admin.get_costs(run_.job_id)
            assert costs.provider_cost_usd is not None and costs.breakdown[0].resolved_model

    run(main())


def test_sync_client(gateway):
    with SyncSaaSLLMClient(base_url=gateway.url, team_id=TEAM, virtual_key=gateway.team_key) as client:
        job_id = client.create_job("sync", metadata={"mode": "sync"})
        result = client.chat(job_id, "hi", max_tokens=2)
        assert result.content == "tok0 tok1 "
        with client.chat_stream(job_id, "hey", max_tokens=3) as stream:
            text = "".join(chunk.content for chunk in stream)
        assert text == stream.content == "tok0 tok1 tok2 " and stream.usage.completion_tokens == 3
        assert stream.cost_usd > 0 and stream.call_id
        done = client.complete_job(job_id)
        assert done.costs.total_calls == 2 and done.credits_charged == 1
        assert client.get_job(job_id).status == "completed"
        assert client.get_balance().credits_remaining > 0
        with pytest.raises(NotFoundError):
            client.get_job(str(uuid.uuid4()))


# --- the examples ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "script, expected",
    [
        ("examples/basic_usage.py", ["Created job", "call 1", "call 2", "Job completed: 2 calls", "Credits remaining"]),
        ("examples/streaming.py", ["Assistant: tok0 tok1", "usage:", "cost:", "Job completed: 2 calls"]),
    ],
)
def test_examples_run(gateway, script, expected):
    env = {**os.environ, "SAAS_LLM_BASE_URL": gateway.url, "SAAS_LLM_KEY": gateway.team_key}
    done = subprocess.run([sys.executable, script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    for text in expected:
        assert text in done.stdout, done.stdout
