import uuid
from datetime import datetime

from django.db.models import QuerySet

from jobs.errors import JobNotFound
from jobs.models import Job, LLMCall


def parse_job_id(job_id: str | uuid.UUID) -> uuid.UUID:
    if isinstance(job_id, uuid.UUID):
        return job_id
    try:
        return uuid.UUID(str(job_id))
    except ValueError:
        raise JobNotFound() from None


def get_job(*, job_id: str | uuid.UUID, team_id: str | None) -> Job:
    """The job, scoped to a team (None = any team, for admin keys). Another team's job is a 404."""
    jobs = Job.objects.select_related("team").filter(id=parse_job_id(job_id))
    if team_id is not None:
        jobs = jobs.filter(team_id=team_id)
    job = jobs.first()
    if job is None:
        raise JobNotFound()
    return job


def list_jobs(
    *,
    team_id: str | None,
    status: str | None = None,
    job_type: str | None = None,
    user_id: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    sort_by: str = "created_at",
    order: str = "desc",
) -> QuerySet[Job]:
    jobs = Job.objects.all()
    if team_id is not None:
        jobs = jobs.filter(team_id=team_id)
    if status:
        jobs = jobs.filter(status=status)
    if job_type:
        jobs = jobs.filter(job_type=job_type)
    if user_id:
        jobs = jobs.filter(user_id=user_id)
    if start:
        jobs = jobs.filter(created_at__gte=start)
    if end:
        jobs = jobs.filter(created_at__lt=end)
    column = {"cost_usd": "cost_nanos"}.get(sort_by, sort_by)
    prefix = "-" if order == "desc" else ""
    return jobs.order_by(f"{prefix}{column}", f"{prefix}id")


def list_calls(*, job: Job) -> QuerySet[LLMCall]:
    return LLMCall.objects.filter(job=job).order_by("created_at", "id")


def models_used(*, job: Job) -> list[str]:
    return sorted(set(LLMCall.objects.filter(job=job).values_list("model_alias", flat=True)))


def models_used_by_jobs(job_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[str]]:
    """Aliases used per job for a page of jobs, in one query."""
    used: dict[uuid.UUID, set[str]] = {}
    for job_id, alias in LLMCall.objects.filter(job_id__in=job_ids).values_list("job_id", "model_alias").distinct():
        used.setdefault(job_id, set()).add(alias)
    return {job_id: sorted(aliases) for job_id, aliases in used.items()}
