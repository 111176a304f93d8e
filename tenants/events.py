"""Team events: the outbox that webhooks deliver from (SPEC §5.7), and the event log staff read.

`emit_event` must be called inside the transaction that makes the state change, so the event
exists if and only if the change committed. Every completed job writes one, so the log is kept
for SAAS_LLM_EVENT_RETENTION_DAYS (`purge_old_events`, hourly from Celery beat).
"""

import uuid
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from tenants.models import DeliveryStatus, Event, Team
from tenants.sql import insert_event

EVENT_TYPES = ("job.completed", "job.failed", "job.cancelled", "credits.low_balance")


def emit_event(*, team: Team, event_type: str, data: dict[str, Any], job_id: uuid.UUID | None = None) -> Event:
    """Record an event in the outbox (inside the caller's transaction)."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r}")
    event_id = uuid.uuid4()
    payload: dict[str, Any] = {"event": event_type, "event_id": str(event_id)}
    if job_id is not None:
        payload["job_id"] = str(job_id)
    now = timezone.now()
    payload.update({"team_id": team.id, "timestamp": now.isoformat().replace("+00:00", "Z"), "data": data})
    insert_event(event_id=event_id, team_id=team.id, event_type=event_type, payload=payload, now=now)
    event = Event(id=event_id, team=team, type=event_type, payload=payload, created_at=now)
    event._state.adding = False
    from tenants.webhooks import fan_out

    fan_out(event)
    return event


def amend_event_data(event: Event, data: dict[str, Any]) -> None:
    """Correct an event's data inside the transaction that emitted it (deliveries read it when sent)."""
    event.payload = {**event.payload, "data": data}
    Event.objects.filter(pk=event.pk).update(payload=event.payload)


PURGE_BATCH = 5000


def purge_old_events(*, now=None) -> int:
    """Delete events older than the retention whose deliveries are all finished (delivered or
    failed for good); their delivery history goes with them. An event still being delivered stays."""
    cutoff = (now or timezone.now()) - timedelta(days=settings.SAAS_LLM_EVENT_RETENTION_DAYS)
    old = Event.objects.filter(created_at__lt=cutoff).exclude(deliveries__status=DeliveryStatus.PENDING)
    purged = 0
    while ids := list(old.values_list("id", flat=True)[:PURGE_BATCH]):
        Event.objects.filter(id__in=ids).delete()
        purged += len(ids)
    return purged
