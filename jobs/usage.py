"""Usage analytics (SPEC §5.3): database aggregation over jobs and calls, grouped by day, job type,
model or team. A constant number of queries whatever the number of rows."""

from datetime import datetime
from typing import Any

from django.db.models import Count, Exists, F, OuterRef, Q, Sum
from django.db.models.functions import TruncDate

from billing import money
from jobs.models import Job, JobStatus, LLMCall

GROUPS = ("day", "job_type", "model", "team")
ZERO = {
    "jobs": 0,
    "completed_jobs": 0,
    "failed_jobs": 0,
    "calls": 0,
    "prompt_tokens": 0,
    "completion_tokens": 0,
    "total_tokens": 0,
    "cost_nanos": 0,
    "credits_units": 0,
    "uncharged_cost_nanos": 0,
    "uncharged_provider_cost_nanos": 0,
}

# Failed/cancelled jobs that went uncharged (SPEC §6: all of them unless the team has
# charge_failed_jobs), so staff can see what failing jobs gave away.
UNCHARGED = Q(status__in=(JobStatus.FAILED, JobStatus.CANCELLED), credits_charged_units=0)
JOB_AGGREGATES = {
    "jobs": Count("id", distinct=True),
    "completed_jobs": Count("id", filter=Q(status=JobStatus.COMPLETED), distinct=True),
    "failed_jobs": Count("id", filter=Q(status=JobStatus.FAILED), distinct=True),
    "credits_units": Sum("credits_charged_units"),
    "uncharged_cost_nanos": Sum("cost_nanos", filter=UNCHARGED),
    "uncharged_provider_cost_nanos": Sum("provider_cost_nanos", filter=UNCHARGED),
}
JOB_FIELDS = tuple(JOB_AGGREGATES)
CALL_AGGREGATES = {
    "calls": Count("id"),
    "prompt_tokens": Sum("prompt_tokens"),
    "completion_tokens": Sum("completion_tokens"),
    "total_tokens": Sum("total_tokens"),
    "cost_nanos": Sum("cost_nanos"),
}


def _job_key(group_by: str) -> dict[str, Any]:
    keys = {"day": TruncDate("created_at"), "job_type": F("job_type"), "team": F("team_id")}
    return {"key": keys[group_by]}


def _call_key(group_by: str) -> dict[str, Any]:
    return {
        "day": {"key": TruncDate("created_at")},
        "job_type": {"key": F("job__job_type")},
        "model": {"key": F("model_alias")},
        "team": {"key": F("team_id")},
    }[group_by]


def usage(
    *, team_ids: list[str] | None, start: datetime, end: datetime, group_by: str, admin: bool = False
) -> tuple[dict, list[dict]]:
    """(summary, rows sorted by key) for the teams (None = every team) between start and end.

    `admin` adds the provider cost of the uncharged jobs (team keys never see provider cost)."""
    jobs = Job.objects.filter(created_at__gte=start, created_at__lt=end)
    calls = LLMCall.objects.filter(created_at__gte=start, created_at__lt=end)
    if team_ids is not None:
        jobs, calls = jobs.filter(team_id__in=team_ids), calls.filter(team_id__in=team_ids)
    summary = {**ZERO, **_clean(jobs.aggregate(**JOB_AGGREGATES)), **_clean(calls.aggregate(**CALL_AGGREGATES))}
    groups: dict[Any, dict] = {}
    job_rows = (
        _jobs_by_model(calls)
        if group_by == "model"
        else jobs.values(**_job_key(group_by)).annotate(**JOB_AGGREGATES).order_by()
    )
    for row in job_rows:
        groups.setdefault(row.pop("key"), dict(ZERO)).update(_clean(row))
    for row in calls.values(**_call_key(group_by)).annotate(**CALL_AGGREGATES).order_by():
        groups.setdefault(row.pop("key"), dict(ZERO)).update(_clean(row))
    rows = [{"key": _render_key(key), **render(values, admin=admin)} for key, values in groups.items()]
    rows.sort(key=lambda row: row["key"])
    return render(summary, admin=admin), rows


def _jobs_by_model(calls) -> list[dict]:
    """Job counts and credits per model, in two queries: the models, then one conditional aggregate.

    A job counts once for every model it called (its credits and uncharged cost too: a job's totals
    can't be split).
    """
    aliases = sorted(set(calls.order_by().values_list("model_alias", flat=True).distinct()))
    if not aliases:
        return []
    jobs = Job.objects.filter(id__in=calls.values("job_id"))
    aggregates = {}
    for index, alias in enumerate(aliases):
        used = Exists(calls.filter(job_id=OuterRef("id"), model_alias=alias))
        aggregates[f"jobs_{index}"] = Count("id", filter=Q(used))
        aggregates[f"completed_jobs_{index}"] = Count("id", filter=Q(used) & Q(status=JobStatus.COMPLETED))
        aggregates[f"failed_jobs_{index}"] = Count("id", filter=Q(used) & Q(status=JobStatus.FAILED))
        aggregates[f"credits_units_{index}"] = Sum("credits_charged_units", filter=Q(used))
        aggregates[f"uncharged_cost_nanos_{index}"] = Sum("cost_nanos", filter=Q(used) & UNCHARGED)
        aggregates[f"uncharged_provider_cost_nanos_{index}"] = Sum("provider_cost_nanos", filter=Q(used) & UNCHARGED)
    totals = jobs.aggregate(**aggregates)
    return [
        {"key": alias, **{name: totals[f"{name}_{index}"] for name in JOB_FIELDS}}
        for index, alias in enumerate(aliases)
    ]


def _clean(values: dict) -> dict:
    return {name: value or 0 for name, value in values.items()}


def _render_key(key: Any) -> str:
    return key.isoformat() if hasattr(key, "isoformat") else str(key)


def render(values: dict, *, admin: bool = False) -> dict:
    rendered = {
        "jobs": values["jobs"],
        "completed_jobs": values["completed_jobs"],
        "failed_jobs": values["failed_jobs"],
        "calls": values["calls"],
        "prompt_tokens": values["prompt_tokens"],
        "completion_tokens": values["completion_tokens"],
        "total_tokens": values["total_tokens"],
        "cost_usd": float(money.nanos_to_usd(values["cost_nanos"])),
        "credits_used": float(money.units_to_credits(values["credits_units"])),
        "uncharged_cost_usd": float(money.nanos_to_usd(values["uncharged_cost_nanos"])),
    }
    if admin:
        rendered["uncharged_provider_cost_usd"] = float(money.nanos_to_usd(values["uncharged_provider_cost_nanos"]))
    return rendered
