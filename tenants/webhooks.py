"""Webhook endpoints and the delivery outbox (SPEC §5.7).

Deliveries are rows written in the same transaction as the event; after commit one message hands
the event's deliveries to a Celery worker, which sends each in its own task, retrying with
exponential backoff; a periodic sweep re-sends deliveries whose task was lost. At-least-once:
receivers dedupe on `webhook-id` (the event id).

A target URL is checked when it is registered and again at every attempt: its host is resolved once
per attempt, every address is checked, and the request goes to a checked address (with the URL's
Host header and TLS server name), so DNS cannot answer the check and the connection differently.
"""

import base64
import hashlib
import hmac
import json
import logging
import random
import secrets
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from typing import Literal

import httpx
from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from saas_llm.celery import app as celery_app
from saas_llm.errors import NotFound, UnprocessableRequest
from tenants.models import (
    DeliveryAttempt,
    DeliveryStatus,
    Event,
    Team,
    WebhookDelivery,
    WebhookEndpoint,
)
from tenants.sql import live_endpoints

logger = logging.getLogger(__name__)

SEND_TIMEOUT_S = 10.0
CLAIM_FOR = timedelta(seconds=60)


class WebhookNotFound(NotFound):
    code = "webhook_not_found"

    def __init__(self) -> None:
        super().__init__("Webhook not found")


class UnsafeWebhookUrl(UnprocessableRequest):
    code = "invalid_webhook_url"


class UnresolvableHost(UnsafeWebhookUrl):
    pass


IPAddress = IPv4Address | IPv6Address

_NAT64 = IPv6Network("64:ff9b::/96")  # RFC 6052: the last 32 bits are the IPv4 address reached
_GLOBAL_UNICAST_V6 = IPv6Network("2000::/3")  # anything else (NAT64 local-use 64:ff9b:1::/48, ...) is not global
_THIS_NETWORK = IPv4Network("0.0.0.0/8")  # source-only; Linux connects 0.0.0.0 to the local host
_BROADCAST = IPv4Address("255.255.255.255")

REFUSED_PRIVATE = "webhook_url must not point to a private, loopback or link-local address"
REFUSED_NOT_UNICAST = "webhook_url must point to a unicast address (not multicast, broadcast or unspecified)"


@dataclass(frozen=True)
class Target:
    """A checked webhook URL and the addresses its host resolved to; send only to those."""

    url: httpx.URL
    addresses: tuple[IPAddress, ...]

    @property
    def hostname(self) -> str:
        return self.url.raw_host.decode("ascii")  # IDNA-encoded, as DNS and TLS want it

    @property
    def host_header(self) -> str:
        return self.url.netloc.decode("ascii")  # host[:port], IPv6 bracketed, default port omitted

    def url_for(self, address: IPAddress) -> httpx.URL:
        return self.url.copy_with(host=str(address))


def resolve_host(host: str, port: int) -> list[str]:
    """Every address `host` resolves to. The one DNS lookup of a check (tests stub it)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(info[4][0] for info in infos))


def _reached(address: IPAddress) -> IPAddress:
    """The IPv4 address that an IPv6 one embeds and delivers to (mapped, NAT64, 6to4), else itself."""
    if isinstance(address, IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in _NAT64:
            return IPv4Address(int(address) & 0xFFFF_FFFF)
        if address.sixtofour is not None:
            return address.sixtofour
    return address


def _classify(address: IPAddress) -> Literal["global", "private", "never"]:
    """`global` unicast, `private` (loopback, private, link-local, reserved) or `never` a target."""
    address = _reached(address)
    if address.is_multicast or address.is_unspecified or address in _THIS_NETWORK or address == _BROADCAST:
        return "never"
    # ipaddress (3.11) calls IPv4-compatible ::a.b.c.d and NAT64 local-use 64:ff9b:1::/48 "global";
    # only 2000::/3 is routed as global unicast.
    if isinstance(address, IPv6Address) and address not in _GLOBAL_UNICAST_V6:
        return "private"
    return "global" if address.is_global else "private"


def _parse(url: str) -> httpx.URL:
    """The URL as httpx will send it: http(s), a host, no credentials, a port in 1–65535."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        raise UnsafeWebhookUrl("webhook_url must be an http(s) URL") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise UnsafeWebhookUrl("webhook_url must be an http(s) URL")
    if parsed.userinfo:
        raise UnsafeWebhookUrl("webhook_url must not contain credentials")
    if parsed.port is not None and not 1 <= parsed.port <= 65535:
        raise UnsafeWebhookUrl("webhook_url port must be between 1 and 65535")
    return parsed


def _addresses(url: httpx.URL) -> tuple[IPAddress, ...]:
    """An IP literal as is; a name through one lookup."""
    host = url.raw_host.decode("ascii")
    try:
        return (ip_address(host),)
    except ValueError:
        pass
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        addresses = tuple(ip_address(answer) for answer in resolve_host(host, port))
    except (OSError, UnicodeError, ValueError):
        addresses = ()
    if not addresses:
        raise UnresolvableHost(f"webhook_url host {url.host!r} does not resolve")
    return addresses


def check_url(url: str, *, allow_private: bool | None = None) -> Target:
    """Resolve the URL's host once and check every address. Raises UnsafeWebhookUrl (422).

    Multicast, broadcast and unspecified addresses are never valid; loopback, private and link-local
    ones only when SAAS_LLM_WEBHOOK_ALLOW_PRIVATE is set.
    """
    allow_private = settings.SAAS_LLM_WEBHOOK_ALLOW_PRIVATE if allow_private is None else allow_private
    parsed = _parse(url)
    addresses = _addresses(parsed)
    for address in addresses:
        kind = _classify(address)
        if kind == "never":
            raise UnsafeWebhookUrl(REFUSED_NOT_UNICAST)
        if kind == "private" and not allow_private:
            raise UnsafeWebhookUrl(REFUSED_PRIVATE)
    return Target(url=parsed, addresses=addresses)


def check_registration(url: str) -> None:
    """`check_url` for a URL being registered. With SAAS_LLM_WEBHOOK_ALLOW_PRIVATE (development,
    tests) a host that does not resolve from here yet is accepted, as it was before addresses were
    checked at all in that mode: every send resolves and checks again."""
    try:
        check_url(url)
    except UnresolvableHost:
        if not settings.SAAS_LLM_WEBHOOK_ALLOW_PRIVATE:
            raise


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """Standard Webhooks: v1,base64(HMAC-SHA256(key, "<id>.<timestamp>.<body>")), key = base64 after whsec_."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    digest = hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def register_webhook(*, team: Team, url: str, events: list[str], description: str = "") -> WebhookEndpoint:
    """Create an endpoint (its secret is returned once by the API). Raises UnsafeWebhookUrl (422)."""
    check_registration(url)
    return WebhookEndpoint.objects.create(
        team=team, url=url, events=events, description=description, secret=new_secret()
    )


def delete_webhook(*, endpoint: WebhookEndpoint) -> None:
    """Soft-delete: no new deliveries; pending ones fail at their next attempt. Idempotent."""
    WebhookEndpoint.objects.filter(pk=endpoint.pk, deleted_at__isnull=True).update(deleted_at=timezone.now())


def fan_out(event: Event) -> list[WebhookDelivery]:
    """Inside the event's transaction: one delivery per subscribed endpoint, sent after commit."""
    endpoints = [endpoint for endpoint in live_endpoints(event.team_id) if event.type in endpoint.events]
    if not endpoints:
        return []
    now = timezone.now()
    deliveries = WebhookDelivery.objects.bulk_create(
        [WebhookDelivery(event=event, endpoint=endpoint, next_attempt_at=now) for endpoint in endpoints]
    )
    ids = [str(delivery.id) for delivery in deliveries]
    transaction.on_commit(lambda: enqueue(ids))
    return deliveries


def retry_schedule() -> list[float]:
    return settings.SAAS_LLM_WEBHOOK_RETRY_SCHEDULE


def enqueue(delivery_ids: Sequence[str], *, countdown: float = 0) -> None:
    """Hand deliveries to the worker in ONE broker publish (without a broker: a thread each).

    Several ids go as one task that the worker splits (`enqueue_each`). Never raises: when the
    broker is down the rows stay pending and the periodic sweep sends them.
    """
    if not delivery_ids:
        return
    if settings.CELERY_TASK_ALWAYS_EAGER:
        for delivery_id in delivery_ids:
            timer = threading.Timer(countdown, _attempt_in_thread, args=(delivery_id,))
            timer.daemon = True
            timer.start()
        return
    if len(delivery_ids) == 1:
        task_name, argument = "tenants.deliver_webhook", delivery_ids[0]
    else:
        task_name, argument = "tenants.enqueue_webhook_deliveries", list(delivery_ids)
    # By name: tenants.tasks imports this module. Without retries (here, and the broker transport
    # options in settings) a broker outage costs the caller milliseconds, not kombu's seconds of
    # reconnecting per publish; this often runs on the request path, right after its commit.
    try:
        celery_app.send_task(task_name, args=(argument,), countdown=countdown or None, retry=False)
    except Exception as exc:  # any broker failure: the rows stay pending and the sweep sends them later
        logger.error("could not enqueue %d webhook deliveries %s: %s", len(delivery_ids), list(delivery_ids), exc)


def enqueue_each(delivery_ids: Sequence[str]) -> None:
    """On the worker: a task per delivery, so a slow receiver does not hold up the others."""
    for delivery_id in delivery_ids:
        enqueue([delivery_id])


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
        target = check_url(endpoint.url)  # again at send time: DNS may have changed since registration
        response = _post(target, body, headers)
        status_code = response.status_code
        if not 200 <= status_code < 300:
            error = f"HTTP {status_code}"
    except UnsafeWebhookUrl as exc:
        error = exc.detail
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        error = f"{type(exc).__name__}: {exc}"[:1000]
    duration_ms = int((time.perf_counter() - started) * 1000)
    return _finish(delivery, number, status_code, error, duration_ms, final=False)


def _post(target: Target, body: bytes, headers: dict[str, str]) -> httpx.Response:
    """POST to the checked addresses in turn (the next one only if connecting failed: nothing was sent).

    The URL names the address, not the host, so nothing resolves it again; the Host header and the
    TLS server name (certificates are verified against it) stay the URL's. Redirects are not followed.
    """
    headers = {**headers, "host": target.host_header}
    extensions = {"sni_hostname": target.hostname} if target.url.scheme == "https" else {}
    # A client per attempt: its pool is keyed by address, and a TLS connection opened for one
    # endpoint's server name must not carry another endpoint's request.
    with httpx.Client(timeout=SEND_TIMEOUT_S, follow_redirects=False) as client:

        def request_to(address: IPAddress) -> httpx.Request:
            return client.build_request(
                "POST", target.url_for(address), content=body, headers=headers, extensions=extensions
            )

        for address in target.addresses[:-1]:
            try:
                return client.send(request_to(address))
            except httpx.ConnectError:
                pass
        return client.send(request_to(target.addresses[-1]))


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
        enqueue([str(delivery.id)], countdown=(fields["next_attempt_at"] - now).total_seconds())
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
    enqueue_each([str(delivery_id) for delivery_id in due])  # runs on a worker: no need to batch
    return len(due)


def redeliver(*, delivery: WebhookDelivery) -> None:
    """Staff action: send again now (a delivered or failed delivery becomes pending)."""
    WebhookDelivery.objects.filter(pk=delivery.pk).update(
        status=DeliveryStatus.PENDING, next_attempt_at=timezone.now(), claimed_until=None
    )
    transaction.on_commit(lambda: enqueue([str(delivery.pk)]))
