from celery import shared_task

from jobs import services


@shared_task(name="jobs.expire_stale_jobs")
def expire_stale_jobs() -> int:
    return services.expire_stale_jobs()
