"""HTTP layer for usage analytics: GET /api/teams/{team_id}/usage, GET /api/organizations/{org_id}/usage."""

from datetime import UTC, datetime, time, timedelta

from django.utils import timezone
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from jobs import usage
from saas_llm.api import parse_query
from saas_llm.dates import EARLIEST, DateOrDateTimeField, check_range
from saas_llm.pagination import LimitOffsetPagination
from tenants.auth import IsAdminKey, acting_team
from tenants.selectors import get_organization, list_teams

DEFAULT_DAYS = 30


class UsageQuery(serializers.Serializer):
    start_date = DateOrDateTimeField()
    end_date = DateOrDateTimeField(end=True)
    group_by = serializers.ChoiceField(choices=["day", "job_type", "model"], required=False, default="day")
    limit = serializers.CharField(required=False)
    offset = serializers.CharField(required=False)

    def validate(self, data):
        return check_range(data)


class OrgUsageQuery(UsageQuery):
    group_by = serializers.ChoiceField(choices=["team", "day", "job_type", "model"], required=False, default="team")


class UsageFieldsOut(serializers.Serializer):
    jobs = serializers.IntegerField()
    completed_jobs = serializers.IntegerField()
    failed_jobs = serializers.IntegerField()
    calls = serializers.IntegerField()
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    total_tokens = serializers.IntegerField()
    cost_usd = serializers.FloatField()
    credits_used = serializers.FloatField()
    uncharged_cost_usd = serializers.FloatField(help_text="Cost of the failed/cancelled jobs that went uncharged.")
    uncharged_provider_cost_usd = serializers.FloatField(
        required=False, help_text="Provider cost of those uncharged jobs. Admin keys only."
    )


class UsageRowOut(UsageFieldsOut):
    key = serializers.CharField(help_text="ISO date, job type, model alias or team id (by group_by)")


class TeamUsageOut(serializers.Serializer):
    team_id = serializers.CharField()
    start_date = serializers.DateTimeField()
    end_date = serializers.DateTimeField()
    group_by = serializers.CharField()
    summary = UsageFieldsOut()
    count = serializers.IntegerField()
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = UsageRowOut(many=True)


class OrganizationUsageOut(TeamUsageOut):
    team_id = None
    organization_id = serializers.CharField()


USAGE_PARAMETERS = [
    OpenApiParameter("start_date", str, description="ISO date or datetime (default: 30 days ago)"),
    OpenApiParameter("end_date", str, description="ISO date (inclusive) or datetime (default: now)"),
    OpenApiParameter("limit", int),
    OpenApiParameter("offset", int),
]


def date_range(query: dict) -> tuple[datetime, datetime]:
    """The range asked for, by default the last DEFAULT_DAYS days. Any length: the rows are
    aggregated by the database and paginated, so a long range costs no more than a short one."""
    end = query.get("end_date") or timezone.now()
    start = query.get("start_date")
    if start is None:
        default = timedelta(days=DEFAULT_DAYS)
        first_day = (end - default).date() if end - EARLIEST > default else EARLIEST.date()
        start = datetime.combine(first_day, time.min, tzinfo=UTC)
    return start, end


def _page(request: Request, view: APIView, rows: list[dict]) -> tuple[LimitOffsetPagination, list[dict]]:
    paginator = LimitOffsetPagination()
    return paginator, paginator.paginate_queryset(rows, request, view=view)


def _dt(value: datetime) -> str:
    return serializers.DateTimeField().to_representation(value)


class TeamUsageView(APIView):
    @extend_schema(
        operation_id="teams_usage",
        parameters=[*USAGE_PARAMETERS, OpenApiParameter("group_by", str, enum=["day", "job_type", "model"])],
        responses={200: TeamUsageOut},
        tags=["teams"],
    )
    def get(self, request: Request, team_id: str) -> Response:
        team = acting_team(request.auth, team_id, location="path")
        query = parse_query(UsageQuery, request)
        start, end = date_range(query)
        summary, rows = usage.usage(
            team_ids=[team.id], start=start, end=end, group_by=query["group_by"], admin=request.auth.is_admin
        )
        paginator, page = _page(request, self, rows)
        return Response(
            {
                "team_id": team.id,
                "start_date": _dt(start),
                "end_date": _dt(end),
                "group_by": query["group_by"],
                "summary": summary,
                **paginator.get_paginated_payload(page),
            }
        )


class OrganizationUsageView(APIView):
    permission_classes = [IsAdminKey]

    @extend_schema(
        operation_id="organizations_usage",
        parameters=[*USAGE_PARAMETERS, OpenApiParameter("group_by", str, enum=["team", "day", "job_type", "model"])],
        responses={200: OrganizationUsageOut},
        tags=["organizations"],
    )
    def get(self, request: Request, organization_id: str) -> Response:
        organization = get_organization(organization_id)
        query = parse_query(OrgUsageQuery, request)
        start, end = date_range(query)
        team_ids = list(list_teams(organization=organization).values_list("id", flat=True))
        summary, rows = usage.usage(team_ids=team_ids, start=start, end=end, group_by=query["group_by"], admin=True)
        paginator, page = _page(request, self, rows)
        return Response(
            {
                "organization_id": organization.id,
                "start_date": _dt(start),
                "end_date": _dt(end),
                "group_by": query["group_by"],
                "summary": summary,
                **paginator.get_paginated_payload(page),
            }
        )
