"""HTTP layer for organizations, teams and keys (SPEC §5.3, §5.4). Parse → one service → render."""

from django.db.models import Q, Sum
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing import money
from billing.selectors import get_account_summary, get_organization_credit_totals
from saas_llm.api import StrictSerializer, parse_body
from saas_llm.fields import (
    CreditsField,
    MetadataField,
    SlugIdField,
    StrictBooleanField,
    StrictCharField,
    StrictIntegerField,
)
from saas_llm.idempotency import one_time_secrets
from saas_llm.pagination import LimitOffsetPagination
from tenants import services
from tenants.auth import IsAdminKey, acting_team
from tenants.models import BudgetMode, Organization, Team, TeamStatus
from tenants.selectors import get_key, get_organization, get_team, list_keys, list_teams

# --- serializers -------------------------------------------------------------------------------


class OrganizationIn(serializers.Serializer):
    organization_id = SlugIdField()
    name = StrictCharField(max_length=200)
    metadata = MetadataField()


class OrganizationOut(serializers.Serializer):
    organization_id = serializers.CharField(source="id")
    name = serializers.CharField()
    metadata = serializers.JSONField()
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class OrganizationDetailOut(OrganizationOut):
    team_count = serializers.IntegerField()
    credits_allocated = serializers.FloatField()
    credits_used = serializers.FloatField()
    credits_remaining = serializers.FloatField()


class TeamConfigIn(StrictSerializer):
    """Fields shared by team create and update."""

    team_alias = StrictCharField(max_length=200, required=False, allow_blank=True)
    access_groups = serializers.ListField(child=SlugIdField(), required=False, max_length=100)
    default_model = SlugIdField(required=False, allow_null=True)
    budget_mode = serializers.ChoiceField(choices=BudgetMode.choices, required=False)
    credits_per_job = CreditsField(required=False, min_value=0)
    credits_per_dollar = CreditsField(required=False, min_value=0)
    tokens_per_credit = StrictIntegerField(required=False, min_value=1, max_value=10**12)
    min_reservation = CreditsField(required=False, min_value=0)
    markup_percent = CreditsField(required=False, min_value=0, max_value=100_000)
    rpm_limit = StrictIntegerField(required=False, allow_null=True, min_value=1, max_value=10**9)
    tpm_limit = StrictIntegerField(required=False, allow_null=True, min_value=1, max_value=10**15)
    max_parallel_requests = StrictIntegerField(required=False, allow_null=True, min_value=1, max_value=10**6)
    low_balance_threshold = CreditsField(required=False, allow_null=True, min_value=0)
    store_prompts = StrictBooleanField(required=False)
    expose_models = StrictBooleanField(required=False)
    charge_failed_jobs = StrictBooleanField(required=False)
    metadata = MetadataField()


class TeamCreateIn(TeamConfigIn):
    team_id = SlugIdField()
    organization_id = SlugIdField()
    credits_allocated = CreditsField(required=False, min_value=0)


class KeySummaryOut(serializers.Serializer):
    key_id = serializers.UUIDField(source="id")
    name = serializers.CharField()
    prefix = serializers.CharField()
    created_at = serializers.DateTimeField()
    last_used_at = serializers.DateTimeField(allow_null=True)
    expires_at = serializers.DateTimeField(allow_null=True)
    revoked_at = serializers.DateTimeField(allow_null=True)


class TeamOut(serializers.Serializer):
    team_id = serializers.CharField()
    organization_id = serializers.CharField()
    team_alias = serializers.CharField()
    status = serializers.ChoiceField(choices=TeamStatus.choices)
    access_groups = serializers.ListField(child=serializers.CharField())
    allowed_models = serializers.ListField(child=serializers.CharField())
    default_model = serializers.CharField(allow_null=True)
    budget_mode = serializers.ChoiceField(choices=BudgetMode.choices)
    credits_per_job = CreditsField()
    credits_per_dollar = CreditsField()
    tokens_per_credit = serializers.IntegerField()
    min_reservation = CreditsField()
    markup_percent = CreditsField(required=False, help_text="Admin keys only.")
    rpm_limit = serializers.IntegerField(allow_null=True)
    tpm_limit = serializers.IntegerField(allow_null=True)
    max_parallel_requests = serializers.IntegerField(allow_null=True)
    low_balance_threshold = CreditsField(allow_null=True)
    store_prompts = serializers.BooleanField()
    expose_models = serializers.BooleanField()
    charge_failed_jobs = serializers.BooleanField()
    metadata = serializers.JSONField()
    credits_remaining = serializers.FloatField()
    uncharged_cost_usd = serializers.FloatField(
        help_text="Cost of the team's failed/cancelled jobs that went uncharged."
    )
    uncharged_provider_cost_usd = serializers.FloatField(
        required=False, help_text="Provider cost of those uncharged jobs. Admin keys only."
    )
    keys = KeySummaryOut(many=True)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class TeamCreatedOut(TeamOut):
    virtual_key = serializers.CharField(help_text="The team's first virtual key. Shown only once.")


class TeamStatusOut(serializers.Serializer):
    team_id = serializers.CharField()
    status = serializers.ChoiceField(choices=TeamStatus.choices)


class KeyCreateIn(serializers.Serializer):
    name = StrictCharField(max_length=200)
    expires_at = serializers.DateTimeField(required=False, allow_null=True)

    def validate_expires_at(self, value):
        if value is not None and value <= timezone.now():
            raise serializers.ValidationError("must be in the future")
        return value


class KeyCreatedOut(serializers.Serializer):
    key_id = serializers.UUIDField()
    name = serializers.CharField()
    key = serializers.CharField(help_text="The full key. Shown only once.")
    prefix = serializers.CharField()
    created_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField(allow_null=True)


class KeyListOut(serializers.Serializer):
    count = serializers.IntegerField()
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = KeySummaryOut(many=True)


class TeamListOut(serializers.Serializer):
    count = serializers.IntegerField()
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = TeamOut(many=True)


# --- rendering ---------------------------------------------------------------------------------

# Jobs sit above tenants and cannot be imported here: they are read through the reverse relation
# of Job.team, with the statuses spelled out (jobs.models.JobStatus.FAILED / CANCELLED).
_UNCHARGED_JOBS = Q(jobs__status__in=("failed", "cancelled"), jobs__credits_charged_units=0)


def _uncharged_job_costs(team: Team) -> dict[str, int]:
    """Σ cost and provider cost (nanos) of the team's failed/cancelled jobs that were not charged."""
    totals = Team.objects.filter(pk=team.pk).aggregate(
        cost=Sum("jobs__cost_nanos", filter=_UNCHARGED_JOBS),
        provider_cost=Sum("jobs__provider_cost_nanos", filter=_UNCHARGED_JOBS),
    )
    return {name: value or 0 for name, value in totals.items()}


def render_team(team: Team, *, admin: bool) -> dict:
    groups = list(team.access_groups.all())
    allowed = sorted(
        {
            alias.name
            for group in groups
            if group.status == "active"
            for alias in group.aliases.all()
            if alias.status == "active"
        }
    )
    summary = get_account_summary(team=team)
    uncharged = _uncharged_job_costs(team)
    data = {
        "team_id": team.id,
        "organization_id": team.organization_id,
        "team_alias": team.team_alias,
        "status": team.status,
        "access_groups": [group.name for group in groups],
        "allowed_models": allowed,
        "default_model": team.default_model_id,
        "budget_mode": team.budget_mode,
        "credits_per_job": team.credits_per_job,
        "credits_per_dollar": team.credits_per_dollar,
        "tokens_per_credit": team.tokens_per_credit,
        "min_reservation": team.min_reservation,
        "rpm_limit": team.rpm_limit,
        "tpm_limit": team.tpm_limit,
        "max_parallel_requests": team.max_parallel_requests,
        "low_balance_threshold": team.low_balance_threshold,
        "store_prompts": team.store_prompts,
        "expose_models": team.expose_models,
        "charge_failed_jobs": team.charge_failed_jobs,
        "metadata": team.metadata,
        "credits_remaining": summary["credits_remaining"],
        "uncharged_cost_usd": float(money.nanos_to_usd(uncharged["cost"])),
        "keys": list(list_keys(team=team)),
        "created_at": team.created_at,
        "updated_at": team.updated_at,
    }
    if admin:
        data["markup_percent"] = team.markup_percent
        data["uncharged_provider_cost_usd"] = float(money.nanos_to_usd(uncharged["provider_cost"]))
    return TeamOut(data).data


def render_organization(organization: Organization) -> dict:
    return {
        **OrganizationOut(organization).data,
        "team_count": Team.objects.filter(organization=organization).count(),
        **get_organization_credit_totals(organization=organization),
    }


# --- views -------------------------------------------------------------------------------------


class OrganizationCreateView(APIView):
    permission_classes = [IsAdminKey]

    @extend_schema(
        operation_id="organizations_create",
        request=OrganizationIn,
        responses={201: OrganizationOut},
        tags=["organizations"],
    )
    def post(self, request: Request) -> Response:
        data = parse_body(OrganizationIn, request)
        organization = services.create_organization(
            organization_id=data["organization_id"], name=data["name"], metadata=data.get("metadata")
        )
        return Response(OrganizationOut(organization).data, status=201)


class OrganizationDetailView(APIView):
    permission_classes = [IsAdminKey]

    @extend_schema(
        operation_id="organizations_retrieve", responses={200: OrganizationDetailOut}, tags=["organizations"]
    )
    def get(self, request: Request, organization_id: str) -> Response:
        return Response(render_organization(get_organization(organization_id)))


class OrganizationTeamsView(APIView):
    permission_classes = [IsAdminKey]

    @extend_schema(
        operation_id="organizations_teams_list", parameters=[], responses={200: TeamListOut}, tags=["organizations"]
    )
    def get(self, request: Request, organization_id: str) -> Response:
        organization = get_organization(organization_id)
        paginator = LimitOffsetPagination()
        queryset = list_teams(organization=organization).prefetch_related("access_groups__aliases")
        page = paginator.paginate_queryset(queryset, request, view=self)
        return paginator.get_paginated_response([render_team(team, admin=True) for team in page])


class TeamCreateView(APIView):
    permission_classes = [IsAdminKey]

    @extend_schema(operation_id="teams_create", request=TeamCreateIn, responses={201: TeamCreatedOut}, tags=["teams"])
    def post(self, request: Request) -> Response:
        data = dict(parse_body(TeamCreateIn, request))
        team, raw_key = services.create_team(
            team_id=data.pop("team_id"),
            organization_id=data.pop("organization_id"),
            access_groups=data.pop("access_groups", []),
            default_model=data.pop("default_model", None),
            credits_allocated=data.pop("credits_allocated", 0),
            actor=f"api-key:{request.auth.key.prefix}",
            **data,
        )
        body = {**render_team(get_team(team.id), admin=True), "virtual_key": raw_key}
        return one_time_secrets(Response(body, status=201), "virtual_key")


class TeamDetailView(APIView):
    def get_permissions(self):
        return [IsAdminKey()] if self.request.method in ("PUT", "PATCH") else super().get_permissions()

    @extend_schema(operation_id="teams_retrieve", responses={200: TeamOut}, tags=["teams"])
    def get(self, request: Request, team_id: str) -> Response:
        team = acting_team(request.auth, team_id, location="path")
        return Response(render_team(get_team(team.id), admin=request.auth.is_admin))

    @extend_schema(operation_id="teams_update", request=TeamConfigIn, responses={200: TeamOut}, tags=["teams"])
    def put(self, request: Request, team_id: str) -> Response:
        return self._update(request, team_id)

    @extend_schema(operation_id="teams_partial_update", request=TeamConfigIn, responses={200: TeamOut}, tags=["teams"])
    def patch(self, request: Request, team_id: str) -> Response:
        return self._update(request, team_id)

    def _update(self, request: Request, team_id: str) -> Response:
        team = get_team(team_id)
        data = dict(parse_body(TeamConfigIn, request))
        kwargs = {"access_groups": data.pop("access_groups", None)}
        if "default_model" in data:
            kwargs["default_model"] = data.pop("default_model")
        services.update_team(team=team, **kwargs, **data)
        return Response(render_team(get_team(team.id), admin=True))


class TeamSuspendView(APIView):
    permission_classes = [IsAdminKey]
    target_status = TeamStatus.SUSPENDED

    @extend_schema(operation_id="teams_suspend", request=None, responses={200: TeamStatusOut}, tags=["teams"])
    def post(self, request: Request, team_id: str) -> Response:
        team = services.set_team_status(team=get_team(team_id), status=self.target_status)
        return Response({"team_id": team.id, "status": team.status})


class TeamResumeView(TeamSuspendView):
    target_status = TeamStatus.ACTIVE

    @extend_schema(operation_id="teams_resume", request=None, responses={200: TeamStatusOut}, tags=["teams"])
    def post(self, request: Request, team_id: str) -> Response:
        return super().post(request, team_id)


class TeamKeysView(APIView):
    permission_classes = [IsAdminKey]

    @extend_schema(operation_id="teams_keys_list", responses={200: KeyListOut}, tags=["keys"])
    def get(self, request: Request, team_id: str) -> Response:
        paginator = LimitOffsetPagination()
        page = paginator.paginate_queryset(list_keys(team=get_team(team_id)), request, view=self)
        return paginator.get_paginated_response(KeySummaryOut(page, many=True).data)

    @extend_schema(operation_id="teams_keys_create", request=KeyCreateIn, responses={201: KeyCreatedOut}, tags=["keys"])
    def post(self, request: Request, team_id: str) -> Response:
        team = get_team(team_id)
        data = parse_body(KeyCreateIn, request)
        key, raw_key = services.issue_key(team=team, name=data["name"], expires_at=data.get("expires_at"))
        body = {
            "key_id": key.id,
            "name": key.name,
            "key": raw_key,
            "prefix": key.prefix,
            "created_at": key.created_at,
            "expires_at": key.expires_at,
        }
        return one_time_secrets(Response(KeyCreatedOut(body).data, status=201), "key")


class TeamKeyRevokeView(APIView):
    permission_classes = [IsAdminKey]

    @extend_schema(operation_id="teams_keys_revoke", request=None, responses={200: KeySummaryOut}, tags=["keys"])
    def post(self, request: Request, team_id: str, key_id: str) -> Response:
        key = services.revoke_key(key=get_key(team=get_team(team_id), key_id=key_id))
        return Response(KeySummaryOut(key).data)
