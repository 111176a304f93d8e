from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest

from tenants import services
from tenants.models import (
    ApiKey,
    DeliveryAttempt,
    Event,
    Organization,
    Team,
    TeamStatus,
    WebhookDelivery,
    WebhookEndpoint,
)


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin):
    list_display = ("id", "name", "created_at")
    search_fields = ("id", "name")
    date_hierarchy = "created_at"


class ApiKeyInline(admin.TabularInline):
    model = ApiKey
    fields = ("prefix", "name", "created_at", "last_used_at", "expires_at", "revoked_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Team)
class TeamAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "organization",
        "status",
        "budget_mode",
        "credits_remaining",
        "credits_reserved",
        "created_at",
    )
    list_filter = ("status", "budget_mode", "organization")
    search_fields = ("id", "team_alias", "organization__id")
    date_hierarchy = "created_at"
    filter_horizontal = ("access_groups",)
    readonly_fields = ("status", "credits_balance", "credits_reserved", "credits_remaining", "created_at", "updated_at")
    inlines = [ApiKeyInline]
    actions = ["suspend", "resume", "create_key", "add_credits"]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("organization", "credit_account")

    def get_readonly_fields(self, request, obj=None):
        # The id is the tenant's identity everywhere (keys, ledger, jobs): fixed once created.
        return (*self.readonly_fields, "id") if obj else self.readonly_fields

    @admin.display(description="balance (credits)")
    def credits_balance(self, team: Team):
        from billing import money

        return money.units_to_credits(getattr(getattr(team, "credit_account", None), "balance_units", 0))

    @admin.display(description="reserved")
    def credits_reserved(self, team: Team):
        from billing import money

        return money.units_to_credits(getattr(getattr(team, "credit_account", None), "reserved_units", 0))

    @admin.display(description="remaining")
    def credits_remaining(self, team: Team):
        from billing import money

        account = getattr(team, "credit_account", None)
        return money.units_to_credits(account.remaining_units if account else 0)

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if not change:
            from billing import services as billing_services

            billing_services.open_account(team=obj)

    @admin.action(description="Suspend selected teams")
    def suspend(self, request: HttpRequest, queryset: QuerySet[Team]) -> None:
        for team in queryset:
            services.set_team_status(team=team, status=TeamStatus.SUSPENDED)
        self.message_user(request, f"Suspended {queryset.count()} team(s).", messages.SUCCESS)

    @admin.action(description="Resume selected teams")
    def resume(self, request: HttpRequest, queryset: QuerySet[Team]) -> None:
        for team in queryset:
            services.set_team_status(team=team, status=TeamStatus.ACTIVE)
        self.message_user(request, f"Resumed {queryset.count()} team(s).", messages.SUCCESS)

    @admin.action(description="Create a virtual key (shown once)")
    def create_key(self, request: HttpRequest, queryset: QuerySet[Team]) -> None:
        for team in queryset:
            key, raw_key = services.issue_key(team=team, name=f"admin:{request.user.get_username()}")
            self.message_user(
                request, f"New key for {team.id} (copy it now, it is shown only once): {raw_key}", messages.WARNING
            )

    @admin.action(description="Add credits…")
    def add_credits(self, request: HttpRequest, queryset: QuerySet[Team]):
        from billing.admin import add_credits_view

        return add_credits_view(self, request, queryset)


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ("prefix", "name", "team", "is_admin", "created_at", "last_used_at", "expires_at", "revoked_at")
    list_filter = ("revoked_at", ("team", admin.RelatedOnlyFieldListFilter))
    search_fields = ("prefix", "name", "team__id")
    date_hierarchy = "created_at"
    # The hash is never shown: it is not a key and nothing can be done with it here.
    fields = ("prefix", "name", "team", "created_at", "last_used_at", "expires_at", "revoked_at")
    actions = ["revoke"]

    def get_fields(self, request, obj=None):
        # Adding: leave the team empty for an admin key; the key itself is shown once, in a message.
        return ("name", "team", "expires_at") if obj is None else self.fields

    def get_readonly_fields(self, request, obj=None):
        return () if obj is None else ("prefix", "team", "created_at", "last_used_at", "revoked_at")

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        key, raw_key = services.issue_key(team=obj.team, name=obj.name, expires_at=obj.expires_at)
        obj.pk, obj.key_hash, obj.prefix, obj.created_at = key.pk, key.key_hash, key.prefix, key.created_at
        obj._state.adding = False
        kind = "admin key" if key.is_admin else f"key for team {key.team_id}"
        self.message_user(request, f"New {kind} (copy it now, it is shown only once): {raw_key}", messages.WARNING)

    @admin.display(boolean=True, description="admin")
    def is_admin(self, key: ApiKey) -> bool:
        return key.is_admin

    @admin.action(description="Revoke selected keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        for key in queryset:
            services.revoke_key(key=key)
        self.message_user(request, f"Revoked {queryset.count()} key(s).", messages.SUCCESS)


@admin.register(Event)
class EventAdmin(admin.ModelAdmin):
    list_display = ("id", "type", "team", "created_at")
    list_filter = ("type", ("team", admin.RelatedOnlyFieldListFilter))
    date_hierarchy = "created_at"
    readonly_fields = ("id", "type", "team", "payload", "created_at")

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False


@admin.register(WebhookEndpoint)
class WebhookEndpointAdmin(admin.ModelAdmin):
    list_display = ("url", "team", "events", "created_at", "deleted_at")
    list_filter = (("team", admin.RelatedOnlyFieldListFilter), "deleted_at")
    search_fields = ("url", "team__id")
    exclude = ("secret",)
    readonly_fields = ("team", "created_at")

    def has_add_permission(self, request) -> bool:
        return False  # registered through the API, which shows the signing secret once


class DeliveryAttemptInline(admin.TabularInline):
    model = DeliveryAttempt
    fields = ("number", "status_code", "error", "duration_ms", "created_at")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(WebhookDelivery)
class WebhookDeliveryAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "event_type",
        "endpoint",
        "status",
        "attempts",
        "last_status_code",
        "next_attempt_at",
        "delivered_at",
    )
    list_filter = ("status", ("endpoint__team", admin.RelatedOnlyFieldListFilter), "created_at")
    search_fields = ("id", "event__id", "endpoint__url", "endpoint__team__id")
    date_hierarchy = "created_at"
    readonly_fields = [field.name for field in WebhookDelivery._meta.fields]
    inlines = [DeliveryAttemptInline]
    actions = ["redeliver"]

    def has_add_permission(self, request) -> bool:
        return False

    @admin.display(description="event")
    def event_type(self, delivery: WebhookDelivery) -> str:
        return delivery.event.type

    @admin.action(description="Redeliver selected deliveries now")
    def redeliver(self, request: HttpRequest, queryset: QuerySet[WebhookDelivery]) -> None:
        from tenants import webhooks

        for delivery in queryset:
            webhooks.redeliver(delivery=delivery)
        self.message_user(request, f"Queued {queryset.count()} delivery(ies) again.", messages.SUCCESS)
