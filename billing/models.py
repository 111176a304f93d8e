import uuid

from django.db import models
from django.db.models import Q

from tenants.models import Team


class CreditAccount(models.Model):
    """A team's cached balance. Only billing/services.py writes it, always with the ledger row.

    All amounts are credit units (1 credit = 10_000 units, see billing/money.py).
    balance = allocated − used = Σ ledger amounts; remaining = balance − reserved.
    """

    team = models.OneToOneField(Team, on_delete=models.CASCADE, primary_key=True, related_name="credit_account")
    allocated_units = models.BigIntegerField(default=0)
    used_units = models.BigIntegerField(default=0)
    balance_units = models.BigIntegerField(default=0)
    reserved_units = models.BigIntegerField(default=0)
    low_balance_armed = models.BooleanField(default=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"credits of {self.team_id}"

    @property
    def remaining_units(self) -> int:
        return self.balance_units - self.reserved_units


class EntryKind(models.TextChoices):
    GRANT = "grant"
    PURCHASE = "purchase"
    CHARGE = "charge"
    REFUND = "refund"
    ADJUSTMENT = "adjustment"


class LedgerEntry(models.Model):
    """Append-only credit transaction. Never updated or deleted."""

    # The sequence gives a total order (newest first) even within one timestamp.
    id = models.BigAutoField(primary_key=True)
    transaction_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="ledger_entries")
    kind = models.CharField(max_length=16, choices=EntryKind.choices)
    amount_units = models.BigIntegerField()
    balance_after_units = models.BigIntegerField()
    # Plain UUID, not a foreign key: billing sits below jobs and must not import it.
    job_id = models.UUIDField(null=True, blank=True, db_index=True)
    reason = models.CharField(max_length=500, blank=True, default="")
    actor = models.CharField(max_length=200, blank=True, default="")
    # Makes every retryable write idempotent: one charge per job, one grant per request, ….
    reference = models.CharField(max_length=255, null=True, blank=True, unique=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "ledger entries"
        indexes = [models.Index(fields=["team", "-created_at"])]
        constraints = [
            models.CheckConstraint(
                condition=(Q(kind="charge") & Q(amount_units__lte=0))
                | (~Q(kind="charge") & ~Q(kind="adjustment") & Q(amount_units__gt=0))
                | Q(kind="adjustment"),
                name="ledger_amount_sign_matches_kind",
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.amount_units} ({self.team_id})"


class ReservationStatus(models.TextChoices):
    OPEN = "open"
    SETTLED = "settled"
    RELEASED = "released"


class Reservation(models.Model):
    """Credits held for one job from creation until it completes (reserve → settle)."""

    id = models.BigAutoField(primary_key=True)
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="reservations")
    job_id = models.UUIDField(unique=True)
    initial_units = models.BigIntegerField()
    # In usage modes the hold grows with the job's accrued usage: amount = max(initial, accrued).
    amount_units = models.BigIntegerField()
    # The job's usage so far in credit units (usage modes); the hold never drops below initial_units.
    accrued_units = models.BigIntegerField(default=0)
    status = models.CharField(max_length=16, choices=ReservationStatus.choices, default=ReservationStatus.OPEN)
    expires_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["status", "expires_at"]), models.Index(fields=["team", "status"])]

    def __str__(self) -> str:
        return f"reservation {self.job_id} ({self.status})"
