from celery import shared_task

from saas_llm.idempotency import purge_expired


@shared_task(name="tenants.purge_idempotency_keys")
def purge_idempotency_keys() -> int:
    return purge_expired()
