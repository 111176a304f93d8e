"""POST /api/jobs/{id}/llm-call-stream (SPEC §5.2): SSE framing, errors before and after the first
byte, and — against a real uvicorn server — a client that disconnects mid-stream.

In-process tests read the stream with the `sse_post` fixture (one event loop, see conftest). The
live tests boot the gateway with uvicorn on a file SQLite database seeded by `manage.py seed_demo`,
and read that database directly to check the books.
"""

import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from billing import money
from jobs.models import Job, LLMCall
from models_registry.models import Deployment
from tenants import services as tenant_services
from tenants.models import TeamStatus
from tests.conftest import make_alias, make_tenant, sse_events
from tests.live import ROOT, free_port

pytestmark = pytest.mark.django_db(transaction=True)

HELLO = [{"role": "user", "content": "Hello"}]
STREAM_PATH = "/api/jobs/{}/llm-call-stream"


def new_job(tenant) -> str:
    response = tenant.api.post("/api/jobs/create", {"job_type": "stream"})
    assert response.status_code == 201, response.json()
    return response.json()["job_id"]


# --- framing -------------------------------------------------------------------------------------


def test_stream_framing(llm_team, mock, sse_post):
    job_id = new_job(llm_team)

    response, body = sse_post(llm_team.key, STREAM_PATH.format(job_id), {"messages": HELLO, "purpose": "chat"})

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/event-stream")
    assert response["Cache-Control"] == "no-cache"
    assert response["X-Accel-Buffering"] == "no"
    assert float(response["X-Gateway-Overhead-Ms"]) >= 0
    events = sse_events(body)  # every event is `data: <json>\n\n` and parses
    assert events[-1] == "[DONE]"
    chunks, final = events[:-2], events[-2]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    for chunk in chunks:
        assert chunk["object"] == "chat.completion.chunk"
        assert chunk["model"] == "chat-fast"  # the alias, never the provider model
        assert len(chunk["choices"]) == 1 and "usage" not in chunk
    text = "".join(chunk["choices"][0]["delta"].get("content") or "" for chunk in chunks)
    assert text == "".join(f"tok{i} " for i in range(20))
    assert [chunk["choices"][0]["finish_reason"] for chunk in chunks].count("stop") == 1
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    # The last chunk before [DONE]: empty choices, usage and our ids.
    assert final["choices"] == []
    assert final["object"] == "chat.completion.chunk"
    assert final["model"] == "chat-fast"
    assert final["usage"] == {"prompt_tokens": 4, "completion_tokens": 20, "total_tokens": 24}
    assert final["job_id"] == job_id
    assert final["cost_usd"] == 0.000044
    assert "resolved_model" not in final
    row = LLMCall.objects.get(id=final["call_id"])
    assert (str(row.job_id), row.status, row.stream, row.purpose) == (job_id, "success", True, "chat")
    assert (row.prompt_tokens, row.completion_tokens, row.cost_nanos, row.finish_reason) == (4, 20, 44_000, "stop")
    assert row.deployment_id == Deployment.objects.get(alias_id="chat-fast").id
    assert row.ttft_ms is not None and row.ttft_ms <= row.latency_ms
    job = Job.objects.get(id=job_id)
    assert (job.status, job.total_calls, job.successful_calls, job.total_tokens) == ("in_progress", 1, 1, 24)


def test_stream_with_expose_models_adds_resolved_model(mock, chat_alias, sse_post):
    team = make_tenant("acme-corp", "acme", access_groups=["standard"], default_model="chat-fast", expose_models=True)
    job_id = new_job(team)

    _, body = sse_post(team.key, STREAM_PATH.format(job_id), {"messages": HELLO})

    final = sse_events(body)[-2]
    assert (final["model"], final["resolved_model"]) == ("chat-fast", "openai/mock-model")


def test_stream_tool_call(llm_team, mock, sse_post):
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}]
    job_id = new_job(llm_team)
    body = {"messages": [{"role": "user", "content": "find it [[mock:tool=lookup]]"}], "tools": tools}

    response, raw = sse_post(llm_team.key, STREAM_PATH.format(job_id), body)

    events = sse_events(raw)
    calls = [call for event in events[:-2] for call in event["choices"][0]["delta"].get("tool_calls") or []]
    assert [call["function"]["name"] for call in calls] == ["lookup"]
    assert events[-3]["choices"][0]["finish_reason"] == "tool_calls"
    assert LLMCall.objects.get(job_id=job_id).finish_reason == "tool_calls"


def test_stream_max_tokens_is_forwarded(llm_team, mock, sse_post):
    job_id = new_job(llm_team)

    _, raw = sse_post(llm_team.key, STREAM_PATH.format(job_id), {"messages": HELLO, "max_tokens": 3})

    events = sse_events(raw)
    assert events[-2]["usage"]["completion_tokens"] == 3
    assert events[-3]["choices"][0]["finish_reason"] == "length"


# --- errors after the first byte -----------------------------------------------------------------


def test_stream_cut_midway_ends_with_an_error_event_and_done(llm_team, mock, sse_post):
    make_alias("chat-cut", mock.url, deployments=[{"litellm_model": "openai/mock-cut"}])
    job_id = new_job(llm_team)

    response, raw = sse_post(llm_team.key, STREAM_PATH.format(job_id), {"model": "chat-cut", "messages": HELLO})

    assert response.status_code == 200  # the stream had started
    events = sse_events(raw)
    assert events[-1] == "[DONE]"
    error = events[-2]
    assert set(error) == {"error"}
    assert set(error["error"]) == {"message", "type", "code"}
    assert all(isinstance(value, str) and value for value in error["error"].values())
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all("usage" not in event for event in events[:-1])  # no usage chunk after a failure
    row = LLMCall.objects.get(job_id=job_id)
    assert (row.status, row.stream, row.model_alias) == ("error", True, "chat-cut")
    assert row.error and row.error_code == error["error"]["code"]
    job = Job.objects.get(id=job_id)
    assert (job.status, job.total_calls, job.failed_calls, job.billable_calls) == ("in_progress", 1, 1, 0)


def test_provider_failure_before_the_first_byte_is_a_json_error(llm_team, mock, sse_post, settings):
    settings.SAAS_LLM_NUM_RETRIES = 0  # retries are test_llm_calls.py's business; litellm's backoff is slow
    make_alias("chat-500", mock.url, deployments=[{"litellm_model": "openai/mock-fail-500"}])
    job_id = new_job(llm_team)

    response, raw = sse_post(llm_team.key, STREAM_PATH.format(job_id), {"model": "chat-500", "messages": HELLO})

    assert response.status_code == 502
    assert response["Content-Type"] == "application/json"
    assert json.loads(raw) == {
        "detail": "The provider returned an invalid or failed response",
        "code": "upstream_error",
    }
    row = LLMCall.objects.get(job_id=job_id)
    assert (row.status, row.stream, row.error_code) == ("error", True, "upstream_error")


# --- errors before the first byte are plain JSON responses ---------------------------------------


def test_stream_refusals_are_json_with_their_status(llm_team, llm_other_team, mock, sse_post):
    make_alias("chat-premium", mock.url, group="premium")
    job_id = new_job(llm_team)
    finished = new_job(llm_team)
    assert llm_team.api.post(f"/api/jobs/{finished}/complete", {"status": "completed"}).status_code == 200
    path = STREAM_PATH.format(job_id)
    cases = [
        (None, path, {"messages": HELLO}, None, 401, "detail"),
        (llm_other_team.key, path, {"messages": HELLO}, None, 404, {"detail": "Job not found", "code": "job_not_found"}),
        (llm_team.key, STREAM_PATH.format("nope"), {"messages": HELLO}, None, 404, {"detail": "Job not found", "code": "job_not_found"}),
        (llm_team.key, path, {"messages": HELLO, "model": "missing"}, None, 404, {"detail": "Model alias 'missing' not found", "code": "model_not_found"}),
        (llm_team.key, path, {"messages": HELLO, "model": "chat-premium"}, None, 403, {"detail": "Team is not allowed to use model 'chat-premium'", "code": "model_not_allowed"}),
        (llm_team.key, STREAM_PATH.format(finished), {"messages": HELLO}, None, 409, {"detail": "Job is already completed", "code": "job_already_finished"}),
        (llm_team.key, path, {"messages": []}, None, 422, "list"),
        (llm_team.key, path, '{"messages": [', None, 400, "detail"),
        (llm_team.key, path, {"messages": HELLO}, {"Idempotency-Key": "k1"}, 400, "detail"),
    ]  # fmt: skip
    for key, url, body, headers, status, expected in cases:
        response, raw = sse_post(key, url, body, headers)
        assert response.status_code == status, (url, body, raw)
        assert response["Content-Type"] == "application/json", raw
        payload = json.loads(raw)
        if expected == "list":
            assert payload["detail"][0]["loc"][0] == "body"
        elif expected == "detail":
            assert isinstance(payload["detail"], str)
        else:
            assert payload == expected
    assert mock.requests == 0
    assert LLMCall.objects.count() == 0

    tenant_services.set_team_status(team=llm_team.team, status=TeamStatus.SUSPENDED)
    response, raw = sse_post(llm_team.key, path, {"messages": HELLO})
    assert response.status_code == 403
    assert json.loads(raw) == {"detail": "Team is suspended", "code": "team_suspended"}
    assert mock.requests == 0


def test_stream_timeout_before_the_first_byte_is_504(llm_team, mock, sse_post):
    make_alias("chat-hang", mock.url, deployments=[{"litellm_model": "openai/mock-hang", "timeout_s": 0.5}])
    job_id = new_job(llm_team)

    response, raw = sse_post(llm_team.key, STREAM_PATH.format(job_id), {"model": "chat-hang", "messages": HELLO})

    assert response.status_code == 504
    assert json.loads(raw) == {"detail": "The provider did not answer in time", "code": "upstream_timeout"}
    row = LLMCall.objects.get(job_id=job_id)
    assert (row.status, row.stream, row.error_code) == ("error", True, "upstream_timeout")


# --- a real server: client disconnects, concurrency ----------------------------------------------


@dataclass
class LiveGateway:
    url: str
    db_path: Path
    admin_key: str
    team_key: str

    def client(self, key: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=30)

    def query(self, sql: str, *params) -> list[tuple]:
        with sqlite3.connect(self.db_path, timeout=20) as conn:
            return conn.execute(sql, params).fetchall()


class _Boot:
    """The live gateway's processes, started early so they boot while the in-process tests run."""

    def __init__(self, mock_url: str, tmp: Path):
        self.db_path, self.keys_file = tmp / "live.sqlite3", tmp / "keys.json"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # REDIS_URL="" keeps the server off the Redis db the test process clears between tests.
        env = {
            **os.environ, "PYTHONUNBUFFERED": "1", "SECRET_KEY": "live-test-secret", "DEBUG": "0",
            "DATABASE_URL": f"sqlite:///{self.db_path}", "REDIS_URL": "",
        }  # fmt: skip
        seed = (
            "from django.core.management import call_command; call_command('migrate', verbosity=0); "
            f"call_command('seed_demo', mock_port={mock_url.rsplit(':', 1)[1]}, keys_file={str(self.keys_file)!r})"
        )
        # Migrate and seed while uvicorn boots (its /health needs no table); both take seconds.
        self.seeding = subprocess.Popen(
            [sys.executable, "manage.py", "shell", "-c", seed], cwd=ROOT, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.log = tempfile.TemporaryFile()
        self.server = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "saas_llm.asgi:application", "--port", str(self.port),
             "--log-level", "warning"],
            cwd=ROOT, env=env, stdout=self.log, stderr=self.log,
        )  # fmt: skip

    def ready(self, timeout: float = 90.0) -> "LiveGateway":
        output, _ = self.seeding.communicate(timeout=timeout)
        assert self.seeding.returncode == 0, output.decode(errors="replace")
        deadline = time.monotonic() + timeout
        while True:
            assert self.server.poll() is None, self.output()
            try:
                if httpx.get(self.url + "/health", timeout=0.5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, self.output()
            time.sleep(0.05)
        keys = json.loads(self.keys_file.read_text())
        return LiveGateway(self.url, self.db_path, keys["admin_key"], keys["team_key"])

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def stop(self) -> None:
        for process in (self.seeding, self.server):
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=5)


@pytest.fixture(scope="module", autouse=True)
def _live_boot(mock_upstream, tmp_path_factory):
    boot = _Boot(mock_upstream.url, tmp_path_factory.mktemp("live-gateway"))
    yield boot
    boot.stop()


@pytest.fixture(scope="module")
def live(_live_boot) -> LiveGateway:
    """uvicorn serving saas_llm.asgi on a file SQLite DB, seeded (seed_demo) against the session's mock."""
    return _live_boot.ready()


def wait_for_call(live: LiveGateway, job_id: str, timeout: float = 10.0) -> dict:
    """The job's single LLMCall row, once the server has written it (SQLite keeps UUIDs as hex)."""
    columns = "status, error_code, prompt_tokens, completion_tokens, total_tokens, cost_nanos, stream"
    deadline = time.monotonic() + timeout
    while True:
        rows = live.query(f"SELECT {columns} FROM jobs_llmcall WHERE job_id = ?", uuid.UUID(job_id).hex)
        if rows:
            assert len(rows) == 1, rows
            return dict(zip([name.strip() for name in columns.split(",")], rows[0], strict=True))
        assert time.monotonic() < deadline, "the cancelled call was never recorded"
        time.sleep(0.05)


@pytest.mark.live
@pytest.mark.parametrize("budget_mode", ["usd", "tokens"])
def test_client_disconnect_records_a_cancelled_call_that_is_charged(live, mock, budget_mode):
    admin, team = live.client(live.admin_key), live.client(live.team_key)
    config = {"budget_mode": budget_mode, "credits_per_dollar": 1000, "tokens_per_credit": 10}
    assert admin.put("/api/teams/acme-corp", json=config).status_code == 200
    job_id = team.post("/api/jobs/create", json={"job_type": "story"}).json()["job_id"]
    slow = {"messages": [{"role": "user", "content": "a long story [[mock:chunks=200]] [[mock:chunk_delay=20]]"}]}

    events = []
    with team.stream("POST", f"/api/jobs/{job_id}/llm-call-stream", json=slow) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[len("data: ") :]))
            if len(events) == 3:  # the role chunk and two tokens, then hang up
                break

    row = wait_for_call(live, job_id)
    assert (row["status"], row["error_code"], row["stream"]) == ("cancelled", "client_disconnected", 1)
    assert row["prompt_tokens"] > 0
    assert 0 < row["completion_tokens"] < 200  # the tokens actually produced, counted
    assert row["cost_nanos"] > 0
    [upstream] = [entry for entry in mock.stats()["served"] if entry["model"] == "demo-model"]
    assert upstream["disconnected"] is True and upstream["completed"] is False  # the provider request was cancelled
    job = live.query("SELECT status, cancelled_calls, billable_calls FROM jobs_job WHERE id = ?", uuid.UUID(job_id).hex)
    assert job == [("in_progress", 1, 1)]

    done = team.post(f"/api/jobs/{job_id}/complete", json={"status": "completed"})

    assert done.status_code == 200, done.text
    expected = money.job_charge_units(
        budget_mode=budget_mode,
        credits_per_job=1,
        credits_per_dollar=1000,
        tokens_per_credit=10,
        cost_nanos=row["cost_nanos"],
        total_tokens=row["total_tokens"],
    )
    assert expected > 0
    assert done.json()["calls"][0]["status"] == "cancelled"
    assert done.json()["credits_charged"] == float(money.units_to_credits(expected))
    ledger = live.query(
        "SELECT kind, amount_units FROM billing_ledgerentry WHERE job_id = ? ORDER BY id", uuid.UUID(job_id).hex
    )
    assert ledger == [("charge", -expected)]


@pytest.mark.live
def test_concurrent_calls_against_a_live_server_roll_up_exactly(live, mock):
    admin, team = live.client(live.admin_key), live.client(live.team_key)
    assert admin.put("/api/teams/acme-corp", json={"budget_mode": "job"}).status_code == 200
    job_id = team.post("/api/jobs/create", json={"job_type": "fan-out"}).json()["job_id"]
    lock = threading.Lock()
    clients: list[httpx.Client] = []

    def one(index: int) -> int:
        client = live.client(live.team_key)
        with lock:
            clients.append(client)
        body = {"messages": [{"role": "user", "content": "word " * index + f"[[mock:chunks={index + 1}]]"}]}
        return client.post(f"/api/jobs/{job_id}/llm-call", json=body).status_code

    with ThreadPoolExecutor(max_workers=20) as pool:
        statuses = list(pool.map(one, range(20)))
    for client in clients:
        client.close()

    assert statuses == [200] * 20
    hex_id = uuid.UUID(job_id).hex
    sums = live.query(
        "SELECT COUNT(*), SUM(prompt_tokens), SUM(completion_tokens), SUM(total_tokens), SUM(cost_nanos),"
        " SUM(latency_ms) FROM jobs_llmcall WHERE job_id = ? AND status = 'success'",
        hex_id,
    )[0]
    job = live.query(
        "SELECT total_calls, prompt_tokens, completion_tokens, total_tokens, cost_nanos, total_latency_ms"
        " FROM jobs_job WHERE id = ?",
        hex_id,
    )[0]
    assert job == sums
    assert sums[0] == 20
    assert sums[2] == sum(range(1, 21))  # each call produced index + 1 tokens
