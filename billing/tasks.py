from celery import shared_task

from billing import services


@shared_task(name="billing.release_expired_reservations")
def release_expired_reservations() -> int:
    return services.release_expired_reservations()
