"""The only writers of credit accounts, ledger entries and reservations (SPEC §6).

Every function runs one short transaction that locks the team's CreditAccount row
(`SELECT … FOR UPDATE`; on SQLite the IMMEDIATE transaction serialises writers) and writes the
ledger entry and the cached balance together. No network I/O happens inside. Inside a caller's
transaction the hold/settle/release steps take no savepoint: any error aborts the whole change.
"""

import uuid
from datetime import timedelta
from decimal import Decimal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone

from billing import money
from billing import sql as ledger_sql
from billing.errors import InsufficientCredits
from billing.models import CreditAccount, EntryKind, LedgerEntry, Reservation, ReservationStatus
from tenants.events import emit_event
from tenants.models import Team


def open_account(*, team: Team) -> CreditAccount:
    """Create the team's credit account if missing. Idempotent."""
    account, _ = CreditAccount.objects.get_or_create(team=team)
    return account


def _locked_account(team: Team) -> CreditAccount:
    account = ledger_sql.lock_account(team.id)
    if account is None:
        CreditAccount.objects.get_or_create(team=team)
        account = ledger_sql.lock_account(team.id)
    return account


def _save(account: CreditAccount) -> None:
    ledger_sql.save_account(account, now=timezone.now())


def _check_low_balance(team: Team, account: CreditAccount, *, rearm: bool) -> None:
    """Fire credits.low_balance once per crossing from ≥ threshold to < threshold."""
    if team.low_balance_threshold is None:
        return
    threshold = money.credits_to_units(team.low_balance_threshold)
    below = account.remaining_units < threshold
    # Only a debit (reservation, accrual, charge) can cross downwards; a grant (rearm) never fires.
    if below and account.low_balance_armed and not rearm:
        account.low_balance_armed = False
        emit_event(
            team=team,
            event_type="credits.low_balance",
            data={
                "credits_remaining": float(money.units_to_credits(account.remaining_units)),
                "low_balance_threshold": float(team.low_balance_threshold),
            },
        )
    elif rearm:
        # A credit increase re-arms only when it lifts the balance to the threshold; a team
        # granted less than its threshold never crossed it, so it must not fire later.
        account.low_balance_armed = not below


def _append(
    account: CreditAccount, *, kind: str, amount_units: int, reason: str, actor: str, job_id=None, reference=None
) -> LedgerEntry:
    account.balance_units += amount_units
    if kind == EntryKind.CHARGE:
        account.used_units -= amount_units
    else:
        account.allocated_units += amount_units
    values = {
        "team_id": account.team_id,
        "kind": kind,
        "amount_units": amount_units,
        "balance_after_units": account.balance_units,
        "job_id": job_id,
        "reason": reason,
        "actor": actor,
        "reference": reference,
    }
    return ledger_sql.insert(LedgerEntry, values, now=timezone.now())


def grant_credits(
    *,
    team: Team,
    amount: Decimal,
    kind: str = EntryKind.GRANT,
    reason: str = "",
    actor: str,
    reference: str | None = None,
) -> LedgerEntry:
    """Add credits (grant, purchase or refund). Idempotent per `reference`. Locks the account."""
    if kind not in (EntryKind.GRANT, EntryKind.PURCHASE, EntryKind.REFUND):
        raise ValueError(f"cannot add credits of kind {kind!r}")
    units = money.credits_to_units(amount)
    if units <= 0:
        raise ValueError("amount must be positive")
    if reference:
        existing = LedgerEntry.objects.filter(reference=reference).first()
        if existing is not None:
            return existing
    try:
        with transaction.atomic():
            account = _locked_account(team)
            entry = _append(account, kind=kind, amount_units=units, reason=reason, actor=actor, reference=reference)
            _check_low_balance(team, account, rearm=True)
            _save(account)
            return entry
    except IntegrityError:
        # A concurrent request with the same reference won the race; return its entry.
        if reference:
            existing = LedgerEntry.objects.filter(reference=reference).first()
            if existing is not None:
                return existing
        raise


def adjust_credits(
    *, team: Team, amount: Decimal, reason: str, actor: str, reference: str | None = None
) -> LedgerEntry:
    """Staff correction, positive or negative; never below zero remaining. Raises InsufficientCredits."""
    units = money.credits_to_units(amount)
    if units == 0:
        raise ValueError("amount must not be zero")
    with transaction.atomic():
        account = _locked_account(team)
        if units < 0 and account.remaining_units + units < 0:
            raise InsufficientCredits("Adjustment would take the balance below zero")
        entry = _append(
            account, kind=EntryKind.ADJUSTMENT, amount_units=units, reason=reason, actor=actor, reference=reference
        )
        _check_low_balance(team, account, rearm=units > 0)
        _save(account)
        return entry


def reserve_for_job(*, team: Team, job_id: uuid.UUID) -> Reservation:
    """Hold the job's expected charge. Raises InsufficientCredits (403) when remaining < hold."""
    reservation = hold_for_job(team=team, job_id=job_id)
    # Raised outside the block: a refusal wrote nothing and must not doom a caller's transaction.
    if reservation is None:
        raise InsufficientCredits()
    return reservation


def hold_for_job(*, team: Team, job_id: uuid.UUID) -> Reservation | None:
    """Hold the job's expected charge; None, leaving nothing behind, when remaining < hold.

    One conditional UPDATE takes the account's lock and checks the balance, so N concurrent holds
    against a balance covering k succeed exactly k times; it comes last, so the lock is held only
    to the caller's commit.
    """
    units = money.reservation_units(
        budget_mode=team.budget_mode, credits_per_job=team.credits_per_job, min_reservation=team.min_reservation
    )
    now = timezone.now()
    expires_at = now + timedelta(seconds=settings.SAAS_LLM_JOB_TIMEOUT_S + 3600)
    values = {
        "team_id": team.id,
        "job_id": job_id,
        "initial_units": units,
        "amount_units": units,
        "expires_at": expires_at,
    }
    with transaction.atomic(savepoint=False):
        reservation = ledger_sql.insert(Reservation, values, now=now)
        account = ledger_sql.hold(team.id, units, now=now)
        if account is None and open_account(team=team).remaining_units >= units:  # a team without an account yet
            account = ledger_sql.hold(team.id, units, now=now)
        if account is None:
            ledger_sql.delete_reservation(reservation.pk)
            return None
        armed = account.low_balance_armed
        _check_low_balance(team, account, rearm=False)
        if account.low_balance_armed != armed:
            _save(account)
    return reservation


def check_call_allowed(*, team: Team, job_id: uuid.UUID | None) -> None:
    """Usage modes: admit an LLM call only while the team's remaining credits, counting this job's
    accrued usage but not the rest of its hold, are > 0. Raises InsufficientCredits. No lock: a read."""
    if team.budget_mode == "job":
        return
    account = CreditAccount.objects.filter(team=team).values_list("balance_units", "reserved_units").first()
    hold = (
        Reservation.objects.filter(job_id=job_id, status=ReservationStatus.OPEN)
        .values_list("amount_units", "accrued_units")
        .first()
    )
    if account is None:
        raise InsufficientCredits()
    available = account[0] - account[1]
    if hold is not None:
        available += hold[0] - hold[1]
    if available <= 0:
        raise InsufficientCredits()


def accrue_usage(*, team: Team, job_id: uuid.UUID, accrued_units: int) -> None:
    """Grow an open reservation to the job's accrued usage (usage modes), so remaining reflects it."""
    with transaction.atomic(savepoint=False):
        account = _locked_account(team)
        reservation = ledger_sql.lock_open_reservation(job_id)
        if reservation is None:
            return
        new_amount = max(reservation.initial_units, accrued_units)
        reservation.accrued_units = accrued_units
        account.reserved_units += new_amount - reservation.amount_units
        reservation.amount_units = new_amount
        ledger_sql.save_reservation(reservation, "amount_units", "accrued_units")
        _check_low_balance(team, account, rearm=False)
        _save(account)


def settle_job(
    *, team: Team, job_id: uuid.UUID, charge_units: int, actor: str = "system", reason: str = ""
) -> LedgerEntry | None:
    """Charge a completed job once and release its hold. Idempotent per job (one charge ever).

    Returns the charge entry (None when nothing was charged). Locks the account and reservation.
    """
    if charge_units < 0:
        raise ValueError("charge must not be negative")
    reference = f"charge:{job_id}"
    with transaction.atomic(savepoint=False):
        account = _locked_account(team)
        held = ledger_sql.close_open_reservation(job_id, ReservationStatus.SETTLED, now=timezone.now())
        if held is None:
            # An open hold means no charge yet (a charge closes the hold in its transaction).
            existing = LedgerEntry.objects.filter(reference=reference).first()
            if existing is not None:
                return existing
            if Reservation.objects.filter(job_id=job_id).exists():
                return None  # already settled with no charge, or released: never charge after the fact
        else:
            account.reserved_units -= held
        entry = None
        if charge_units > 0:
            entry = _append(
                account,
                kind=EntryKind.CHARGE,
                amount_units=-charge_units,
                reason=reason or "job completed",
                actor=actor,
                job_id=job_id,
                reference=reference,
            )
        _check_low_balance(team, account, rearm=False)
        _save(account)
        return entry


def release_job(*, team: Team, job_id: uuid.UUID) -> bool:
    """Release a job's hold without charging (failed/cancelled/expired). Idempotent; False if not open."""
    with transaction.atomic(savepoint=False):
        account = _locked_account(team)
        held = ledger_sql.close_open_reservation(job_id, ReservationStatus.RELEASED, now=timezone.now())
        if held is None:
            return False
        account.reserved_units -= held
        _save(account)
        return True


def release_expired_reservations(*, now=None, limit: int = 500) -> int:
    """Release open reservations past their expiry (jobs that never completed). Returns the count."""
    now = now or timezone.now()
    expired = list(
        Reservation.objects.filter(status=ReservationStatus.OPEN, expires_at__lt=now)
        .select_related("team")
        .order_by("expires_at")[:limit]
    )
    return sum(release_job(team=reservation.team, job_id=reservation.job_id) for reservation in expired)


def charge_usage(
    *, team: Team, job_id: uuid.UUID, charge_units: int, reference: str, reason: str, actor: str = "system"
) -> LedgerEntry:
    """An extra charge for a job (a call that finished after its job was settled). Idempotent per reference."""
    if charge_units <= 0:
        raise ValueError("charge must be positive")
    existing = LedgerEntry.objects.filter(reference=reference).first()
    if existing is not None:
        return existing
    try:
        with transaction.atomic():
            account = _locked_account(team)
            entry = _append(
                account,
                kind=EntryKind.CHARGE,
                amount_units=-charge_units,
                reason=reason,
                actor=actor,
                job_id=job_id,
                reference=reference,
            )
            _check_low_balance(team, account, rearm=False)
            _save(account)
            return entry
    except IntegrityError:
        existing = LedgerEntry.objects.filter(reference=reference).first()
        if existing is not None:
            return existing
        raise
