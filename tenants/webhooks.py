"""Webhook endpoints and the delivery outbox (SPEC §5.7).

Deliveries are rows written in the same transaction as the event; a Celery task sends each one
after commit, retrying with exponential backoff; a periodic sweep re-sends deliveries whose task
was lost. At-least-once: receivers dedupe on `webhook-id` (the event id).
"""

import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import random
import secrets
import socket
import threading
import time
from datetime import timedelta
from urllib.parse import urlsplit

import httpx
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from saas_llm.errors import NotFound, UnprocessableRequest
from tenants.models import (
    DeliveryAttempt,
    DeliveryStatus,
    Event,
    Team,
    WebhookDelivery,
    WebhookEndpoint,
)

logger = logging.getLogger(__name__)

SEND_TIMEOUT_S = 10.0
CLAIM_FOR = timedelta(seconds=60)


class WebhookNotFound(NotFound):
    code = "webhook_not_found"

    def __init__(self) -> None:
        super().__init__("Webhook not found")


class UnsafeWebhookUrl(UnprocessableRequest):
    code = "invalid_webhook_url"


def check_url(url: str, *, allow_private: bool | None = None) -> None:
    """http(s), no credentials, and — unless allowed — no private, loopback or link-local target."""
    allow_private = settings.SAAS_LLM_WEBHOOK_ALLOW_PRIVATE if allow_private is None else allow_private
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UnsafeWebhookUrl("webhook_url must be an http(s) URL")
    if parts.username is not None or parts.password is not None:
        raise UnsafeWebhookUrl("webhook_url must not contain credentials")
    if allow_private:
        return
    try:
        infos = socket.getaddrinfo(
            parts.hostname, parts.port or (443 if parts.scheme == "https" else 80), type=socket.SOCK_STREAM
        )
    except (socket.gaierror, UnicodeError):
        raise UnsafeWebhookUrl(f"webhook_url host {parts.hostname!r} does not resolve") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global:
            raise UnsafeWebhookUrl("webhook_url must not point to a private, loopback or link-local address")


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """Standard Webhooks: v1,base64(HMAC-SHA256(key, "<id>.<timestamp>.<body>")), key = base64 after whsec_."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def register_webhook(*, team: Team, url: str, events: list[str], description: str = "") -> WebhookEndpoint:
    """Create an endpoint (its secret is returned once by the API). Raises UnsafeWebhookUrl (422)."""
    check_url(url)
    return WebhookEndpoint.objects.create(
        team=team, url=url, events=events, description=description, secret=new_secret()
    )


def delete_webhook(*, endpoint: WebhookEndpoint) -> None:
    """Soft-delete: no new deliveries; pending ones fail at their next attempt. Idempotent."""
    WebhookEndpoint.objects.filter(pk=endpoint.pk, deleted_at__isnull=True).update(deleted_at=timezone.now())


def fan_out(event: Event) -> list[WebhookDelivery]:
    """Inside the event's transaction: one delivery per subscribed endpoint, sent after commit."""
    endpoints = [
        endpoint
        for endpoint in WebhookEndpoint.objects.filter(team_id=event.team_id, deleted_at__isnull=True)
        if event.type in endpoint.events
    ]
    if not endpoints:
        return []
    now = timezone.now()
    deliveries = WebhookDelivery.objects.bulk_create(
        [WebhookDelivery(event=event, endpoint=endpoint, next_attempt_at=now) for endpoint in endpoints]
    )
    ids = [str(delivery.id) for delivery in deliveries]
    transaction.on_commit(lambda: [enqueue(delivery_id) for delivery_id in ids])
    return deliveries


def retry_schedule() -> list[float]:
    return settings.SAAS_LLM_WEBHOOK_RETRY_SCHEDULE


def enqueue(delivery_id: str, countdown: float = 0) -> None:
    """Hand a delivery to a Celery worker; in the embedded default (no broker) a background thread."""
    if settings.CELERY_TASK_ALWAYS_EAGER:
        timer = threading.Timer(countdown, _attempt_in_thread, args=(delivery_id,))
        timer.daemon = True
        timer.start()
        return
    from tenants.tasks import deliver_webhook

    try:
        deliver_webhook.apply_async(args=(delivery_id,), countdown=countdown)
    except Exception as exc:  # broker down: the row stays pending and the sweep sends it later
        logger.error("could not enqueue webhook delivery %s: %s", delivery_id, exc)


def _attempt_in_thread(delivery_id: str) -> None:
    from django.db import connection

    try:
        attempt_delivery(delivery_id)
    except Exception:
        logger.exception("webhook delivery %s failed unexpectedly", delivery_id)
    finally:
        connection.close()


def _claim(delivery_id: str, now) -> bool:
    return bool(
        WebhookDelivery.objects.filter(
            pk=delivery_id, status=DeliveryStatus.PENDING, next_attempt_at__lte=now + timedelta(seconds=1)
        )
        .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
        .update(claimed_until=now + CLAIM_FOR)
    )


def attempt_delivery(delivery_id: str) -> str | None:
    """Send one due delivery (claimed with a conditional update, so never twice at once).

    Returns the resulting status, or None when the delivery was not due or already claimed.
    The HTTP request happens outside any transaction.
    """
    now = timezone.now()
    if not _claim(delivery_id, now):
        return None
    delivery = WebhookDelivery.objects.select_related("event", "endpoint").get(pk=delivery_id)
    endpoint = delivery.endpoint
    number = delivery.attempts + 1
    status_code, error, started = None, "", time.perf_counter()
    if endpoint.deleted_at is not None:
        return _finish(delivery, number, None, "endpoint deleted", 0, final=True)
    body = json.dumps(delivery.event.payload, separators=(",", ":")).encode()
    timestamp = int(time.time())
    headers = {
        "content-type": "application/json",
        "user-agent": "saas-llm-webhooks/1",
        "webhook-id": str(delivery.event_id),
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(endpoint.secret, str(delivery.event_id), timestamp, body),
    }
    try:
        check_url(endpoint.url)  # again at send time: DNS may have changed since registration
        response = httpx.post(
            endpoint.url, content=body, headers=headers, timeout=SEND_TIMEOUT_S, follow_redirects=False
        )
        status_code = response.status_code
        if not 200 <= status_code < 300:
            error = f"HTTP {status_code}"
    except UnsafeWebhookUrl as exc:
        error = exc.detail
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"[:1000]
    duration_ms = int((time.perf_counter() - started) * 1000)
    return _finish(delivery, number, status_code, error, duration_ms, final=False)


def _finish(
    delivery: WebhookDelivery, number: int, status_code: int | None, error: str, duration_ms: int, *, final: bool
) -> str:
    now = timezone.now()
    schedule = retry_schedule()
    delivered = not error
    with transaction.atomic():
        DeliveryAttempt.objects.create(
            delivery=delivery, number=number, status_code=status_code, error=error, duration_ms=duration_ms
        )
        fields = {"attempts": number, "last_status_code": status_code, "last_error": error, "claimed_until": None}
        if delivered:
            fields.update(status=DeliveryStatus.DELIVERED, delivered_at=now)
        elif final or number > len(schedule):
            fields.update(status=DeliveryStatus.FAILED)
        else:
            delay = schedule[number - 1] * random.uniform(0.9, 1.1)  # jitter spreads retries of a failed receiver
            fields.update(next_attempt_at=now + timedelta(seconds=delay))
        WebhookDelivery.objects.filter(pk=delivery.pk).update(**fields)
    if fields.get("next_attempt_at"):
        enqueue(str(delivery.id), countdown=(fields["next_attempt_at"] - now).total_seconds())
    return fields.get("status", DeliveryStatus.PENDING)


def sweep_due_deliveries(*, limit: int = 500) -> int:
    """Re-enqueue due pending deliveries whose task was lost (worker or broker down). Returns the count."""
    now = timezone.now()
    due = list(
        WebhookDelivery.objects.filter(status=DeliveryStatus.PENDING, next_attempt_at__lte=now)
        .filter(Q(claimed_until__isnull=True) | Q(claimed_until__lt=now))
        .order_by("next_attempt_at")
        .values_list("id", flat=True)[:limit]
    )
    for delivery_id in due:
        enqueue(str(delivery_id))
    return len(due)


def redeliver(*, delivery: WebhookDelivery) -> None:
    """Staff action: send again now (a delivered or failed delivery becomes pending)."""
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        status=DeliveryStatus.PENDING, next_attempt_at=timezone.now(), claimed_until=None
    )
    transaction.on_commit(lambda: enqueue(str(delivery.pk)))
