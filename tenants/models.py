import hashlib
import secrets
import uuid
from decimal import Decimal

from django.core.validators import MinValueValidator
from django.db import models
from django.utils import timezone

from saas_llm.slugs import SLUG_MAX_LENGTH, slug_validator

KEY_PREFIX = "sk-"
KEY_DISPLAY_CHARS = 8


class Organization(models.Model):
    id = models.CharField(primary_key=True, max_length=SLUG_MAX_LENGTH, validators=[slug_validator])
    name = models.CharField(max_length=200)
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.id


class TeamStatus(models.TextChoices):
    ACTIVE = "active"
    SUSPENDED = "suspended"


class BudgetMode(models.TextChoices):
    JOB = "job"
    USD = "usd"
    TOKENS = "tokens"


def _credits_field(default: str | None = None, **kwargs) -> models.DecimalField:
    # Configuration values in credits (4 decimal places). They are never summed in SQL, so a
    # DecimalField is exact here; balances and ledger amounts are integers (billing/money.py).
    if default is not None:
        kwargs["default"] = Decimal(default)
    return models.DecimalField(max_digits=18, decimal_places=4, **kwargs)


class Team(models.Model):
    id = models.CharField(primary_key=True, max_length=SLUG_MAX_LENGTH, validators=[slug_validator])
    organization = models.ForeignKey(Organization, on_delete=models.PROTECT, related_name="teams")
    team_alias = models.CharField(max_length=200, blank=True, default="")
    status = models.CharField(max_length=16, choices=TeamStatus.choices, default=TeamStatus.ACTIVE)
    # The registry is shared configuration below the tenants: a team points at groups and a
    # default alias; the registry never needs to know about teams.
    access_groups = models.ManyToManyField("models_registry.AccessGroup", related_name="teams", blank=True)
    default_model = models.ForeignKey(
        "models_registry.ModelAlias", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    budget_mode = models.CharField(max_length=16, choices=BudgetMode.choices, default=BudgetMode.JOB)
    credits_per_job = _credits_field("1", validators=[MinValueValidator(0)])
    credits_per_dollar = _credits_field("10", validators=[MinValueValidator(0)])
    tokens_per_credit = models.PositiveBigIntegerField(default=10_000, validators=[MinValueValidator(1)])
    min_reservation = _credits_field("1", validators=[MinValueValidator(0)])
    markup_percent = models.DecimalField(max_digits=9, decimal_places=4, default=Decimal("0"))
    rpm_limit = models.PositiveIntegerField(null=True, blank=True)
    tpm_limit = models.PositiveBigIntegerField(null=True, blank=True)
    max_parallel_requests = models.PositiveIntegerField(null=True, blank=True)
    low_balance_threshold = _credits_field(null=True, blank=True)
    store_prompts = models.BooleanField(default=False)
    expose_models = models.BooleanField(default=False)
    # Off (SPEC's default), a failed or cancelled job only releases its hold, so a team that fails
    # every job uses the providers for free; on, it is charged like a completed job (SPEC §6).
    charge_failed_jobs = models.BooleanField(
        default=False, help_text="Charge failed and cancelled jobs like completed ones (their billable calls)."
    )
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["organization", "id"])]

    def __str__(self) -> str:
        return self.id

    @property
    def is_suspended(self) -> bool:
        return self.status == TeamStatus.SUSPENDED


def hash_key(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


def generate_raw_key() -> str:
    # 32 random bytes → 43 url-safe characters (SPEC §3 asks for ≥ 32).
    return KEY_PREFIX + secrets.token_urlsafe(32)


class ApiKey(models.Model):
    """A virtual key (team-bound) or an admin key (team is null). Only the SHA-256 hash is stored."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    team = models.ForeignKey(Team, on_delete=models.CASCADE, null=True, blank=True, related_name="keys")
    name = models.CharField(max_length=200, default="default")
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    prefix = models.CharField(max_length=32, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at"]
        verbose_name = "API key"
        indexes = [models.Index(fields=["team", "created_at"])]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.name})"

    @property
    def is_admin(self) -> bool:
        return self.team_id is None

    def is_usable(self, now=None) -> bool:
        now = now or timezone.now()
        if self.revoked_at is not None:
            return False
        return self.expires_at is None or self.expires_at > now

    @staticmethod
    def display_prefix(raw_key: str) -> str:
        return raw_key[: len(KEY_PREFIX) + KEY_DISPLAY_CHARS]


class Event(models.Model):
    """A business event for a team (job.completed, credits.low_balance, …).

    Written in the same transaction as the state change that caused it; webhook deliveries
    fan out from these rows (the outbox), so an event is never lost with a crashed worker.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="events")
    type = models.CharField(max_length=64)
    payload = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]
        indexes = [models.Index(fields=["team", "type", "created_at"])]

    def __str__(self) -> str:
        return f"{self.type} {self.id}"


class IdempotencyStatus(models.TextChoices):
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"


class IdempotencyRecord(models.Model):
    """The first response to a POST with an Idempotency-Key, replayed for 24 h (SPEC §4).

    The unique (credential, key) constraint is what makes a key single-use across processes.
    """

    credential = models.CharField(max_length=64)  # SHA-256 of the bearer key, like ApiKey.key_hash
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(max_length=64)
    status = models.CharField(max_length=16, choices=IdempotencyStatus.choices, default=IdempotencyStatus.IN_PROGRESS)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    response_body = models.BinaryField(null=True, blank=True)
    response_headers = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["credential", "key"], name="idempotency_unique_credential_key")]

    def __str__(self) -> str:
        return f"{self.key} ({self.status})"


class WebhookEndpoint(models.Model):
    """Where a team wants its events POSTed. The secret signs every delivery (Standard Webhooks)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="webhooks")
    url = models.URLField(max_length=2000)
    events = models.JSONField(default=list)
    description = models.CharField(max_length=500, blank=True, default="")
    # Kept in the clear because signing needs it (like Stripe's endpoint secrets); never returned after creation.
    secret = models.CharField(max_length=100, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    deleted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at"]
        indexes = [models.Index(fields=["team", "deleted_at"])]

    def __str__(self) -> str:
        return self.url


class DeliveryStatus(models.TextChoices):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class WebhookDelivery(models.Model):
    """One event for one endpoint: the outbox row, written with the event, retried until done."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="deliveries")
    endpoint = models.ForeignKey(WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries")
    status = models.CharField(max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField()
    # Set by the worker that is sending it; an expired claim means that worker died (the sweep retries).
    claimed_until = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True, default="")
    delivered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["event", "endpoint"], name="one_delivery_per_event_and_endpoint")
        ]
        indexes = [models.Index(fields=["status", "next_attempt_at"]), models.Index(fields=["endpoint", "-created_at"])]
        verbose_name_plural = "webhook deliveries"

    def __str__(self) -> str:
        return f"{self.event_id} → {self.endpoint_id} ({self.status})"


class DeliveryAttempt(models.Model):
    delivery = models.ForeignKey(WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log")
    number = models.PositiveSmallIntegerField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.TextField(blank=True, default="")
    duration_ms = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["number"]

    def __str__(self) -> str:
        return f"attempt {self.number} of {self.delivery_id}"
