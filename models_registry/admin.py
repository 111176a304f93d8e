from django.contrib import admin
from django.db import transaction
from django.forms.models import BaseInlineFormSet
from django.utils import timezone

from models_registry.models import AccessGroup, Deployment, ModelAlias
from models_registry.services import bump_registry_version


class RegistryAdmin(admin.ModelAdmin):
    """Admin edits go through the same version bump as the API, so every worker rebuilds its Router."""

    def save_related(self, request, form, formsets, change):
        with transaction.atomic():
            super().save_related(request, form, formsets, change)
            bump_registry_version()

    def delete_model(self, request, obj):
        with transaction.atomic():
            super().delete_model(request, obj)
            bump_registry_version()

    def delete_queryset(self, request, queryset):
        # The list's "delete selected" action: workers must stop routing to what it deleted.
        with transaction.atomic():
            super().delete_queryset(request, queryset)
            bump_registry_version()


class RetiringFormSet(BaseInlineFormSet):
    """A deployment removed in the admin is retired, not deleted: its calls keep it (history)."""

    def delete_existing(self, obj, commit=True):
        if commit:
            Deployment.objects.filter(pk=obj.pk).update(retired_at=timezone.now())


class DeploymentInline(admin.TabularInline):
    model = Deployment
    formset = RetiringFormSet
    extra = 0
    fields = (
        "priority",
        "position",
        "litellm_model",
        "api_base",
        "api_key",
        "weight",
        "timeout_s",
        "input_cost_per_token",
        "output_cost_per_token",
    )


@admin.register(ModelAlias)
class ModelAliasAdmin(RegistryAdmin):
    list_display = ("name", "display_name", "status", "updated_at")
    list_filter = ("status",)
    search_fields = ("name", "display_name", "deployments__litellm_model")
    inlines = [DeploymentInline]


@admin.register(AccessGroup)
class AccessGroupAdmin(RegistryAdmin):
    list_display = ("name", "display_name", "status", "updated_at")
    list_filter = ("status",)
    search_fields = ("name", "display_name")
    filter_horizontal = ("aliases",)
