"""Full-stack fault run (issue 7 §2): real processes, ~200 concurrent jobs, ~600 LLM calls, faults.

Processes: the mock upstream (random 500s + per-call fault directives), `uvicorn --workers 2`, a Celery
worker and Celery beat on Redis, all on the Postgres test database; a real HTTP webhook receiver in
this process. Five teams (job mode ×2, usd, tokens, and a tokens-mode team that runs out of credits)
run the seeded plan of `harness.make_plan` through an async httpx client, while:

* the mock answers ~8 % of upstream requests with a 500 (retried by the Router: SAAS_LLM_NUM_RETRIES=2)
  and ~3 % of calls always fail with 500 (→ 502 after three attempts);
* ~3 % of calls hang upstream until the deployment's 2 s timeout (→ 504);
* ~12 % of streaming clients hang up after 4 chunks of a 4 s stream; ~4 % of non-stream clients drop the
  connection while the gateway waits for a slow (1.8 s) provider answer;
* one team has max_parallel_requests=4 (429s) and one runs out of credits (403s, low-balance event);
* the Celery worker is SIGKILLed when 35 % of the jobs are done, and restarted a second later (Celery
  beat's 15 s sweep must re-send what it lost; a delivery it was sending stays claimed for 60 s);
* the webhook receiver fails the first attempt of ~30 % of the events (a quarter of those twice);
  retries are fast: SAAS_LLM_WEBHOOK_RETRY_SCHEDULE=1,1,2,2,3,3,3.

The scenario runs once per module (`fault_run`); each test checks one property of its outcome from a
snapshot of the database, the mock's `/_stats`, the receiver's log and the client's records.
Run alone: `pytest tests/system -q` with DATABASE_URL=postgres://… and REDIS_URL=redis://…/N.
`SAAS_LLM_SYSTEM_REDIS_URL` overrides the Redis database the subprocesses use (default: REDIS_URL's).
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import os
import re
import time
from collections import Counter, defaultdict
from decimal import ROUND_CEILING, Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from django.conf import settings
from django.core.cache import cache
from django.core.management import CommandError, call_command

from tests.conftest import needs_postgres_and_redis, subprocess_database_url
from tests.system import harness
from tests.system.harness import (
    BASE_WORDS,
    NUM_RETRIES,
    PRICES,
    TEAM_BY_ID,
    TEAMS,
    CallResult,
    FaultyWebhookReceiver,
    JobResult,
    LoadRunner,
    Milestone,
    Stack,
)

# `django_db` makes pytest-django create the test database; the scenario itself runs (and commits) in
# the module fixture, and the module's teardown flushes what it wrote.
pytestmark = [pytest.mark.live, pytest.mark.django_db, needs_postgres_and_redis()]

LOAD_TIMEOUT_S = 150
CANCEL_GRACE_S = 1.0  # how long the gateway may take to notice a client that went away
DRAIN_TIMEOUT_S = 120
TEAM_IDS = [team.team_id for team in TEAMS]
UNITS = 10_000  # credit units per credit
NANOS = 10**9


class FaultRun:
    def __init__(self, tmp: Path, database_url: str, redis_url: str):
        self.tmp, self.database_url, self.redis_url = tmp, database_url, redis_url
        self.timings: dict[str, float] = {}
        self.stack: Stack | None = None
        self.receiver: FaultyWebhookReceiver | None = None
        self.runner: LoadRunner | None = None
        self.results: list[JobResult] = []
        self.setup_responses: list[tuple[str, int, str]] = []
        self.secrets: dict[str, str] = {}
        self.keys: dict[str, str] = {}
        self.kill_done_at: float | None = None
        self.finished_at_kill = self.finished_at_restart = 0
        self.load_ended_at: float | None = None
        self.drained = False
        self.drain_state: dict[str, Any] = {}

    # -- phases

    def log(self, message: str) -> None:
        print(f"[system {time.strftime('%H:%M:%S')}] {message}", flush=True)

    def execute(self) -> None:
        started = time.monotonic()
        self.stack = Stack(database_url=self.database_url, redis_url=self.redis_url, tmp=self.tmp)
        self.timings["boot"] = time.monotonic() - started
        self.log(f"stack up in {self.timings['boot']:.1f}s")
        self.receiver = FaultyWebhookReceiver(self._webhook_failures)
        self._setup_tenants()
        self.timings["setup"] = time.monotonic() - started - self.timings["boot"]

        mark = time.monotonic()
        self.plan = plan = harness.make_plan()
        probe = harness.make_probe(1 + max(c.index for job in plan for c in job.calls))
        self.runner = LoadRunner(
            self.stack.gateway.url, self.stack.mock.url, self.keys, [Milestone(harness.KILL_WORKER_AT, self._crash)]
        )
        self.results = asyncio.run(self.runner.run(plan, LOAD_TIMEOUT_S))
        self.load_ended_at = time.monotonic()
        time.sleep(1.0)  # let cancelled calls release their slots
        self.results += asyncio.run(self.runner.run([probe], 30))
        self.timings["load"] = time.monotonic() - mark
        self.log(f"load done in {self.timings['load']:.1f}s")

        mark = time.monotonic()
        self._drain()
        self.timings["drain"] = time.monotonic() - mark
        self.log(f"drained={self.drained} in {self.timings['drain']:.1f}s: {self.drain_state}")
        self._collect()
        self.timings["total"] = time.monotonic() - started
        print(self.summary())

    async def _crash(self) -> None:
        self.finished_at_kill = self.runner.finished
        self.log(f"SIGKILL the Celery worker ({self.runner.finished} jobs finished)")
        await asyncio.to_thread(self.stack.crash_and_restart_worker)
        self.kill_done_at, self.finished_at_restart = time.monotonic(), self.runner.finished
        self.log(f"Celery worker restarted ({self.runner.finished} jobs finished)")

    def _webhook_failures(self, payload: Any) -> tuple[int, int]:
        job_id = payload.get("job_id") if isinstance(payload, dict) else None
        if job_id is None:
            return 1, 503  # credits.low_balance: fail its first attempt too
        job = self.runner.jobs_by_id.get(job_id) if self.runner else None
        return (job.webhook_failures, job.webhook_fail_status) if job else (0, 200)

    def _setup_tenants(self) -> None:
        from tenants import services as tenant_services

        admin_key = tenant_services.issue_key(team=None, name="system-fault-run")[1]
        self.admin_key = admin_key
        mock_url = self.stack.mock.url
        with httpx.Client(base_url=self.stack.gateway.url, timeout=30, trust_env=False) as client:
            admin = {"Authorization": f"Bearer {admin_key}"}

            def post(path: str, body: dict, headers: dict = admin) -> dict:
                response = client.post(path, json=body, headers=headers)
                self.setup_responses.append((path, response.status_code, response.text[:500]))
                assert response.status_code == 201, (path, response.status_code, response.text)
                return response.json()

            for org in sorted({team.org_id for team in TEAMS}):
                post("/api/organizations/create", {"organization_id": org, "name": org})
            for alias, (model, price_in, price_out) in PRICES.items():
                deployment = {
                    "litellm_model": model,
                    "api_base": f"{mock_url}/v1",
                    "timeout_s": harness.DEPLOYMENT_TIMEOUT_S,
                    "input_cost_per_token": str(price_in),
                    "output_cost_per_token": str(price_out),
                }
                post("/api/model-aliases/create", {"alias_name": alias, "deployments": [deployment]})
            post("/api/model-access-groups/create", {"group_name": "sys-standard", "model_aliases": list(PRICES)})
            for team in TEAMS:
                created = post(
                    "/api/teams/create",
                    {
                        "team_id": team.team_id,
                        "organization_id": team.org_id,
                        "access_groups": ["sys-standard"],
                        "default_model": team.aliases[0],
                        "budget_mode": team.budget_mode,
                        "credits_allocated": team.credits,
                        **team.config,
                    },
                )
                self.keys[team.team_id] = created["virtual_key"]
                hook = post(
                    "/api/webhooks/register",
                    {
                        "webhook_url": f"{self.receiver.url}/{team.team_id}",
                        "events": ["job.completed", "job.failed", "job.cancelled", "credits.low_balance"],
                    },
                    headers={"Authorization": f"Bearer {created['virtual_key']}"},
                )
                self.secrets[team.team_id] = hook["secret"]

    def _drain(self) -> None:
        """Wait until the upstream is idle, the call rows stop changing, every delivery is delivered and
        the receiver has acknowledged every event (retries, the sweep after the crash, …)."""
        from jobs.models import LLMCall
        from tenants.models import Event, WebhookDelivery

        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        previous_rows = -1
        while True:
            active = httpx.get(self.stack.mock.url + "/_stats?last=0", timeout=5).json()["active"]
            rows = LLMCall.objects.filter(team_id__in=TEAM_IDS).count()
            events = {str(e) for e in Event.objects.filter(team_id__in=TEAM_IDS).values_list("id", flat=True)}
            open_deliveries = (
                WebhookDelivery.objects.filter(endpoint__team_id__in=TEAM_IDS).exclude(status="delivered").count()
            )
            unacknowledged = events - self.receiver.delivered_ids()
            self.drain_state = {
                "upstream_active": active,
                "call_rows": rows,
                "events": len(events),
                "deliveries_not_delivered": open_deliveries,
                "events_not_acknowledged_by_receiver": len(unacknowledged),
            }
            if active == 0 and rows == previous_rows and open_deliveries == 0 and not unacknowledged:
                self.drained = True
                return
            if time.monotonic() > deadline:
                return
            previous_rows = rows
            time.sleep(0.5)

    def _collect(self) -> None:
        from billing.models import CreditAccount, LedgerEntry, Reservation
        from jobs.models import Job, LLMCall
        from tenants.models import Event, Team, WebhookDelivery

        self.mock_stats = httpx.get(self.stack.mock.url + "/_stats", timeout=10).json()
        self.teams = {t["id"]: t for t in Team.objects.filter(id__in=TEAM_IDS).values()}
        self.accounts = {a["team_id"]: a for a in CreditAccount.objects.filter(team_id__in=TEAM_IDS).values()}
        self.jobs = {str(j["id"]): j for j in Job.objects.filter(team_id__in=TEAM_IDS).values()}
        self.calls = list(LLMCall.objects.filter(team_id__in=TEAM_IDS).values())
        self.ledger = list(LedgerEntry.objects.filter(team_id__in=TEAM_IDS).values())
        self.reservations = list(Reservation.objects.filter(team_id__in=TEAM_IDS).values())
        self.events = {str(e["id"]): e for e in Event.objects.filter(team_id__in=TEAM_IDS).values()}
        self.deliveries = list(
            WebhookDelivery.objects.filter(endpoint__team_id__in=TEAM_IDS).values(
                "id", "event_id", "endpoint__team_id", "status", "attempts", "last_status_code", "last_error"
            )
        )
        out, err = io.StringIO(), io.StringIO()
        try:
            call_command("verify_ledger", stdout=out, stderr=err)
            self.verify_ledger = (True, out.getvalue() + err.getvalue())
        except CommandError as exc:
            self.verify_ledger = (False, f"{exc}\n{err.getvalue()}")
        with httpx.Client(base_url=self.stack.gateway.url, timeout=30, trust_env=False) as client:
            admin = {"Authorization": f"Bearer {self.admin_key}"}
            self.balances, self.api_jobs = {}, {}
            for team_id in TEAM_IDS:
                balance = client.get("/api/credits/balance", params={"team_id": team_id}, headers=admin)
                listed = client.get("/api/jobs", params={"team_id": team_id, "limit": 1000}, headers=admin)
                for what, response in (("credits/balance", balance), ("jobs", listed)):
                    self.setup_responses.append((what, response.status_code, response.text[:500]))
                if balance.status_code == 200:
                    self.balances[team_id] = balance.json()
                if listed.status_code == 200:
                    self.api_jobs.update({j["job_id"]: j for j in listed.json()["results"]})
        self.logs = self.stack.logs()
        for name, text in self.logs.items():  # kept for post-mortems (pytest keeps the last 3 tmp dirs)
            (self.tmp / f"{name}.log").write_text(text)
        (self.tmp / "mock-stats.json").write_text(json.dumps(self.mock_stats))
        client_calls = [
            {"job_id": job.job_id, "team": job.plan.team.team_id, **dataclasses.asdict(call)}
            for job, call in self.call_results()
        ]
        (self.tmp / "client-calls.json").write_text(json.dumps(client_calls, default=str))
        (self.tmp / "call-rows.json").write_text(json.dumps(self.calls, default=str))

    def stop(self) -> None:
        if self.stack:
            self.stack.stop()
        if self.receiver:
            self.receiver.stop()

    # -- views used by the tests

    def call_results(self) -> list[tuple[JobResult, CallResult]]:
        return [(job, call) for job in self.results for call in job.calls]

    def summary(self) -> str:
        statuses = Counter(status for _, status in self.runner.responses)
        faults = Counter(call.plan.fault or "none" for _, call in self.call_results())
        rows = Counter(row["status"] for row in self.calls)
        hooks = self.receiver.snapshot()
        timings = {k: round(v, 1) for k, v in self.timings.items()}
        return (
            f"\n== system fault run: timings {timings}"
            f"\n   jobs planned {len(self.results)}, created {sum(1 for r in self.results if r.job_id)},"
            f" calls made {len(self.call_results())} {dict(faults)}"
            f"\n   gateway statuses {dict(sorted(statuses.items()))}"
            f"\n   upstream requests {self.mock_stats['requests']} faults {self.mock_stats['by_fault']}"
            f"\n   call rows {dict(rows)}; jobs {dict(Counter(j['status'] for j in self.jobs.values()))}"
            f"\n   webhooks: events {len(self.events)}, requests {len(hooks)},"
            f" answered {dict(Counter(r.answered for r in hooks))}, drained={self.drained} {self.drain_state}"
            f"\n   worker killed at job {harness.KILL_WORKER_AT:.0%}, restarted: {self.kill_done_at is not None}"
            f"\n   process logs in {self.tmp}"
        )


@pytest.fixture(scope="module")
def fault_run(django_db_setup, django_db_blocker, tmp_path_factory):
    redis_url = os.environ.get("SAAS_LLM_SYSTEM_REDIS_URL") or settings.REDIS_URL
    if redis_url == settings.REDIS_URL:
        cache.clear()  # an empty broker: no stale Celery tasks left by earlier tests
    with django_db_blocker.unblock():
        run = FaultRun(tmp_path_factory.mktemp("system"), subprocess_database_url(), redis_url)
        try:
            run.execute()
        except BaseException:
            if run.stack:
                for name, log in run.stack.logs().items():
                    print(f"--- {name} log (tail) ---\n{log[-4000:]}")
            run.stop()
            call_command("flush", verbosity=0, interactive=False)
            raise
    yield run
    with django_db_blocker.unblock():
        run.stop()
        call_command("flush", verbosity=0, interactive=False)


# --- helpers ---------------------------------------------------------------------------------------


def ceil_div(numerator: int | Decimal, denominator: int | Decimal) -> int:
    return int((Decimal(numerator) / Decimal(denominator)).to_integral_value(rounding=ROUND_CEILING))


def expected_charge_units(team: dict, job: dict, rows: list[dict]) -> int:
    """SPEC §6, computed independently: failed/cancelled and jobs without a billable call cost nothing."""
    billable = [row for row in rows if row["status"] in ("success", "cancelled")]
    if job["status"] != "completed" or not billable:
        return 0
    if team["budget_mode"] == "job":
        return int(Decimal(str(team["credits_per_job"])) * UNITS)
    if team["budget_mode"] == "usd":
        cost = sum(row["cost_nanos"] for row in billable)
        return ceil_div(cost * Decimal(str(team["credits_per_dollar"])) * UNITS, NANOS)
    tokens = sum(row["total_tokens"] for row in billable)
    return ceil_div(tokens * UNITS, team["tokens_per_credit"])


def call_index(row: dict) -> int | None:
    match = re.fullmatch(r"c(\d+)", row["purpose"] or "")
    return int(match.group(1)) if match else None


def to_units(credits: float | int) -> int:
    return int(Decimal(str(credits)) * UNITS)


def report(title: str, problems: list[str], limit: int = 25) -> str:
    shown = "\n  ".join(problems[:limit])
    more = f"\n  … and {len(problems) - limit} more" if len(problems) > limit else ""
    return f"{title}: {len(problems)} problem(s)\n  {shown}{more}"


# --- the checks ------------------------------------------------------------------------------------


def test_scenario_injected_the_faults_it_claims(fault_run):
    """Guard against a run that silently tested nothing: every fault really happened, mid-run."""
    run = fault_run
    calls = run.call_results()
    statuses = Counter(status for _, status in run.runner.responses)
    hooks = run.receiver.snapshot()
    low_balance = [e for e in run.events.values() if e["type"] == "credits.low_balance"]
    problems = []
    checks = {
        "jobs planned ≈ 200": len(run.results) >= harness.N_JOBS,
        "LLM calls planned ≈ 600": 550 <= sum(len(job.calls) for job in run.plan) <= 700,
        "a third of the calls stream": 0.25 <= sum(c.plan.stream for _, c in calls) / len(calls) <= 0.42,
        "upstream 500s ≈ 10 % of upstream requests": 0.06
        <= run.mock_stats["by_fault"].get("500", 0) / run.mock_stats["requests"]
        <= 0.2,
        "upstream hangs ≥ 10": run.mock_stats["by_fault"].get("hang", 0) >= 10,
        "mid-stream hang-ups ≥ 10": sum(c.hung_up and c.plan.stream for _, c in calls) >= 10,
        "non-stream client aborts ≥ 3": sum(c.plan.fault == "abort" and c.hung_up for _, c in calls) >= 3,
        "502s and 504s reached clients": statuses[502] > 0 and statuses[504] > 0,
        "the tight team ran out of credits (403)": statuses[403] > 0,
        "the parallel limit refused calls (429)": statuses[429] > 0,
        "the tight team crossed its low-balance threshold": len(low_balance) >= 1,
        "the Celery worker was killed and restarted mid-run (jobs finished while it was down and after)": (
            run.kill_done_at is not None
            and run.kill_done_at < run.load_ended_at
            and run.finished_at_restart - run.finished_at_kill >= 5
            and len(run.plan) - run.finished_at_restart >= 20
        ),
        "the receiver failed ≥ 20 % of first attempts": sum(1 for r in hooks if r.attempt == 1 and r.answered >= 300)
        >= 0.2 * len(run.events),
    }
    problems = [name for name, ok in checks.items() if not ok]
    assert not problems, report("the scenario did not do what it claims", problems) + run.summary()


def test_gateway_never_answered_500_and_statuses_match_the_faults(fault_run):
    run = fault_run
    problems = []
    for what, status, text in run.setup_responses:
        if status >= 300:
            problems.append(f"setup {what}: {status} {text}")
    for what, status in run.runner.responses:
        if status == 500:
            problems.append(f"{what}: 500")
    for job in run.results:
        team = job.plan.team
        if job.error:
            problems.append(f"job plan #{job.plan.index} ({team.team_id}): client error {job.error}")
        if job.create_status != 201 and not (job.create_status == 403 and team.may_run_out):
            problems.append(f"job plan #{job.plan.index} ({team.team_id}): create answered {job.create_status}")
        if job.job_id and job.complete_status != 200:
            problems.append(f"job {job.job_id}: complete answered {job.complete_status} {job.complete_body}")
        for call in job.calls:
            fault, where = call.plan.fault, f"call c{call.plan.index} ({team.team_id}, fault={call.plan.fault})"
            refused = (call.status == 403 and call.code == "insufficient_credits" and team.may_run_out) or (
                call.status == 429 and call.code == "rate_limited" and team.parallel_limited
            )
            if call.transport_error:
                problems.append(f"{where}: transport error {call.transport_error}")
                continue
            if call.hung_up and call.status is None:
                continue  # an aborted non-stream call: the client never read an answer
            if refused:
                continue
            expected = {"500": {502}, "hang": {504}}.get(fault, {200, 502})  # 502: three random 500s in a row
            if call.status not in expected:
                problems.append(f"{where}: status {call.status} code {call.code}, expected {sorted(expected)}")
            if call.plan.stream and call.status == 200 and not call.hung_up:
                if call.sse_error or not call.done or call.usage is None or call.call_id is None:
                    problems.append(
                        f"{where}: stream ended without usage/[DONE] (error={call.sse_error}, done={call.done})"
                    )
    for name, log in run.logs.items():
        for marker in ("Internal Server Error:", "Exception in ASGI application", "unhandled error"):
            if marker in log:
                problems.append(
                    f"{name} log contains {marker!r}: …{log[log.index(marker) - 200 : log.index(marker) + 800]}"
                )
    assert not problems, report("gateway answers", problems) + run.summary()


def test_verify_ledger_passes(fault_run):
    ok, output = fault_run.verify_ledger
    assert ok, f"manage.py verify_ledger failed:\n{output}"


def test_every_job_is_charged_per_its_budget_mode(fault_run):
    run = fault_run
    rows_by_job = defaultdict(list)
    for row in run.calls:
        rows_by_job[str(row["job_id"])].append(row)
    ledger_by_job = defaultdict(list)
    for entry in run.ledger:
        if entry["job_id"]:
            ledger_by_job[str(entry["job_id"])].append(entry)
    completes = {r.job_id: r.complete_body for r in run.results if r.job_id}
    problems = []
    created = {r.job_id for r in run.results if r.job_id}
    if set(run.jobs) != created:
        problems.append(f"jobs in the DB {len(run.jobs)} != jobs created by the client {len(created)}")
    for job_id, job in run.jobs.items():
        team, rows = run.teams[job["team_id"]], rows_by_job[job_id]
        expected = expected_charge_units(team, job, rows)
        where = f"job {job_id} ({job['team_id']}, {team['budget_mode']}, {job['status']}, {len(rows)} calls)"
        if job["status"] not in ("completed", "failed", "cancelled"):
            problems.append(f"{where}: still {job['status']}")
        if job["credits_charged_units"] != expected:
            problems.append(f"{where}: credits_charged {job['credits_charged_units']} units, expected {expected}")
        charged = -sum(e["amount_units"] for e in ledger_by_job[job_id] if e["kind"] == "charge")
        if charged != expected:
            problems.append(f"{where}: ledger charges {charged} units, expected {expected}")
        api = run.api_jobs.get(job_id)
        if api is None or to_units(api["credits_charged"]) != expected:
            problems.append(
                f"{where}: GET /api/jobs credits_charged {api and api['credits_charged']}, expected {expected}"
            )
        # The /complete answer is the charge at completion. A disconnected stream recorded after it is
        # charged on its own afterwards (never lost), so then /complete may have said less.
        late = job["completed_at"] is not None and any(r["created_at"] > job["completed_at"] for r in rows)
        completed = completes.get(job_id) or {}
        at_completion = to_units(completed.get("credits_charged", -1))
        if "credits_charged" in completed and (at_completion > expected if late else at_completion != expected):
            problems.append(
                f"{where}: /complete said credits_charged {at_completion} units, expected {expected}"
                + (" (at most: a call was recorded after completion)" if late else "")
            )
        # Roll-ups equal the sums over the job's call rows.
        sums = {
            "total_calls": len(rows),
            "successful_calls": sum(r["status"] == "success" for r in rows),
            "failed_calls": sum(r["status"] == "error" for r in rows),
            "cancelled_calls": sum(r["status"] == "cancelled" for r in rows),
            "prompt_tokens": sum(r["prompt_tokens"] for r in rows),
            "completion_tokens": sum(r["completion_tokens"] for r in rows),
            "total_tokens": sum(r["total_tokens"] for r in rows),
            "cost_nanos": sum(r["cost_nanos"] for r in rows),
            "provider_cost_nanos": sum(r["provider_cost_nanos"] for r in rows),
        }
        wrong = {k: (job[k], v) for k, v in sums.items() if job[k] != v}
        if wrong:
            problems.append(f"{where}: roll-ups (job, Σ rows) {wrong}")
    for row in run.calls:
        _, price_in, price_out = PRICES[row["model_alias"]]
        provider = ceil_div((row["prompt_tokens"] * price_in + row["completion_tokens"] * price_out) * NANOS, 1)
        markup = TEAM_BY_ID[row["team_id"]].markup
        cost = ceil_div(provider * (100 + markup), 100)
        if row["status"] != "error" and (row["provider_cost_nanos"], row["cost_nanos"]) != (provider, cost):
            problems.append(
                f"call {row['id']} ({row['purpose']}): cost {row['provider_cost_nanos']}/{row['cost_nanos']} nanos,"
                f" expected {provider}/{cost}"
            )
        if row["total_tokens"] != row["prompt_tokens"] + row["completion_tokens"]:
            problems.append(f"call {row['id']}: total_tokens != prompt + completion")
    assert not problems, report("job charges", problems) + run.summary()


def test_each_teams_charges_equal_allocated_minus_remaining_minus_reserved(fault_run):
    run = fault_run
    problems = []
    for team in TEAMS:
        balance, account = run.balances[team.team_id], run.accounts[team.team_id]
        jobs_total = sum(j["credits_charged_units"] for j in run.jobs.values() if j["team_id"] == team.team_id)
        ledger_total = -sum(
            e["amount_units"] for e in run.ledger if e["team_id"] == team.team_id and e["kind"] == "charge"
        )
        allocated, remaining, reserved, used = (
            to_units(balance[k]) for k in ("credits_allocated", "credits_remaining", "credits_reserved", "credits_used")
        )
        values = f"allocated {allocated} remaining {remaining} reserved {reserved} used {used} Σjobs {jobs_total}"
        if jobs_total != allocated - remaining - reserved:
            problems.append(f"{team.team_id}: Σ job charges != allocated − remaining − reserved ({values})")
        if ledger_total != jobs_total or used != jobs_total:
            problems.append(
                f"{team.team_id}: Σ ledger charges {ledger_total} / used {used} != Σ job charges {jobs_total}"
            )
        if reserved != 0 or account["reserved_units"] != 0:
            problems.append(f"{team.team_id}: {reserved} units still reserved after every job finished")
        if allocated != team.credits * UNITS:
            problems.append(f"{team.team_id}: allocated {allocated} units, granted {team.credits * UNITS}")
        still_open = [r for r in run.reservations if r["team_id"] == team.team_id and r["status"] == "open"]
        if still_open:
            problems.append(f"{team.team_id}: {len(still_open)} reservations still open")
        if (
            team.may_run_out
            and remaining > 0
            and not any(r.create_status == 403 for r in run.results if r.plan.team is team)
        ):
            problems.append(f"{team.team_id}: never ran out of credits ({values})")
    assert not problems, report("team balances", problems) + run.summary()


def test_every_upstream_request_is_one_call_row_with_the_mock_tokens(fault_run):
    """Each call's prompt has a unique length, so the mock's prompt_tokens name the call that sent it."""
    run = fault_run
    stats = run.mock_stats
    problems = []
    if len(stats["served"]) != stats["requests"] or stats["rejected"]:
        problems.append(
            f"mock: {stats['requests']} requests, {len(stats['served'])} logged, {stats['rejected']} rejected"
        )
    planned = {call.plan.index: (job, call) for job, call in run.call_results()}
    entries = defaultdict(list)
    for entry in stats["served"]:
        index = entry["prompt_tokens"] - 3 - BASE_WORDS
        if index not in planned:
            problems.append(f"upstream request #{entry['request_index']} matches no planned call: {entry}")
        entries[index].append(entry)
    rows = defaultdict(list)
    for row in run.calls:
        index = call_index(row)
        if index not in planned:
            problems.append(f"call row {row['id']} (purpose {row['purpose']!r}) matches no planned call")
        rows[index].append(row)

    counted: list[tuple[Any, dict, dict]] = []  # rows whose tokens the gateway had to count itself
    for index, (job, call) in sorted(planned.items()):
        sent, recorded = entries[index], rows[index]
        where = f"call c{index} ({job.plan.team.team_id}, stream={call.plan.stream}, fault={call.plan.fault})"
        if len(recorded) > 1:
            problems.append(f"{where}: {len(recorded)} call rows")
        if not sent:
            if recorded:
                problems.append(f"{where}: a {recorded[0]['status']} row but no upstream request")
            continue
        if not recorded:
            problems.append(f"{where}: {len(sent)} upstream request(s) but NO call row (lost from the books)")
            continue
        row = recorded[0]
        where += f" row {row['status']}/{row['error_code'] or '-'}"
        if len(sent) > NUM_RETRIES + 1:
            problems.append(f"{where}: {len(sent)} upstream attempts > 1 + {NUM_RETRIES} retries")
        *retried, last = sent
        if any(e["fault"] != "500" for e in retried):
            problems.append(f"{where}: an attempt before the last one was not a 500: {retried}")
        # A streaming client that hung up while the provider was still streaming (by a clear margin, so a
        # lagging event loop in this process cannot blur it) must get a cancelled row and a cancelled
        # upstream request (SPEC §5.2). A non-stream client that gave up only needs its row (checked above).
        gave_up = call.hung_up
        left_early = (
            call.plan.stream
            and call.hung_up
            and call.ended_at < last["t"] + call.plan.upstream_duration_s() - CANCEL_GRACE_S
        )
        if left_early and row["status"] != "cancelled":
            problems.append(
                f"{where}: the client left {last['t'] + call.plan.upstream_duration_s() - call.ended_at:.1f}s before"
                f" the provider's answer ended, yet the row is {row['status']} (upstream {last})"
            )
        elif left_early and not last["disconnected"]:
            problems.append(f"{where}: the client hung up early, but the upstream stream was not cancelled ({last})")
        if row["status"] == "success":  # (also a client that left only as the answer was complete)
            tokens = (row["prompt_tokens"], row["completion_tokens"])
            if last["fault"] is not None or not last["completed"]:
                problems.append(f"{where}: success but the last upstream attempt was {last}")
            elif tokens != (last["prompt_tokens"], last["completion_tokens"]):
                problems.append(
                    f"{where}: row tokens {tokens} != upstream {(last['prompt_tokens'], last['completion_tokens'])}"
                )
            if row["provider_response_id"] != f"chatcmpl-mock-{last['request_index']}":
                problems.append(f"{where}: provider_response_id {row['provider_response_id']!r} != the upstream's")
            if gave_up:
                pass  # the client did not read the answer to the end
            elif call.status == 200 and (call.call_id != str(row["id"]) or call.usage is None):
                problems.append(f"{where}: client saw call_id {call.call_id} usage {call.usage}, row {row['id']}")
            elif call.usage and (call.usage["prompt_tokens"], call.usage["completion_tokens"]) != tokens:
                problems.append(f"{where}: client usage {call.usage} != row tokens {tokens}")
        elif row["status"] == "error":
            faults = {e["fault"] for e in sent}
            if faults == {"hang"}:
                if len(sent) != 1 or call.status != 504 or row["error_code"] != "upstream_timeout":
                    problems.append(
                        f"{where}: hang → {len(sent)} attempts, HTTP {call.status}, row {row['error_code']}"
                    )
            elif faults == {"500"}:
                # Retries are litellm's: NUM_RETRIES + 1 attempts, except that once in ~13 runs its
                # native router core made one fewer (not reproduced against the Router alone). The
                # books are this test's subject, so only a retry count above the policy fails it.
                if not 2 <= len(sent) <= NUM_RETRIES + 1 or call.status != 502:
                    at = [round(e["t"] - call.started_at, 2) for e in sent]
                    problems.append(
                        f"{where}: 500s → {len(sent)} attempts (at +{at}s), HTTP {call.status} after"
                        f" {call.ended_at - call.started_at:.2f}s"
                    )
            else:
                problems.append(f"{where}: error row but upstream faults {faults} ({sent})")
            if (row["prompt_tokens"], row["completion_tokens"]) != (0, 0) and faults <= {"500", "hang"}:
                problems.append(f"{where}: error row with tokens {(row['prompt_tokens'], row['completion_tokens'])}")
        elif row["status"] == "cancelled":
            if not gave_up:
                problems.append(f"{where}: cancelled, but the client did not hang up ({last})")
            counted.append((call, row, last))
        else:
            problems.append(f"{where}: unknown row status")

    if counted:
        import litellm

        for call, row, last in counted:
            where = f"call c{call.plan.index} cancelled"
            model = PRICES[row["model_alias"]][0]
            if last["completed"] and (row["prompt_tokens"], row["completion_tokens"]) == (
                last["prompt_tokens"],
                last["completion_tokens"],
            ):
                continue  # the provider's usage arrived before the hang-up was noticed: it is the truth
            prompt = litellm.token_counter(model=model, messages=call.plan.body()["messages"])
            if row["prompt_tokens"] != prompt:
                problems.append(f"{where}: prompt_tokens {row['prompt_tokens']} != litellm's count {prompt}")
            if call.plan.stream:
                upstream_text = "".join(f"tok{i} " for i in range(last["completion_tokens"]))
                low = litellm.token_counter(model=model, text=call.client_text, count_response_tokens=True)
                high = litellm.token_counter(model=model, text=upstream_text, count_response_tokens=True)
                if not low <= row["completion_tokens"] <= high:
                    problems.append(
                        f"{where}: completion_tokens {row['completion_tokens']} outside [{low} seen by the client,"
                        f" {high} sent upstream ({last['completion_tokens']} mock tokens)]"
                    )
    assert not problems, report("upstream requests ↔ call rows", problems) + run.summary()


def test_every_finished_job_event_was_delivered_and_nothing_is_pending(fault_run):
    run = fault_run
    problems = []
    if not run.drained:
        problems.append(f"not drained after {DRAIN_TIMEOUT_S}s: {run.drain_state}")
    hooks = run.receiver.snapshot()
    acknowledged = run.receiver.delivered_ids()
    for delivery in run.deliveries:
        if delivery["status"] != "delivered":
            problems.append(
                f"delivery {delivery['id']} ({delivery['endpoint__team_id']}) {delivery['status']} after"
                f" {delivery['attempts']} attempts, last {delivery['last_status_code']} {delivery['last_error']!r}"
            )
    per_event = Counter(str(d["event_id"]) for d in run.deliveries)
    for event_id, event in run.events.items():
        if per_event[event_id] != 1:
            problems.append(f"event {event_id} ({event['type']}) has {per_event[event_id]} deliveries, expected 1")
        if event_id not in acknowledged:
            problems.append(
                f"event {event_id} ({event['type']}, {event['team_id']}) never acknowledged by the receiver"
            )
    for received in hooks:
        where = f"webhook request {received.event_id} attempt {received.attempt}"
        payload = received.payload or {}
        if not received.event_id or payload.get("event_id") != received.event_id:
            problems.append(f"{where}: webhook-id header != payload event_id {payload.get('event_id')}")
        elif received.team_id not in run.secrets or not harness.verify_signature(
            run.secrets[received.team_id], received.headers, received.body
        ):
            problems.append(f"{where}: bad signature for {received.team_id}")
        elif payload.get("team_id") != received.team_id or received.event_id not in run.events:
            problems.append(
                f"{where}: payload for {payload.get('team_id')} on {received.team_id}'s endpoint, or unknown event"
            )
    job_events = defaultdict(list)
    for event in run.events.values():
        if event["payload"].get("job_id"):
            job_events[event["payload"]["job_id"]].append(event)
    payloads = {r.event_id: r.payload for r in hooks if r.answered < 300}
    attempts = {str(d["event_id"]): d["attempts"] for d in run.deliveries}
    for result in run.results:
        if not result.job_id:
            continue
        job = run.jobs.get(result.job_id)
        events = job_events.get(result.job_id, [])
        if job is None or len(events) != 1 or events[0]["type"] != f"job.{job['status']}":
            problems.append(
                f"job {result.job_id}: events {[e['type'] for e in events]} for status {job and job['status']}"
            )
            continue
        event_id = str(events[0]["id"])
        data = (payloads.get(event_id) or {}).get("data") or {}
        if data.get("status") != job["status"]:
            problems.append(f"job {result.job_id}: delivered payload data {data}, job {job['status']}")
        elif result.complete_status == 200 and to_units(data["credits_charged"]) != to_units(
            result.complete_body["credits_charged"]
        ):
            problems.append(f"job {result.job_id}: webhook credits_charged {data['credits_charged']} != /complete's")
        # The receiver answers 2xx only after failing the planned first attempts, so an acknowledged event
        # proves the retries happened; the outbox never counts more attempts than were actually sent.
        if attempts.get(event_id, 0) > run.receiver.attempts[event_id]:
            problems.append(
                f"job {result.job_id}: {attempts.get(event_id)} attempts recorded, the receiver saw"
                f" {run.receiver.attempts[event_id]}"
            )
    low = Counter(e["team_id"] for e in run.events.values() if e["type"] == "credits.low_balance")
    expected_low = {t.team_id: 1 for t in TEAMS if "low_balance_threshold" in t.config}
    if dict(low) != expected_low:
        problems.append(f"credits.low_balance events {dict(low)}, expected {expected_low}")
    duplicates = sum(1 for n in Counter(r.event_id for r in hooks if r.answered < 300).values() if n > 1)
    assert not problems, report(f"webhooks ({duplicates} duplicate deliveries, deduped)", problems) + run.summary()


def test_parallel_slots_are_not_leaked_by_cancelled_calls(fault_run):
    """After the run (with hang-ups and aborts on the team limited to 4 calls in flight), 4 simultaneous
    calls must all be admitted."""
    run = fault_run
    [probe] = [r for r in run.results if r.plan.probe]
    statuses = [(c.status, c.code, c.transport_error) for c in probe.calls]
    assert all(status == 200 for status, _, _ in statuses), f"probe calls: {statuses}" + run.summary()
