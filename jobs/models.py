import uuid

from django.db import models

from models_registry.models import Deployment
from tenants.models import Team


class JobStatus(models.TextChoices):
    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_STATUSES = (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)
OPEN_STATUSES = (JobStatus.PENDING, JobStatus.IN_PROGRESS)


class Job(models.Model):
    """One business operation; its calls are rolled up here and charged once when it completes.

    Aggregates are maintained by jobs/services.py under the job's row lock, so they always equal
    the sums over the job's LLMCall rows.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="jobs")
    job_type = models.CharField(max_length=100)
    status = models.CharField(max_length=16, choices=JobStatus.choices, default=JobStatus.PENDING)
    metadata = models.JSONField(default=dict, blank=True)
    user_id = models.CharField(max_length=255, null=True, blank=True)
    external_id = models.CharField(max_length=255, null=True, blank=True)
    error_message = models.TextField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    total_calls = models.PositiveIntegerField(default=0)
    successful_calls = models.PositiveIntegerField(default=0)
    failed_calls = models.PositiveIntegerField(default=0)
    cancelled_calls = models.PositiveIntegerField(default=0)
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    total_tokens = models.PositiveBigIntegerField(default=0)
    cost_nanos = models.BigIntegerField(default=0)
    provider_cost_nanos = models.BigIntegerField(default=0)
    total_latency_ms = models.BigIntegerField(default=0)
    # What the budget modes bill: calls with status success or cancelled (SPEC §6).
    billable_calls = models.PositiveIntegerField(default=0)
    billable_tokens = models.PositiveBigIntegerField(default=0)
    billable_cost_nanos = models.BigIntegerField(default=0)
    credits_charged_units = models.BigIntegerField(default=0)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["team", "-created_at"]),
            models.Index(fields=["team", "status"]),
            models.Index(fields=["status", "created_at"]),
            models.Index(fields=["team", "job_type"]),
        ]

    def __str__(self) -> str:
        return f"{self.job_type} {self.id}"

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES


class CallStatus(models.TextChoices):
    SUCCESS = "success"
    ERROR = "error"
    CANCELLED = "cancelled"


BILLABLE_CALL_STATUSES = (CallStatus.SUCCESS, CallStatus.CANCELLED)


class LLMCall(models.Model):
    """Every LLM call — success, provider error or cancelled stream — is exactly one row."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    job = models.ForeignKey(Job, on_delete=models.PROTECT, related_name="calls")
    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="llm_calls")
    model_alias = models.CharField(max_length=64)
    # PROTECT: a deployment that served calls is retired, never deleted (history is not rewritten).
    deployment = models.ForeignKey(Deployment, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    resolved_model = models.CharField(max_length=200, blank=True, default="")
    provider_response_id = models.CharField(max_length=255, blank=True, default="")
    purpose = models.CharField(max_length=200, blank=True, default="")
    stream = models.BooleanField(default=False)
    status = models.CharField(max_length=16, choices=CallStatus.choices)
    error = models.TextField(blank=True, default="")
    error_code = models.CharField(max_length=64, blank=True, default="")
    finish_reason = models.CharField(max_length=32, blank=True, default="")
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    total_tokens = models.PositiveBigIntegerField(default=0)
    provider_cost_nanos = models.BigIntegerField(default=0)
    cost_nanos = models.BigIntegerField(default=0)
    unpriced = models.BooleanField(default=False)
    price_snapshot = models.JSONField(default=dict, blank=True)
    latency_ms = models.PositiveIntegerField(default=0)
    ttft_ms = models.PositiveIntegerField(null=True, blank=True)
    fallbacks = models.PositiveSmallIntegerField(default=0)
    request_body = models.JSONField(null=True, blank=True)
    response_body = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["created_at"]
        indexes = [
            models.Index(fields=["job", "created_at"]),
            models.Index(fields=["team", "created_at"]),
            models.Index(fields=["team", "model_alias"]),
        ]

    def __str__(self) -> str:
        return f"{self.model_alias} {self.status} {self.id}"

    @property
    def is_billable(self) -> bool:
        return self.status in BILLABLE_CALL_STATUSES
