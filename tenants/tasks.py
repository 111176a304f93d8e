from celery import shared_task

from saas_llm.idempotency import purge_expired
from tenants import events, webhooks


@shared_task(name="tenants.purge_idempotency_keys")
def purge_idempotency_keys() -> int:
    return purge_expired()


@shared_task(name="tenants.purge_old_events")
def purge_old_events() -> int:
    return events.purge_old_events()


@shared_task(name="tenants.deliver_webhook", acks_late=True)
def deliver_webhook(delivery_id: str) -> str | None:
    return webhooks.attempt_delivery(delivery_id)


@shared_task(name="tenants.enqueue_webhook_deliveries", acks_late=True)
def enqueue_webhook_deliveries(delivery_ids: list[str]) -> int:
    """One event's deliveries arrive in one message; each is sent in its own task."""
    webhooks.enqueue_each(delivery_ids)
    return len(delivery_ids)


@shared_task(name="tenants.sweep_webhook_deliveries")
def sweep_webhook_deliveries() -> int:
    return webhooks.sweep_due_deliveries()
