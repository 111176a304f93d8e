from django.db import models

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
