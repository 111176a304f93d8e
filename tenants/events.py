"""Team events: the outbox that webhooks deliver from (SPEC §5.7).

`emit_event` must be called inside the transaction that makes the state change, so the event
exists if and only if the change committed.
"""

import uuid
from typing import Any

from django.utils import timezone

from tenants.models import Event, Team

EVENT_TYPES = ("job.completed", "job.failed", "job.cancelled", "credits.low_balance")


def emit_event(*, team: Team, event_type: str, data: dict[str, Any], job_id: uuid.UUID | None = None) -> Event:
    """Record an event in the outbox (inside the caller's transaction)."""
    if event_type not in EVENT_TYPES:
        raise ValueError(f"unknown event type {event_type!r}")
    event_id = uuid.uuid4()
    payload: dict[str, Any] = {"event": event_type, "event_id": str(event_id)}
    if job_id is not None:
        payload["job_id"] = str(job_id)
    payload.update({"team_id": team.id, "timestamp": timezone.now().isoformat().replace("+00:00", "Z"), "data": data})
    event = Event.objects.create(id=event_id, team=team, type=event_type, payload=payload)
    from tenants.webhooks import fan_out

    fan_out(event)
    return event
