"""Job use cases: create (reserve), record calls (roll up, accrue), complete (settle), expire.

Lock order everywhere: the job row, then the team's credit account (inside billing.services).
"""

import logging
import uuid
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from billing import money
from billing import services as billing
from billing.errors import InsufficientCredits
from billing.models import Reservation, ReservationStatus
from jobs import sql as jobs_sql
from jobs.errors import JobAlreadyFinished, JobNotFound
from jobs.models import BILLABLE_CALL_STATUSES, OPEN_STATUSES, CallStatus, Job, JobStatus, LLMCall
from saas_llm.errors import TeamSuspended
from saas_llm.storable import storable
from tenants.events import amend_event_data, emit_event
from tenants.models import Team

logger = logging.getLogger(__name__)


def create_job(
    *,
    team: Team,
    job_type: str,
    metadata: dict | None = None,
    user_id: str | None = None,
    external_id: str | None = None,
    started: bool = False,
) -> Job:
    """Create a job and reserve its expected charge. Raises TeamSuspended, InsufficientCredits (403).

    `started=True` creates it `in_progress` (a single-call job whose call is about to be made).
    """
    if team.is_suspended:
        raise TeamSuspended()
    now = timezone.now()
    values = {
        "id": uuid.uuid4(),
        "team_id": team.id,
        "job_type": job_type,
        "metadata": metadata or {},
        "user_id": user_id,
        "external_id": external_id,
    }
    if started:
        values.update(status=JobStatus.IN_PROGRESS, started_at=now)
    with transaction.atomic(savepoint=False):
        job = jobs_sql.insert_job(values, now=now)
        # Last: the hold takes the account's lock, held only to the commit. A refusal takes back
        # what it wrote and raises outside the block: no savepoint, no caller's transaction doomed.
        held = billing.hold_for_job(team=team, job_id=job.id) is not None
        if not held:
            jobs_sql.delete_job(job.id)
    if not held:
        raise InsufficientCredits()
    job.team = team
    return job


def job_charge_units(team: Team, job: Job) -> int:
    """What a completed job costs in its team's budget mode; nothing without a billable call."""
    if job.billable_calls == 0:
        return 0
    return money.job_charge_units(
        budget_mode=team.budget_mode,
        credits_per_job=team.credits_per_job,
        credits_per_dollar=team.credits_per_dollar,
        tokens_per_credit=team.tokens_per_credit,
        cost_nanos=job.billable_cost_nanos,
        total_tokens=job.billable_tokens,
    )


def complete_job(
    *,
    team: Team,
    job_id: uuid.UUID,
    status: str,
    metadata: dict | None = None,
    error_message: str | None = None,
    actor: str = "system",
) -> Job:
    """Finish a job: `completed` charges once and releases the hold; `failed`/`cancelled` only release
    it, unless the team has `charge_failed_jobs` (then they are charged like `completed`).

    Terminal and idempotent: the same status again returns the job unchanged (never a second
    charge); a different status raises JobAlreadyFinished (409). Locks the job, then the account.
    """
    with transaction.atomic():
        job = jobs_sql.lock_job(job_id)
        if job is None or job.team_id != team.id:
            raise JobNotFound()
        if job.is_terminal:
            if job.status == status:
                return job
            raise JobAlreadyFinished(job.status)
        _finish_locked(team, job, status=status, metadata=metadata, error_message=error_message, actor=actor)
    return job


def _finish_locked(
    team: Team, job: Job, *, status: str, metadata: dict | None, error_message: str | None, actor: str
) -> None:
    """Move an open job, locked by the caller, to `status`: save it, emit its event, then settle (see
    `_is_charged`) or release its hold — the account's lock last, held for the fewest round trips
    before the caller's commit."""
    job.status = status
    job.completed_at = timezone.now()
    if metadata:
        job.metadata = {**job.metadata, **metadata}
    if error_message is not None:
        job.error_message = error_message
    charged = _is_charged(team, status)
    job.credits_charged_units = job_charge_units(team, job) if charged else 0
    event = emit_event(team=team, event_type=f"job.{status}", data=job_event_data(job), job_id=job.id)
    jobs_sql.save_job_state(job)
    if not charged:
        billing.release_job(team=team, job_id=job.id)
        return
    entry = billing.settle_job(
        team=team, job_id=job.id, charge_units=job.credits_charged_units, actor=actor, reason=f"job {status}"
    )
    settled = -entry.amount_units if entry is not None else 0
    if settled != job.credits_charged_units:  # its hold was no longer open: what the ledger says wins
        job.credits_charged_units = settled
        jobs_sql.save_job_state(job)
        amend_event_data(event, job_event_data(job))


def _is_charged(team: Team, status: str) -> bool:
    """Whether finishing a job as `status` charges it (SPEC §6): `completed` always; `failed` and
    `cancelled` only for a team with `charge_failed_jobs`, else a team failing its jobs uses them free."""
    if status == JobStatus.COMPLETED:
        return True
    return team.charge_failed_jobs and status in (JobStatus.FAILED, JobStatus.CANCELLED)


def job_event_data(job: Job) -> dict[str, Any]:
    started = job.started_at or job.created_at
    duration = (job.completed_at - started).total_seconds() if job.completed_at else 0.0
    return {
        "total_calls": job.total_calls,
        "duration_seconds": round(max(duration, 0.0), 3),
        "cost_usd": float(money.nanos_to_usd(job.cost_nanos)),
        "credits_charged": float(money.units_to_credits(job.credits_charged_units)),
        "status": job.status,
    }


def mark_started(*, job: Job) -> None:
    """pending → in_progress on the first LLM call (a conditional update; no lock needed)."""
    if job.status == JobStatus.PENDING:
        now = timezone.now()
        Job.objects.filter(pk=job.pk, status=JobStatus.PENDING).update(status=JobStatus.IN_PROGRESS, started_at=now)
        job.status, job.started_at = JobStatus.IN_PROGRESS, now


@dataclass
class CallRecord:
    """Everything known about one finished (or failed, or cancelled) LLM call."""

    model_alias: str
    status: str
    purpose: str = ""
    stream: bool = False
    deployment_id: int | None = None
    resolved_model: str = ""
    provider_response_id: str = ""
    error: str = ""  # internal: the provider's own message (kept on the call row for staff)
    error_code: str = ""
    client_error: str = ""  # what the client was told (a single-call job's error_message)
    finish_reason: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    provider_cost_nanos: int = 0
    cost_nanos: int = 0
    unpriced: bool = False
    price_snapshot: dict = field(default_factory=dict)
    latency_ms: int = 0
    ttft_ms: int | None = None
    fallbacks: int = 0
    request_body: dict | None = None
    response_body: dict | None = None
    call_id: uuid.UUID = field(default_factory=uuid.uuid4)


def record_call(*, team: Team, job_id: uuid.UUID, record: CallRecord, complete_job: bool = False) -> LLMCall:
    """Write the call row and roll it into the job (see `_record_call`). Idempotent per call id: the
    same record again — a retry whose first transaction did commit before its connection broke, or a
    spooled call replayed (jobs/spool.py) — returns the row already there and changes nothing."""
    try:
        return _record_call(team=team, job_id=job_id, record=record, complete_job=complete_job)
    except IntegrityError:
        existing = LLMCall.objects.filter(id=record.call_id).first()
        if existing is None:
            raise
        return existing


def _record_call(*, team: Team, job_id: uuid.UUID, record: CallRecord, complete_job: bool) -> LLMCall:
    """Write the call row and roll it into the job, in one transaction under the job's row lock.

    In usage modes the job's credit hold grows to its accrued usage. A billable call that lands
    after its job was completed is charged on its own (never lost from the books).
    `complete_job=True` (a single-call job) also finishes the job in the same transaction:
    `completed` (charged) after a successful or cancelled call, `failed` (released) after an error.
    """
    billable = record.status in BILLABLE_CALL_STATUSES
    total_tokens = record.prompt_tokens + record.completion_tokens
    # What the provider said is recorded whatever it holds: a NUL or a lone surrogate in a body
    # or message would make the whole write fail and lose the call (input is refused earlier).
    record = replace(
        record,
        provider_response_id=storable(record.provider_response_id),
        error=storable(record.error),
        client_error=storable(record.client_error),
        finish_reason=storable(record.finish_reason),
        request_body=storable(record.request_body),
        response_body=storable(record.response_body),
    )
    with transaction.atomic():
        now = timezone.now()
        job = jobs_sql.lock_job(job_id)
        if job is None:
            raise Job.DoesNotExist(job_id)
        values = {
            "id": record.call_id,
            "job_id": job.id,
            "team_id": team.id,
            "model_alias": record.model_alias,
            "deployment_id": record.deployment_id,
            "resolved_model": record.resolved_model,
            "provider_response_id": record.provider_response_id[:255],
            "purpose": record.purpose,
            "stream": record.stream,
            "status": record.status,
            "error": record.error[:5000],
            "error_code": record.error_code[:64],
            "finish_reason": record.finish_reason[:32],
            "prompt_tokens": record.prompt_tokens,
            "completion_tokens": record.completion_tokens,
            "total_tokens": total_tokens,
            "provider_cost_nanos": record.provider_cost_nanos,
            "cost_nanos": record.cost_nanos,
            "unpriced": record.unpriced,
            "price_snapshot": record.price_snapshot,
            "latency_ms": record.latency_ms,
            "ttft_ms": record.ttft_ms,
            "fallbacks": record.fallbacks,
            "request_body": record.request_body,
            "response_body": record.response_body,
        }
        call = jobs_sql.insert_call(values, now=now)
        job.total_calls += 1
        job.successful_calls += record.status == CallStatus.SUCCESS
        job.failed_calls += record.status == CallStatus.ERROR
        job.cancelled_calls += record.status == CallStatus.CANCELLED
        job.prompt_tokens += record.prompt_tokens
        job.completion_tokens += record.completion_tokens
        job.total_tokens += total_tokens
        job.cost_nanos += record.cost_nanos
        job.provider_cost_nanos += record.provider_cost_nanos
        job.total_latency_ms += record.latency_ms
        if billable:
            job.billable_calls += 1
            job.billable_tokens += total_tokens
            job.billable_cost_nanos += record.cost_nanos
        if job.status == JobStatus.PENDING:
            job.status, job.started_at = JobStatus.IN_PROGRESS, job.started_at or now
        if complete_job and job.status in OPEN_STATUSES:
            failed = record.status == CallStatus.ERROR
            _finish_locked(
                team,
                job,
                status=JobStatus.FAILED if failed else JobStatus.COMPLETED,
                metadata=None,
                error_message=(record.client_error or record.error_code or "LLM call failed") if failed else None,
                actor="system",
            )
            return call
        jobs_sql.save_job_state(job)
        if billable and job.status in OPEN_STATUSES and team.budget_mode != "job":
            billing.accrue_usage(team=team, job_id=job.id, accrued_units=job_charge_units(team, job))
        elif billable and job.is_terminal:
            _charge_late_call(team, job, call)
    return call


def _charge_late_call(team: Team, job: Job, call: LLMCall) -> None:
    """Charge what a billable call that landed after its job finished adds to the job's bill, if the
    job was charged when it finished. A failed/cancelled job whose hold was released stays free, even
    if the team's `charge_failed_jobs` changed since: its settled-or-released hold is what it decided."""
    if job.status != JobStatus.COMPLETED and not _was_settled(job):
        return
    owed = job_charge_units(team, job) - job.credits_charged_units
    if owed <= 0:
        return
    logger.warning("call %s finished after job %s %s; charging %s units separately", call.id, job.id, job.status, owed)
    billing.charge_usage(
        team=team,
        job_id=job.id,
        charge_units=owed,
        reference=f"charge:{job.id}:{call.id}",
        reason="call finished after job completion",
    )
    Job.objects.filter(pk=job.pk).update(credits_charged_units=job.credits_charged_units + owed)


def _was_settled(job: Job) -> bool:
    return Reservation.objects.filter(job_id=job.id, status=ReservationStatus.SETTLED).exists()


def expire_stale_jobs(*, now=None, limit: int = 500) -> int:
    """Fail jobs left pending/in_progress longer than SAAS_LLM_JOB_TIMEOUT, releasing their hold (or
    charging them, for a team with `charge_failed_jobs`)."""
    now = now or timezone.now()
    cutoff = now - timedelta(seconds=settings.SAAS_LLM_JOB_TIMEOUT_S)
    stale = list(
        Job.objects.filter(status__in=OPEN_STATUSES, created_at__lt=cutoff)
        .select_related("team")
        .order_by("created_at")[:limit]
    )
    expired = 0
    for job in stale:
        try:
            complete_job(team=job.team, job_id=job.id, status=JobStatus.FAILED, error_message="expired")
            expired += 1
        except JobAlreadyFinished:
            pass  # finished by its client meanwhile
    return expired
