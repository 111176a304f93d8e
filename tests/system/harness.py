"""The full-stack fault run's moving parts: the process stack, a faulty webhook receiver, the seeded
plan of jobs and calls, and the async load generator (issue 7 §2).

Everything here is deterministic given `SEED` except the interleaving of concurrent requests (and so
which upstream request draws one of the mock's random 500s); the assertions in test_fault_run.py only
use invariants that hold whatever the interleaving.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from tests.live import ROOT, ServerProcess, start_mock_upstream

SEED = 20260117

# --- the scenario's size and faults ----------------------------------------------------------------

N_JOBS = 200
START_SPREAD_S = 6.0  # job start times are spread over this window (seeded)
STREAM_SHARE = 1 / 3
P_FAULT_500 = 0.03  # `[[mock:fault=500]]`: every attempt fails → 502 after the Router's retries
P_FAULT_HANG = 0.03  # `[[mock:fault=hang]]`: the deployment's timeout → 504
P_DISCONNECT = 0.12  # of streams: the client hangs up after a few chunks
P_ABORT = 0.04  # of non-stream calls: the client gives up while the gateway waits for a slow provider
MOCK_RATE_500 = 0.08  # random upstream 500s on top, retried by the Router (mostly invisible to clients)
MOCK_LATENCY_MS = 10
DEPLOYMENT_TIMEOUT_S = 2.0
NUM_RETRIES = 2  # SAAS_LLM_NUM_RETRIES given to the gateway
DISCONNECT_AFTER_CHUNKS = 4
DISCONNECT_CHUNKS, DISCONNECT_CHUNK_DELAY_MS = 200, 20  # a 4 s stream: the client hangs up long before its end
ABORT_LATENCY_MS = 1800  # < DEPLOYMENT_TIMEOUT_S: the provider would answer, but the client is gone first
P_WEBHOOK_FAIL = 0.30  # of job events: the receiver fails the first attempt (a quarter of them twice)
WEBHOOK_RETRY_SCHEDULE = "1,1,2,2,3,3,3"
KILL_WORKER_AT = 0.35  # share of jobs finished when the Celery worker is SIGKILLed (then restarted)
PARALLEL_LIMIT = 4  # max_parallel_requests of the parallel-limited team
BASE_WORDS = 6  # a call's prompt has BASE_WORDS + index words, so the mock's prompt_tokens name the call

PRICES = {
    # alias: (litellm model on the mock, input USD/token, output USD/token)
    "sys-chat": ("openai/mock-model", Decimal("0.000001"), Decimal("0.000002")),
    "sys-chat-pro": ("openai/mock-pro", Decimal("0.000003"), Decimal("0.000015")),
}


@dataclass(frozen=True)
class TeamSpec:
    team_id: str
    org_id: str
    budget_mode: str
    credits: int
    aliases: tuple[str, ...]
    config: dict = field(default_factory=dict)
    may_run_out: bool = False  # usage-mode team with a small balance: 403 insufficient_credits expected
    parallel_limited: bool = False  # max_parallel_requests set: 429 rate_limited expected

    @property
    def markup(self) -> Decimal:
        return Decimal(str(self.config.get("markup_percent", 0)))


TEAMS = (
    TeamSpec("sys-job", "sys-org-a", "job", 1000, ("sys-chat",), {"credits_per_job": 1}),
    TeamSpec(
        "sys-job-parallel",
        "sys-org-a",
        "job",
        1000,
        ("sys-chat", "sys-chat-pro"),
        {"credits_per_job": 2.5, "max_parallel_requests": PARALLEL_LIMIT},
        parallel_limited=True,
    ),
    TeamSpec(
        "sys-usd",
        "sys-org-b",
        "usd",
        1000,
        ("sys-chat", "sys-chat-pro"),
        {"credits_per_dollar": 1000, "markup_percent": 25, "min_reservation": 0.5},
    ),
    TeamSpec("sys-tokens", "sys-org-b", "tokens", 1000, ("sys-chat",), {"tokens_per_credit": 1000}),
    TeamSpec(
        "sys-tight",
        "sys-org-b",
        "tokens",
        20,
        ("sys-chat",),
        {"tokens_per_credit": 500, "min_reservation": 1, "low_balance_threshold": 8},
        may_run_out=True,
    ),
)
TEAM_BY_ID = {team.team_id: team for team in TEAMS}


# --- the plan -------------------------------------------------------------------------------------


@dataclass
class CallPlan:
    index: int  # global and unique: the prompt has BASE_WORDS + index words
    alias: str
    stream: bool
    fault: str | None  # None | "500" | "hang" | "disconnect" | "abort"
    chunks: int | None = None
    max_tokens: int | None = None
    latency_ms: int | None = None

    @property
    def purpose(self) -> str:
        return f"c{self.index}"

    @property
    def prompt_words(self) -> int:
        return BASE_WORDS + self.index

    def directives(self) -> list[str]:
        out = []
        if self.fault in ("500", "hang"):
            out.append(f"[[mock:fault={self.fault}]]")
        if self.fault == "disconnect":
            out += [f"[[mock:chunks={DISCONNECT_CHUNKS}]]", f"[[mock:chunk_delay={DISCONNECT_CHUNK_DELAY_MS}]]"]
        elif self.chunks is not None:
            out.append(f"[[mock:chunks={self.chunks}]]")
        if self.fault == "abort":
            out.append(f"[[mock:latency={ABORT_LATENCY_MS}]]")
        elif self.latency_ms is not None:
            out.append(f"[[mock:latency={self.latency_ms}]]")
        return out

    def upstream_duration_s(self) -> float:
        """How long the mock takes to answer this call in full (latency + chunk delays)."""
        if self.fault == "disconnect":
            return (MOCK_LATENCY_MS + DISCONNECT_CHUNKS * DISCONNECT_CHUNK_DELAY_MS) / 1000
        if self.fault == "abort":
            return ABORT_LATENCY_MS / 1000
        return (self.latency_ms or MOCK_LATENCY_MS) / 1000

    def content(self) -> str:
        words = [*self.directives(), "call", f"#{self.index}"]
        assert len(words) <= BASE_WORDS
        return " ".join(words + ["w"] * (self.prompt_words - len(words)))

    def body(self) -> dict:
        body: dict[str, Any] = {
            "model": self.alias,
            "messages": [{"role": "user", "content": self.content()}],
            "purpose": self.purpose,
        }
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        return body


@dataclass
class JobPlan:
    index: int
    team: TeamSpec
    calls: list[CallPlan]
    final_status: str  # completed | failed | cancelled
    fan_out: bool  # calls run concurrently instead of one after the other
    start_after_s: float
    webhook_failures: int  # first attempts the receiver answers with an error
    webhook_fail_status: int
    probe: bool = False


def make_plan(seed: int = SEED) -> list[JobPlan]:
    rng = random.Random(seed)
    jobs: list[JobPlan] = []
    index = 0
    for j in range(N_JOBS):
        team = TEAMS[j % len(TEAMS)]
        n_calls = 0 if rng.random() < 0.02 else rng.choice((1, 2, 3, 3, 4, 5))
        calls = []
        for _ in range(n_calls):
            stream = rng.random() < STREAM_SHARE
            u = rng.random()
            if u < P_FAULT_500:
                fault = "500"
            elif u < P_FAULT_500 + P_FAULT_HANG:
                fault = "hang"
            elif stream and rng.random() < P_DISCONNECT:
                fault = "disconnect"
            elif not stream and rng.random() < P_ABORT:
                fault = "abort"
            else:
                fault = None
            chunks = rng.randint(1, 40) if rng.random() < 0.3 else None
            max_tokens = rng.randint(3, 15) if fault != "disconnect" and rng.random() < 0.2 else None
            calls.append(CallPlan(index, rng.choice(team.aliases), stream, fault, chunks, max_tokens))
            index += 1
        v = rng.random()
        final = "completed" if v < 0.8 else "failed" if v < 0.9 else "cancelled"
        w = rng.random()
        failures = 0 if w >= P_WEBHOOK_FAIL else 2 if w < P_WEBHOOK_FAIL / 4 else 1
        jobs.append(
            JobPlan(
                index=j,
                team=team,
                calls=calls,
                final_status=final,
                fan_out=rng.random() < 0.25,
                start_after_s=rng.uniform(0, START_SPREAD_S),
                webhook_failures=failures,
                webhook_fail_status=rng.choice((500, 503)),
            )
        )
    return jobs


def make_probe(next_index: int) -> JobPlan:
    """After the run: `PARALLEL_LIMIT` simultaneous slow calls on the parallel-limited team must all be
    admitted — a slot leaked by a disconnected or aborted call would turn one of them into a 429."""
    team = next(team for team in TEAMS if team.parallel_limited)
    calls = [
        CallPlan(next_index + i, "sys-chat", stream=bool(i % 2), fault=None, latency_ms=400)
        for i in range(PARALLEL_LIMIT)
    ]
    return JobPlan(N_JOBS, team, calls, "completed", True, 0.0, 0, 200, probe=True)


# --- processes --------------------------------------------------------------------------------------


class Proc:
    """A subprocess whose output goes to a temporary file; `wait_for` a log line, `kill` = SIGKILL."""

    def __init__(self, name: str, args: list[str], env: dict[str, str]):
        self.name = name
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            args,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **env},
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def wait_for(self, text: str, count: int = 1, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while self.output().count(text) < count:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited early (rc={self.proc.returncode}):\n{self.output()[-5000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: no {text!r} after {timeout}s:\n{self.output()[-5000:]}")
            time.sleep(0.1)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


class Stack:
    """Mock upstream, `uvicorn --workers 2`, a Celery worker and Celery beat on Redis, all on the test DB."""

    def __init__(self, *, database_url: str, redis_url: str, tmp: Path):
        self.tmp = tmp
        self.env = {
            "DJANGO_SETTINGS_MODULE": "saas_llm.settings",
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "CELERY_BROKER_URL": redis_url,
            "SECRET_KEY": "system-fault-run-secret-key-0123456789abcdef",
            "DEBUG": "0",
            "SAAS_LLM_WEBHOOK_ALLOW_PRIVATE": "1",
            "SAAS_LLM_WEBHOOK_RETRY_SCHEDULE": WEBHOOK_RETRY_SCHEDULE,
            "SAAS_LLM_NUM_RETRIES": str(NUM_RETRIES),
            "LOG_LEVEL": "WARNING",
        }
        self.mock: ServerProcess | None = None
        self.gateway: ServerProcess | None = None
        self.worker: Proc | None = None
        self.dead_workers: list[Proc] = []
        self.beat: Proc | None = None
        try:
            # Celery boots while the mock and uvicorn do (each takes seconds of CPU).
            self.worker = self._spawn_worker()
            self.beat = Proc(
                "celery beat",
                [sys.executable, "-m", "celery", "-A", "saas_llm", "beat", "--loglevel", "INFO"]
                + ["-s", str(tmp / "beat-schedule"), "--pidfile", str(tmp / "beat.pid")],
                {**self.env, "LOG_LEVEL": "INFO"},
            )
            self.mock = start_mock_upstream(
                "--rate-500", str(MOCK_RATE_500), "--seed", str(SEED), "--latency-ms", str(MOCK_LATENCY_MS)
            )
            self.gateway = ServerProcess(
                [sys.executable, "-m", "uvicorn", "saas_llm.asgi:application", "--host", "127.0.0.1"]
                + ["--port", "{port}", "--workers", "2", "--log-level", "info", "--no-access-log"]
                + ["--timeout-keep-alive", "30"],
                env=self.env,
                timeout=120,
            )
            deadline = time.monotonic() + 120
            while self.gateway.output().count("Application startup complete") < 2:  # both workers serve
                if time.monotonic() > deadline:
                    raise RuntimeError(f"uvicorn workers did not start:\n{self.gateway.output()[-5000:]}")
                time.sleep(0.1)
            self.worker.wait_for(" ready.")
            self.beat.wait_for("beat: Starting")
        except BaseException:
            self.stop()
            raise

    def _spawn_worker(self) -> Proc:
        return Proc(
            "celery worker",
            [sys.executable, "-m", "celery", "-A", "saas_llm", "worker", "--pool", "solo", "--concurrency", "1"]
            + ["-Q", "celery", "--loglevel", "INFO", "--without-gossip", "--without-mingle", "--without-heartbeat"]
            + ["-n", f"system-{uuid.uuid4().hex[:8]}@%h"],
            {**self.env, "LOG_LEVEL": "INFO"},
        )

    def crash_and_restart_worker(self, down_for_s: float = 1.0) -> None:
        """SIGKILL the Celery worker (no graceful shutdown: reserved and scheduled tasks are lost with
        it), keep it down for a moment while jobs keep completing, then start a new one."""
        assert self.worker is not None
        self.worker.kill()
        self.dead_workers.append(self.worker)
        time.sleep(down_for_s)
        self.worker = self._spawn_worker()
        self.worker.wait_for(" ready.")

    def stop(self) -> None:
        for proc in (self.worker, self.beat, self.gateway, self.mock):
            if proc is not None:
                proc.stop()

    def logs(self) -> dict[str, str]:
        out = {}
        if self.gateway:
            out["gateway"] = self.gateway.output()
        for n, proc in enumerate([*self.dead_workers, self.worker]):
            if proc:
                out[f"worker{n}"] = proc.output()
        if self.beat:
            out["beat"] = self.beat.output()
        return out


# --- webhook receiver -------------------------------------------------------------------------------


def verify_signature(secret: str, headers: dict, body: bytes) -> bool:
    """Standard Webhooks, computed independently of the application."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    candidates = [part.split(",", 1)[1] for part in headers["webhook-signature"].split(" ") if part.startswith("v1,")]
    return any(hmac.compare_digest(expected, candidate) for candidate in candidates)


@dataclass
class Received:
    team_id: str
    event_id: str | None
    headers: dict[str, str]
    body: bytes
    payload: Any
    attempt: int  # 1-based, per event id, as seen by the receiver
    answered: int


class FaultyWebhookReceiver:
    """A real HTTP endpoint on loopback (`/hooks/<team_id>`). `failures_for(payload)` says how many first
    attempts of an event to fail and with which status; later attempts get 200."""

    def __init__(self, failures_for: Callable[[Any], tuple[int, int]]):
        receiver = self
        self.failures_for = failures_for
        self.received: list[Received] = []
        self.attempts: Counter[str] = Counter()
        self._lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k.lower(): v for k, v in self.headers.items()}
                try:
                    payload = json.loads(body)
                except ValueError:
                    payload = None
                event_id = headers.get("webhook-id")
                with receiver._lock:
                    receiver.attempts[event_id or ""] += 1
                    attempt = receiver.attempts[event_id or ""]
                    failures, status = receiver.failures_for(payload)
                    answered = status if attempt <= failures else 200
                    receiver.received.append(
                        Received(self.path.rsplit("/", 1)[-1], event_id, headers, body, payload, attempt, answered)
                    )
                self.send_response(answered)
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

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.received)

    def delivered_ids(self) -> set[str]:
        return {r.event_id for r in self.snapshot() if r.event_id and 200 <= r.answered < 300}

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- load -------------------------------------------------------------------------------------------


@dataclass
class CallResult:
    plan: CallPlan
    status: int | None = None  # the gateway's HTTP status (None: no response, see transport_error)
    code: str | None = None
    call_id: str | None = None
    usage: dict | None = None
    sse_error: dict | None = None
    done: bool = False
    client_text: str = ""
    content_chunks: int = 0
    hung_up: bool = False  # the client closed the connection on purpose (mid-stream, or while waiting)
    transport_error: str | None = None
    started_at: float = 0.0  # time.time() when the request was sent
    ended_at: float = 0.0  # … and when the client was done with it (answer read, hung up or gave up)


@dataclass
class JobResult:
    plan: JobPlan
    job_id: str | None = None
    create_status: int | None = None
    create_code: str | None = None
    complete_status: int | None = None
    complete_body: dict | None = None
    calls: list[CallResult] = field(default_factory=list)
    error: str | None = None


@dataclass
class Milestone:
    at_share: float  # of jobs finished
    action: Callable[[], Awaitable[None]]
    fired_at: float | None = None


class LoadRunner:
    """Runs the plan against the gateway with one httpx.AsyncClient; records every response status."""

    def __init__(self, base_url: str, mock_url: str, keys: dict[str, str], milestones: list[Milestone] | None = None):
        self.base_url, self.mock_url = base_url, mock_url
        self.keys = keys
        self.milestones = milestones or []
        self.responses: list[tuple[str, int]] = []  # (what, HTTP status) for every gateway response
        self.jobs_by_id: dict[str, JobPlan] = {}
        self.finished = 0
        self.total = 0
        self._tasks: list[asyncio.Task] = []

    def _auth(self, team_id: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[team_id]}"}

    async def run(self, plan: list[JobPlan], timeout: float) -> list[JobResult]:
        self.total = len(plan)
        # Idle connections are dropped well before uvicorn's keep-alive timeout, so a request is never sent
        # on a connection the server is closing at that moment (a client-side race, not a gateway fault).
        limits = httpx.Limits(max_connections=400, max_keepalive_connections=400, keepalive_expiry=1.0)
        async with (
            httpx.AsyncClient(base_url=self.base_url, timeout=30, limits=limits, trust_env=False) as client,
            httpx.AsyncClient(base_url=self.mock_url, timeout=10, trust_env=False) as self.mock,
        ):
            results = await asyncio.wait_for(asyncio.gather(*(self._job(client, job) for job in plan)), timeout)
            for task in self._tasks:
                await task
        return list(results)

    async def _after_job(self) -> None:
        self.finished += 1
        for milestone in self.milestones:
            if milestone.fired_at is None and self.finished >= milestone.at_share * self.total:
                milestone.fired_at = time.monotonic()
                self._tasks.append(asyncio.create_task(milestone.action()))

    async def _job(self, client: httpx.AsyncClient, job: JobPlan) -> JobResult:
        result = JobResult(job)
        await asyncio.sleep(job.start_after_s)
        try:
            await self._job_body(client, job, result)
        except Exception as exc:  # noqa: BLE001 - reported by the assertions, never swallowed silently
            result.error = f"{type(exc).__name__}: {exc}"
        await self._after_job()
        return result

    async def _job_body(self, client: httpx.AsyncClient, job: JobPlan, result: JobResult) -> None:
        auth = self._auth(job.team.team_id)
        body = {"job_type": f"system-{job.team.budget_mode}", "metadata": {"plan": job.index}}
        response = await client.post("/api/jobs/create", json=body, headers=auth)
        self.responses.append(("jobs/create", response.status_code))
        result.create_status = response.status_code
        if response.status_code != 201:
            result.create_code = _json(response).get("code")
            return
        job_id = response.json()["job_id"]
        result.job_id = job_id
        self.jobs_by_id[job_id] = job
        if job.fan_out:
            result.calls = list(await asyncio.gather(*(self._call(client, job_id, auth, c) for c in job.calls)))
        else:
            for call in job.calls:
                result.calls.append(await self._call(client, job_id, auth, call))
        done: dict[str, Any] = {"status": job.final_status}
        if job.final_status == "failed":
            done["error_message"] = "planned failure"
        response = await client.post(f"/api/jobs/{job_id}/complete", json=done, headers=auth)
        self.responses.append(("jobs/complete", response.status_code))
        result.complete_status, result.complete_body = response.status_code, _json(response)

    async def _call(self, client: httpx.AsyncClient, job_id: str, auth: dict, call: CallPlan) -> CallResult:
        result = CallResult(call, started_at=time.time())
        path = f"/api/jobs/{job_id}/llm-call" + ("-stream" if call.stream else "")
        try:
            if call.stream:
                await self._stream(client, path, auth, call, result)
            else:
                request = client.post(path, json=call.body(), headers=auth)
                response = await (
                    self._abort_while_upstream(request, call, result) if call.fault == "abort" else request
                )
                if response is None:
                    return result
                self.responses.append(("llm-call", response.status_code))
                result.status = response.status_code
                data = _json(response)
                if response.status_code == 200:
                    result.call_id, result.usage = data.get("call_id"), data.get("usage")
                else:
                    result.code = data.get("code")
        except httpx.HTTPError as exc:
            result.transport_error = f"{type(exc).__name__}: {exc}"
        result.ended_at = result.ended_at or time.time()
        return result

    async def _abort_while_upstream(
        self, request: Awaitable[httpx.Response], call: CallPlan, result: CallResult
    ) -> httpx.Response | None:
        """Send the request, and drop the connection as soon as the mock has received the provider request
        (the gateway is then waiting for a slow answer). Returns the response if it came first."""
        task = asyncio.ensure_future(request)
        prompt_tokens = call.prompt_words + 3
        deadline = time.monotonic() + 30
        while not task.done() and time.monotonic() < deadline:
            await asyncio.wait((task,), timeout=0.05)
            served = (await self.mock.get("/_stats", params={"last": 300})).json()["served"]
            if any(entry["prompt_tokens"] == prompt_tokens for entry in served):
                break
        if task.done():
            return task.result()
        task.cancel()  # closes the connection under the pending request
        try:
            await task
        except asyncio.CancelledError:
            pass
        result.hung_up, result.ended_at = True, time.time()
        return None

    async def _stream(
        self, client: httpx.AsyncClient, path: str, auth: dict, call: CallPlan, result: CallResult
    ) -> None:
        async with client.stream("POST", path, json=call.body(), headers=auth) as response:
            self.responses.append(("llm-call-stream", response.status_code))
            result.status = response.status_code
            if response.status_code != 200:
                await response.aread()
                result.code = _json(response).get("code")
                return
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[len("data: ") :]
                if data == "[DONE]":
                    result.done = True
                    continue
                event = json.loads(data)
                if "error" in event:
                    result.sse_error = event["error"]
                    continue
                if event.get("usage") is not None and not event.get("choices"):
                    result.usage, result.call_id = event["usage"], event.get("call_id")
                for choice in event.get("choices") or []:
                    content = (choice.get("delta") or {}).get("content")
                    if content:
                        result.client_text += content
                        result.content_chunks += 1
                if call.fault == "disconnect" and result.content_chunks >= DISCONNECT_AFTER_CHUNKS:
                    result.hung_up, result.ended_at = True, time.time()
                    break  # leaving the context closes the connection mid-stream


def _json(response: httpx.Response) -> dict:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}
