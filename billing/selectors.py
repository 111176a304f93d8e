from datetime import datetime

from django.db.models import OuterRef, QuerySet, Subquery, Sum

from billing import money
from billing.models import CreditAccount, LedgerEntry
from tenants.models import Organization, Team


def get_account_summary(*, team: Team) -> dict:
    """The team's balance as the API shows it (credits as floats for JSON, computed from units)."""
    account = CreditAccount.objects.filter(team=team).first() or CreditAccount(team=team)
    return {
        "credits_allocated": float(money.units_to_credits(account.allocated_units)),
        "credits_used": float(money.units_to_credits(account.used_units)),
        "credits_reserved": float(money.units_to_credits(account.reserved_units)),
        "credits_remaining": float(money.units_to_credits(account.remaining_units)),
    }


def get_organization_credit_totals(*, organization: Organization) -> dict:
    totals = CreditAccount.objects.filter(team__organization=organization).aggregate(
        allocated=Sum("allocated_units"),
        used=Sum("used_units"),
        balance=Sum("balance_units"),
        reserved=Sum("reserved_units"),
    )
    return {
        "credits_allocated": float(money.units_to_credits(totals["allocated"] or 0)),
        "credits_used": float(money.units_to_credits(totals["used"] or 0)),
        "credits_remaining": float(money.units_to_credits((totals["balance"] or 0) - (totals["reserved"] or 0))),
    }


def list_transactions(
    *,
    team: Team,
    kind: str | None = None,
    job_id=None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> QuerySet[LedgerEntry]:
    entries = LedgerEntry.objects.filter(team=team)
    if kind:
        entries = entries.filter(kind=kind)
    if job_id:
        entries = entries.filter(job_id=job_id)
    if start:
        entries = entries.filter(created_at__gte=start)
    if end:
        entries = entries.filter(created_at__lt=end)
    return entries.order_by("-id")


def ledger_discrepancies() -> list[str]:
    """Every way a team's cached account disagrees with its ledger or reservations (database sums)."""
    from django.db.models import Q

    from billing.models import EntryKind, Reservation, ReservationStatus

    ledger = {
        row["team_id"]: row
        for row in LedgerEntry.objects.values("team_id").annotate(
            total=Sum("amount_units"),
            charged=Sum("amount_units", filter=Q(kind=EntryKind.CHARGE)),
        )
    }
    held = {
        row["team_id"]: row["total"]
        for row in Reservation.objects.filter(status=ReservationStatus.OPEN)
        .values("team_id")
        .annotate(total=Sum("amount_units"))
    }
    last_after = (
        LedgerEntry.objects.filter(team_id=OuterRef("team_id")).order_by("-id").values("balance_after_units")[:1]
    )
    problems = []
    for account in CreditAccount.objects.annotate(last_after=Subquery(last_after)).order_by("team_id"):
        sums = ledger.get(account.team_id, {})
        total, charged = sums.get("total") or 0, -(sums.get("charged") or 0)
        if account.balance_units != total:
            problems.append(f"{account.team_id}: balance {account.balance_units} != ledger sum {total} (units)")
        if account.used_units != charged:
            problems.append(f"{account.team_id}: used {account.used_units} != charges {charged} (units)")
        if account.allocated_units - account.used_units != account.balance_units:
            problems.append(f"{account.team_id}: allocated − used != balance")
        if account.reserved_units != (held.get(account.team_id) or 0):
            problems.append(
                f"{account.team_id}: reserved {account.reserved_units} != open reservations {held.get(account.team_id) or 0} (units)"
            )
        if account.last_after is not None and account.last_after != account.balance_units:
            problems.append(
                f"{account.team_id}: last balance_after {account.last_after} != balance {account.balance_units}"
            )
    return problems
