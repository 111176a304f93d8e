from decimal import Decimal

from django import forms
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.template.response import TemplateResponse

from billing import money, services
from billing.models import EntryKind, LedgerEntry, Reservation


class AddCreditsForm(forms.Form):
    amount = forms.DecimalField(min_value=Decimal("0.0001"), max_value=money.MAX_CREDITS, decimal_places=4)
    kind = forms.ChoiceField(
        choices=[(EntryKind.GRANT, "grant"), (EntryKind.PURCHASE, "purchase"), (EntryKind.REFUND, "refund")]
    )
    reason = forms.CharField(max_length=500, required=False)


def add_credits_view(model_admin, request, queryset):
    """The team action's intermediate form: amount, kind, reason → one ledger entry per team."""
    if "apply" in request.POST:
        form = AddCreditsForm(request.POST)
        if form.is_valid():
            for team in queryset:
                services.grant_credits(
                    team=team,
                    amount=form.cleaned_data["amount"],
                    kind=form.cleaned_data["kind"],
                    reason=form.cleaned_data["reason"],
                    actor=f"staff:{request.user.get_username()}",
                )
            model_admin.message_user(
                request, f"Added {form.cleaned_data['amount']} credits to {queryset.count()} team(s).", messages.SUCCESS
            )
            return None
    else:
        form = AddCreditsForm()
    context = {
        **model_admin.admin_site.each_context(request),
        "title": "Add credits",
        "form": form,
        "teams": queryset,
        "opts": model_admin.model._meta,
        "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
    }
    return TemplateResponse(request, "admin/add_credits.html", context)


@admin.register(LedgerEntry)
class LedgerEntryAdmin(admin.ModelAdmin):
    list_display = ("created_at", "team", "kind", "amount", "balance_after", "job_id", "actor", "reason")
    list_filter = ("kind", ("team", admin.RelatedOnlyFieldListFilter), "created_at")
    search_fields = ("team__id", "reason", "actor", "job_id")
    date_hierarchy = "created_at"

    @admin.display(description="amount")
    def amount(self, entry: LedgerEntry):
        return money.units_to_credits(entry.amount_units)

    @admin.display(description="balance after")
    def balance_after(self, entry: LedgerEntry):
        return money.units_to_credits(entry.balance_after_units)

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Reservation)
class ReservationAdmin(admin.ModelAdmin):
    list_display = ("job_id", "team", "status", "amount_units", "expires_at", "created_at")
    list_filter = ("status", ("team", admin.RelatedOnlyFieldListFilter))
    date_hierarchy = "created_at"

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
