from django.db import models

from models_registry.credentials import validate_api_key_reference
from saas_llm.slugs import SLUG_MAX_LENGTH, slug_validator


class Status(models.TextChoices):
    ACTIVE = "active"
    INACTIVE = "inactive"


class ModelAlias(models.Model):
    """The name teams call (`chat-fast`); resolves to ordered deployments."""

    name = models.CharField(primary_key=True, max_length=SLUG_MAX_LENGTH, validators=[slug_validator])
    display_name = models.CharField(max_length=200, blank=True, default="")
    description = models.TextField(blank=True, default="")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "model aliases"

    def __str__(self) -> str:
        return self.name


class AccessGroup(models.Model):
    """A named set of aliases; teams are granted groups, never single aliases."""

    name = models.CharField(primary_key=True, max_length=SLUG_MAX_LENGTH, validators=[slug_validator])
    display_name = models.CharField(max_length=200, blank=True, default="")
    description = models.TextField(blank=True, default="")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    aliases = models.ManyToManyField(ModelAlias, related_name="access_groups", blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class LiveDeploymentManager(models.Manager):
    def get_queryset(self) -> models.QuerySet:
        return super().get_queryset().filter(retired_at__isnull=True)


class Deployment(models.Model):
    """One way to serve an alias: a litellm model string on a provider, with retry/fallback placement.

    Same priority = load-balanced by weight; a higher priority number is a fallback tier, tried
    only after the lower tiers failed (with retries).

    A deployment taken off its alias is retired, never deleted: the calls it served keep pointing
    at it (call history is never rewritten). `objects` (and `alias.deployments`) hold only live
    ones; `all_objects` every one.
    """

    alias = models.ForeignKey(ModelAlias, on_delete=models.CASCADE, related_name="deployments")
    position = models.PositiveIntegerField(default=0)
    litellm_model = models.CharField(max_length=200)
    api_base = models.URLField(max_length=500, blank=True, default="")
    # A reference such as `os.environ/OPENAI_API_KEY` to a provider key variable, never a secret.
    api_key = models.CharField(max_length=200, blank=True, default="", validators=[validate_api_key_reference])
    priority = models.PositiveIntegerField(default=0)
    weight = models.PositiveIntegerField(default=1)
    timeout_s = models.FloatField(default=60.0)
    # Per-token USD prices overriding litellm's price map (exact decimals; never summed in SQL).
    input_cost_per_token = models.DecimalField(max_digits=24, decimal_places=18, null=True, blank=True)
    output_cost_per_token = models.DecimalField(max_digits=24, decimal_places=18, null=True, blank=True)
    retired_at = models.DateTimeField(null=True, blank=True, editable=False)

    objects = LiveDeploymentManager()
    all_objects = models.Manager()  # noqa: DJ012 - a manager (ruff only knows `objects` by name)

    class Meta:
        ordering = ["alias", "priority", "position", "id"]
        base_manager_name = "all_objects"

    def __str__(self) -> str:
        return f"{self.alias_id} → {self.litellm_model} (p{self.priority})"


class RegistryVersion(models.Model):
    """A single counter bumped on every registry write, so every worker rebuilds its Router."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    version = models.PositiveBigIntegerField(default=0)

    def __str__(self) -> str:
        return f"registry v{self.version}"
