"""HTTP layer for jobs (SPEC §5.1). The LLM-call endpoints are async views in jobs/views_llm.py."""

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from billing import money
from billing.selectors import get_account_summary
from jobs import selectors, services
from jobs.models import Job, JobStatus
from saas_llm.api import parse_body, parse_query
from saas_llm.dates import DateOrDateTimeField, check_range
from saas_llm.fields import MetadataField, SlugIdField, StrictCharField
from saas_llm.pagination import LimitOffsetPagination
from tenants.auth import acting_team, team_filter
from tenants.selectors import get_team


def _scope(request: Request) -> str | None:
    """Team id that object lookups are restricted to (None for admin keys: any team)."""
    return None if request.auth.is_admin else request.auth.team.id


# --- serializers -------------------------------------------------------------------------------


class JobCreateIn(serializers.Serializer):
    team_id = SlugIdField(required=False)
    job_type = StrictCharField(min_length=1, max_length=100)
    metadata = MetadataField()
    user_id = StrictCharField(max_length=255, required=False, allow_null=True)
    external_id = StrictCharField(max_length=255, required=False, allow_null=True)


class JobCompleteIn(serializers.Serializer):
    status = serializers.ChoiceField(choices=[JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED])
    metadata = MetadataField()
    error_message = StrictCharField(max_length=5000, required=False, allow_null=True, allow_blank=True)


class JobListQuery(serializers.Serializer):
    team_id = SlugIdField(required=False)
    status = serializers.ChoiceField(choices=JobStatus.choices, required=False)
    job_type = serializers.CharField(max_length=100, required=False)
    user_id = serializers.CharField(max_length=255, required=False)
    start_date = DateOrDateTimeField()
    end_date = DateOrDateTimeField(end=True)
    sort_by = serializers.ChoiceField(
        choices=["created_at", "completed_at", "cost_usd", "total_tokens"], required=False
    )
    order = serializers.ChoiceField(choices=["asc", "desc"], required=False)
    limit = serializers.CharField(required=False)
    offset = serializers.CharField(required=False)

    def validate(self, data):
        return check_range(data)


class JobCreatedOut(serializers.Serializer):
    job_id = serializers.UUIDField()
    team_id = serializers.CharField()
    job_type = serializers.CharField()
    status = serializers.ChoiceField(choices=JobStatus.choices)
    created_at = serializers.DateTimeField()
    metadata = serializers.JSONField()
    user_id = serializers.CharField(allow_null=True)
    external_id = serializers.CharField(allow_null=True)


class JobOut(JobCreatedOut):
    started_at = serializers.DateTimeField(allow_null=True)
    completed_at = serializers.DateTimeField(allow_null=True)
    error_message = serializers.CharField(allow_null=True)
    total_calls = serializers.IntegerField()
    successful_calls = serializers.IntegerField()
    failed_calls = serializers.IntegerField()
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    total_tokens = serializers.IntegerField()
    cost_usd = serializers.FloatField()
    credits_charged = serializers.FloatField()
    models_used = serializers.ListField(child=serializers.CharField())


class JobListOut(serializers.Serializer):
    count = serializers.IntegerField()
    next = serializers.URLField(allow_null=True)
    previous = serializers.URLField(allow_null=True)
    results = JobOut(many=True)


class CostsSummaryOut(serializers.Serializer):
    total_calls = serializers.IntegerField()
    successful_calls = serializers.IntegerField()
    failed_calls = serializers.IntegerField()
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    total_tokens = serializers.IntegerField()
    cost_usd = serializers.FloatField()
    avg_latency_ms = serializers.FloatField()


class CallSummaryOut(serializers.Serializer):
    call_id = serializers.UUIDField()
    model = serializers.CharField()
    purpose = serializers.CharField()
    total_tokens = serializers.IntegerField()
    cost_usd = serializers.FloatField()
    latency_ms = serializers.IntegerField()
    status = serializers.CharField()
    error = serializers.CharField(allow_null=True)


class JobCompletedOut(serializers.Serializer):
    job_id = serializers.UUIDField()
    status = serializers.ChoiceField(choices=JobStatus.choices)
    completed_at = serializers.DateTimeField()
    costs = CostsSummaryOut()
    credits_charged = serializers.FloatField()
    credits_remaining = serializers.FloatField()
    calls = CallSummaryOut(many=True)


class CostLineOut(serializers.Serializer):
    call_id = serializers.UUIDField()
    model = serializers.CharField()
    resolved_model = serializers.CharField(required=False, help_text="Only with admin keys or expose_models.")
    purpose = serializers.CharField()
    prompt_tokens = serializers.IntegerField()
    completion_tokens = serializers.IntegerField()
    total_tokens = serializers.IntegerField()
    cost_usd = serializers.FloatField()
    provider_cost_usd = serializers.FloatField(required=False, help_text="Admin keys only.")
    margin_usd = serializers.FloatField(required=False, help_text="Admin keys only.")
    unpriced = serializers.BooleanField()
    latency_ms = serializers.IntegerField()
    status = serializers.CharField()
    created_at = serializers.DateTimeField()


class JobCostsOut(serializers.Serializer):
    job_id = serializers.UUIDField()
    team_id = serializers.CharField()
    job_type = serializers.CharField()
    status = serializers.ChoiceField(choices=JobStatus.choices)
    total_cost_usd = serializers.FloatField()
    provider_cost_usd = serializers.FloatField(required=False, help_text="Admin keys only.")
    margin_usd = serializers.FloatField(required=False, help_text="Admin keys only.")
    credits_charged = serializers.FloatField()
    breakdown = CostLineOut(many=True)


# --- rendering ---------------------------------------------------------------------------------


def _usd(nanos: int) -> float:
    return float(money.nanos_to_usd(nanos))


def _dt(value):
    return serializers.DateTimeField().to_representation(value) if value else None


def render_job_created(job: Job) -> dict:
    return {
        "job_id": str(job.id),
        "team_id": job.team_id,
        "job_type": job.job_type,
        "status": job.status,
        "created_at": _dt(job.created_at),
        "metadata": job.metadata,
        "user_id": job.user_id,
        "external_id": job.external_id,
    }


def render_job(job: Job, models_used: list[str] | None = None) -> dict:
    return {
        **render_job_created(job),
        "started_at": _dt(job.started_at),
        "completed_at": _dt(job.completed_at),
        "error_message": job.error_message,
        "total_calls": job.total_calls,
        "successful_calls": job.successful_calls,
        "failed_calls": job.failed_calls,
        "prompt_tokens": job.prompt_tokens,
        "completion_tokens": job.completion_tokens,
        "total_tokens": job.total_tokens,
        "cost_usd": _usd(job.cost_nanos),
        "credits_charged": float(money.units_to_credits(job.credits_charged_units)),
        "models_used": models_used if models_used is not None else selectors.models_used(job=job),
    }


def render_completion(job: Job) -> dict:
    calls = list(selectors.list_calls(job=job))
    return {
        "job_id": str(job.id),
        "status": job.status,
        "completed_at": _dt(job.completed_at),
        "costs": {
            "total_calls": job.total_calls,
            "successful_calls": job.successful_calls,
            "failed_calls": job.failed_calls,
            "prompt_tokens": job.prompt_tokens,
            "completion_tokens": job.completion_tokens,
            "total_tokens": job.total_tokens,
            "cost_usd": _usd(job.cost_nanos),
            "avg_latency_ms": round(job.total_latency_ms / job.total_calls, 2) if job.total_calls else 0.0,
        },
        "credits_charged": float(money.units_to_credits(job.credits_charged_units)),
        "credits_remaining": get_account_summary(team=job.team)["credits_remaining"],
        "calls": [
            {
                "call_id": str(call.id),
                "model": call.model_alias,
                "purpose": call.purpose,
                "total_tokens": call.total_tokens,
                "cost_usd": _usd(call.cost_nanos),
                "latency_ms": call.latency_ms,
                "status": call.status,
                "error": call.error or None,
            }
            for call in calls
        ],
    }


def render_costs(job: Job, *, admin: bool) -> dict:
    show_model = admin or job.team.expose_models
    lines = []
    for call in selectors.list_calls(job=job):
        line = {
            "call_id": str(call.id),
            "model": call.model_alias,
            "purpose": call.purpose,
            "prompt_tokens": call.prompt_tokens,
            "completion_tokens": call.completion_tokens,
            "total_tokens": call.total_tokens,
            "cost_usd": _usd(call.cost_nanos),
            "unpriced": call.unpriced,
            "latency_ms": call.latency_ms,
            "status": call.status,
            "created_at": _dt(call.created_at),
        }
        if show_model:
            line["resolved_model"] = call.resolved_model
        if admin:
            line["provider_cost_usd"] = _usd(call.provider_cost_nanos)
            line["margin_usd"] = _usd(call.cost_nanos - call.provider_cost_nanos)
        lines.append(line)
    body = {
        "job_id": str(job.id),
        "team_id": job.team_id,
        "job_type": job.job_type,
        "status": job.status,
        "total_cost_usd": _usd(job.cost_nanos),
        "credits_charged": float(money.units_to_credits(job.credits_charged_units)),
        "breakdown": lines,
    }
    if admin:
        body["provider_cost_usd"] = _usd(job.provider_cost_nanos)
        body["margin_usd"] = _usd(job.cost_nanos - job.provider_cost_nanos)
    return body


# --- views -------------------------------------------------------------------------------------


class JobCreateView(APIView):
    @extend_schema(operation_id="jobs_create", request=JobCreateIn, responses={201: JobCreatedOut}, tags=["jobs"])
    def post(self, request: Request) -> Response:
        data = parse_body(JobCreateIn, request)
        team = acting_team(request.auth, data.get("team_id"))
        job = services.create_job(
            team=team,
            job_type=data["job_type"],
            metadata=data.get("metadata"),
            user_id=data.get("user_id"),
            external_id=data.get("external_id"),
        )
        return Response(render_job_created(job), status=201)


class JobListView(APIView):
    @extend_schema(
        operation_id="jobs_list",
        parameters=[
            OpenApiParameter("team_id", str),
            OpenApiParameter("status", str, enum=[choice for choice, _ in JobStatus.choices]),
            OpenApiParameter("job_type", str),
            OpenApiParameter("user_id", str),
            OpenApiParameter("start_date", str),
            OpenApiParameter("end_date", str),
            OpenApiParameter("sort_by", str, enum=["created_at", "completed_at", "cost_usd", "total_tokens"]),
            OpenApiParameter("order", str, enum=["asc", "desc"]),
            OpenApiParameter("limit", int),
            OpenApiParameter("offset", int),
        ],
        responses={200: JobListOut},
        tags=["jobs"],
    )
    def get(self, request: Request) -> Response:
        query = parse_query(JobListQuery, request)
        team_id = team_filter(request.auth, query.get("team_id"))
        if team_id and request.auth.is_admin:
            get_team(team_id)
        jobs = selectors.list_jobs(
            team_id=team_id,
            status=query.get("status"),
            job_type=query.get("job_type"),
            user_id=query.get("user_id"),
            start=query.get("start_date"),
            end=query.get("end_date"),
            sort_by=query.get("sort_by", "created_at"),
            order=query.get("order", "desc"),
        )
        paginator = LimitOffsetPagination()
        page = paginator.paginate_queryset(jobs, request, view=self)
        used = selectors.models_used_by_jobs([job.id for job in page])
        return paginator.get_paginated_response([render_job(job, used.get(job.id, [])) for job in page])


class JobDetailView(APIView):
    @extend_schema(operation_id="jobs_retrieve", responses={200: JobOut}, tags=["jobs"])
    def get(self, request: Request, job_id: str) -> Response:
        return Response(render_job(selectors.get_job(job_id=job_id, team_id=_scope(request))))


class JobCompleteView(APIView):
    @extend_schema(operation_id="jobs_complete", request=JobCompleteIn, responses={200: JobCompletedOut}, tags=["jobs"])
    def post(self, request: Request, job_id: str) -> Response:
        job = selectors.get_job(job_id=job_id, team_id=_scope(request))
        data = parse_body(JobCompleteIn, request)
        job = services.complete_job(
            team=job.team,
            job_id=job.id,
            status=data["status"],
            metadata=data.get("metadata"),
            error_message=data.get("error_message"),
            actor=f"api-key:{request.auth.key.prefix}",
        )
        return Response(render_completion(job))


class JobCostsView(APIView):
    @extend_schema(operation_id="jobs_costs", responses={200: JobCostsOut}, tags=["jobs"])
    def get(self, request: Request, job_id: str) -> Response:
        job = selectors.get_job(job_id=job_id, team_id=_scope(request))
        return Response(render_costs(job, admin=request.auth.is_admin))
