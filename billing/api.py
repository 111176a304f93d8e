"""HTTP layer for credits (SPEC §5.5)."""

from decimal import Decimal

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing import money, services
from billing.models import EntryKind, LedgerEntry
from billing.selectors import get_account_summary, list_transactions
from saas_llm.api import StrictSerializer, parse_body, parse_query
from saas_llm.dates import DateOrDateTimeField, check_range
from saas_llm.fields import CreditsField, SlugIdField, StrictCharField
from saas_llm.pagination import LimitOffsetPagination
from tenants.auth import IsAdminKey, acting_team
from tenants.models import BudgetMode, Team


class TeamQuery(serializers.Serializer):
    team_id = SlugIdField(required=False)


class TransactionsQuery(TeamQuery):
    kind = serializers.ChoiceField(choices=EntryKind.choices, required=False)
    job_id = serializers.UUIDField(required=False)
    start_date = DateOrDateTimeField()
    end_date = DateOrDateTimeField(end=True)
    limit = serializers.CharField(required=False)
    offset = serializers.CharField(required=False)

    def validate(self, data):
        return check_range(data)


class CreditsAddIn(StrictSerializer):
    team_id = SlugIdField(required=False)
    amount = CreditsField(min_value=Decimal("0.0001"))
    reason = StrictCharField(max_length=500, required=False, allow_blank=True)
    kind = serializers.ChoiceField(
        choices=[EntryKind.PURCHASE, EntryKind.GRANT, EntryKind.REFUND], required=False, default=EntryKind.GRANT
    )


class BalanceOut(serializers.Serializer):
    team_id = serializers.CharField()
    credits_allocated = serializers.FloatField()
    credits_used = serializers.FloatField()
    credits_reserved = serializers.FloatField()
    credits_remaining = serializers.FloatField()
    budget_mode = serializers.ChoiceField(choices=BudgetMode.choices)
    low_balance_threshold = serializers.FloatField(allow_null=True)


class TransactionOut(serializers.Serializer):
    transaction_id = serializers.UUIDField()
    team_id = serializers.CharField()
    kind = serializers.ChoiceField(choices=EntryKind.choices)
    amount = serializers.FloatField()
    balance_after = serializers.FloatField()
    job_id = serializers.UUIDField(allow_null=True)
    reason = serializers.CharField()
    actor = serializers.CharField()
    created_at = serializers.DateTimeField()


class CreditsAddOut(serializers.Serializer):
    team_id = serializers.CharField()
    credits_added = serializers.FloatField()
    credits_remaining = serializers.FloatField()
    transaction = TransactionOut()


class TransactionListOut(serializers.Serializer):
    count = serializers.IntegerField()
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = TransactionOut(many=True)


def render_entry(entry: LedgerEntry) -> dict:
    return {
        "transaction_id": str(entry.transaction_id),
        "team_id": entry.team_id,
        "kind": entry.kind,
        "amount": float(money.units_to_credits(entry.amount_units)),
        "balance_after": float(money.units_to_credits(entry.balance_after_units)),
        "job_id": str(entry.job_id) if entry.job_id else None,
        "reason": entry.reason,
        "actor": entry.actor,
        "created_at": TransactionOut().fields["created_at"].to_representation(entry.created_at),
    }


def render_balance(team: Team) -> dict:
    return {
        "team_id": team.id,
        **get_account_summary(team=team),
        "budget_mode": team.budget_mode,
        "low_balance_threshold": float(team.low_balance_threshold) if team.low_balance_threshold is not None else None,
    }


TEAM_ID_PARAM = OpenApiParameter("team_id", str, description="Required with an admin key; optional with a team key.")


class BalanceView(APIView):
    @extend_schema(
        operation_id="credits_balance", parameters=[TEAM_ID_PARAM], responses={200: BalanceOut}, tags=["credits"]
    )
    def get(self, request: Request) -> Response:
        query = parse_query(TeamQuery, request)
        return Response(render_balance(acting_team(request.auth, query.get("team_id"), location="query")))


class CreditsAddView(APIView):
    permission_classes = [IsAdminKey]

    @extend_schema(operation_id="credits_add", request=CreditsAddIn, responses={201: CreditsAddOut}, tags=["credits"])
    def post(self, request: Request) -> Response:
        data = parse_body(CreditsAddIn, request)
        team = acting_team(request.auth, data.get("team_id"))
        entry = services.grant_credits(
            team=team,
            amount=data["amount"],
            kind=data["kind"],
            reason=data.get("reason", ""),
            actor=f"api-key:{request.auth.key.prefix}",
        )
        body = {
            "team_id": team.id,
            "credits_added": float(data["amount"]),
            "credits_remaining": get_account_summary(team=team)["credits_remaining"],
            "transaction": render_entry(entry),
        }
        return Response(body, status=201)


class TransactionsView(APIView):
    @extend_schema(
        operation_id="credits_transactions",
        parameters=[
            TEAM_ID_PARAM,
            OpenApiParameter("kind", str, enum=[choice for choice, _ in EntryKind.choices]),
            OpenApiParameter("job_id", str),
            OpenApiParameter("start_date", str),
            OpenApiParameter("end_date", str),
            OpenApiParameter("limit", int),
            OpenApiParameter("offset", int),
        ],
        responses={200: TransactionListOut},
        tags=["credits"],
    )
    def get(self, request: Request) -> Response:
        query = parse_query(TransactionsQuery, request)
        team = acting_team(request.auth, query.get("team_id"), location="query")
        entries = list_transactions(
            team=team,
            kind=query.get("kind"),
            job_id=query.get("job_id"),
            start=query.get("start_date"),
            end=query.get("end_date"),
        )
        paginator = LimitOffsetPagination()
        page = paginator.paginate_queryset(entries, request, view=self)
        return paginator.get_paginated_response([render_entry(entry) for entry in page])
