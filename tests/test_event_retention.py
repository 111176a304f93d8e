"""The event log is kept for SAAS_LLM_EVENT_RETENTION_DAYS, never while a delivery is pending."""

from datetime import timedelta

import pytest
from django.utils import timezone

from tenants import events
from tenants.models import DeliveryStatus, Event, WebhookDelivery, WebhookEndpoint

pytestmark = pytest.mark.django_db


def old_event(team, *, days: int, delivery: str | None = None, endpoint=None) -> Event:
    event = events.emit_event(team=team, event_type="job.completed", data={})
    Event.objects.filter(pk=event.pk).update(created_at=timezone.now() - timedelta(days=days))
    if delivery is not None:
        WebhookDelivery.objects.create(event=event, endpoint=endpoint, status=delivery, next_attempt_at=timezone.now())
    return event


def test_purge_keeps_recent_events_and_those_still_being_delivered(acme, settings):
    settings.SAAS_LLM_EVENT_RETENTION_DAYS = 30
    endpoint = WebhookEndpoint.objects.create(team=acme.team, url="https://hooks.example.com/x", events=[], secret="s")
    recent = old_event(acme.team, days=29)
    expired = old_event(acme.team, days=31)
    delivered = old_event(acme.team, days=31, delivery=DeliveryStatus.DELIVERED, endpoint=endpoint)
    failed = old_event(acme.team, days=40, delivery=DeliveryStatus.FAILED, endpoint=endpoint)
    pending = old_event(acme.team, days=31, delivery=DeliveryStatus.PENDING, endpoint=endpoint)

    assert events.purge_old_events() == 3

    assert set(Event.objects.values_list("id", flat=True)) == {recent.id, pending.id}
    assert not Event.objects.filter(id__in=[expired.id, delivered.id, failed.id]).exists()
    assert list(WebhookDelivery.objects.values_list("event_id", flat=True)) == [pending.id]


def test_purge_runs_in_batches(acme, settings, monkeypatch):
    settings.SAAS_LLM_EVENT_RETENTION_DAYS = 1
    monkeypatch.setattr(events, "PURGE_BATCH", 2)
    for _ in range(5):
        old_event(acme.team, days=2)

    assert events.purge_old_events() == 5
    assert not Event.objects.exists()
