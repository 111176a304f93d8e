from celery import shared_task

from jobs import services, spool


@shared_task(name="jobs.expire_stale_jobs")
def expire_stale_jobs() -> int:
    return services.expire_stale_jobs()


@shared_task(name="jobs.replay_spooled_calls")
def replay_spooled_calls() -> int:
    return spool.replay()
