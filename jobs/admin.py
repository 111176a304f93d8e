from django.contrib import admin

from billing import money
from jobs.models import Job, LLMCall


class LLMCallInline(admin.TabularInline):
    model = LLMCall
    fields = (
        "created_at",
        "model_alias",
        "resolved_model",
        "status",
        "total_tokens",
        "cost_usd",
        "latency_ms",
        "error",
    )
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None) -> bool:
        return False

    @admin.display(description="cost (USD)")
    def cost_usd(self, call: LLMCall):
        return money.nanos_to_usd(call.cost_nanos)


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Job)
class JobAdmin(ReadOnlyAdmin):
    list_display = (
        "id",
        "team",
        "job_type",
        "status",
        "total_calls",
        "total_tokens",
        "cost_usd",
        "credits_charged",
        "created_at",
    )
    list_filter = ("status", ("team", admin.RelatedOnlyFieldListFilter), "job_type", "created_at")
    search_fields = ("id", "team__id", "job_type", "user_id", "external_id")
    date_hierarchy = "created_at"
    inlines = [LLMCallInline]

    @admin.display(description="cost (USD)")
    def cost_usd(self, job: Job):
        return money.nanos_to_usd(job.cost_nanos)

    @admin.display(description="credits charged")
    def credits_charged(self, job: Job):
        return money.units_to_credits(job.credits_charged_units)


@admin.register(LLMCall)
class LLMCallAdmin(ReadOnlyAdmin):
    list_display = ("id", "team", "model_alias", "resolved_model", "status", "total_tokens", "latency_ms", "created_at")
    list_filter = ("status", ("team", admin.RelatedOnlyFieldListFilter), "model_alias", "created_at")
    search_fields = ("id", "job__id", "team__id", "model_alias", "provider_response_id")
    date_hierarchy = "created_at"
