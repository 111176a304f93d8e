"""Handing webhook deliveries to the broker (SPEC §5.7, issue 11 item 7): one publish per event, and a
broker outage costs the request that commits the event nothing.

A gateway process (uvicorn) serves the test database and publishes to a private, non-persistent
`redis-server` that the test kills. No Celery worker runs: the broker's queue is read directly.
Postgres + Redis only.
"""

import base64
import json
import socket
import sys
import time

import httpx
import pytest
from django.conf import settings

from tenants import webhooks
from tenants.models import DeliveryStatus, WebhookDelivery
from tests.conftest import make_tenant, needs_postgres_and_redis, subprocess_database_url
from tests.live import RedisServer, ServerProcess

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True), needs_postgres_and_redis()]

ENDPOINTS = 10
FAST_S = 2.0  # generous for a loaded CI machine: measured ~0.05 s (it was 6.1 s before one publish per event)


def start_gateway(broker_url: str) -> ServerProcess:
    return ServerProcess(
        [sys.executable, "-m", "uvicorn", "saas_llm.asgi:application", "--host", "127.0.0.1", "--port", "{port}"],
        env={
            "SECRET_KEY": "live-webhook-broker-tests-secret-key-0123456789",
            "DEBUG": "0",
            "DATABASE_URL": subprocess_database_url(),
            "REDIS_URL": settings.REDIS_URL,  # cache and limits stay up: only the broker is in trouble
            "CELERY_BROKER_URL": broker_url,
        },
        timeout=90,
    )


@pytest.fixture
def gateway(private_redis):
    server = start_gateway(private_redis.url)
    yield server
    server.stop()


@pytest.fixture
def hung_gateway():
    """A gateway whose broker accepts connections and never answers (a frozen Redis)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)  # the kernel completes handshakes; nobody ever reads
        server = start_gateway(f"redis://127.0.0.1:{listener.getsockname()[1]}/0")
        yield server
        server.stop()


@pytest.fixture
def hooked_team(db):
    tenant = make_tenant("hooked-team", "hooked-org")
    for number in range(ENDPOINTS):
        webhooks.register_webhook(
            team=tenant.team, url=f"https://93.184.216.34/hooks/{number}", events=["job.completed"]
        )
    return tenant


def complete_a_job(gateway: ServerProcess, tenant) -> tuple[str, float]:
    """Create and complete a job through the gateway; the completion's duration in seconds."""
    headers = {"Authorization": f"Bearer {tenant.key}"}
    with httpx.Client(base_url=gateway.url, headers=headers, timeout=60, trust_env=False) as api:
        job_id = api.post("/api/jobs/create", json={"job_type": "x"}).json()["job_id"]
        started = time.monotonic()
        response = api.post(f"/api/jobs/{job_id}/complete", json={"status": "completed"})
        seconds = time.monotonic() - started
    assert response.status_code == 200, response.text
    return job_id, seconds


def assert_left_for_the_sweep(job_ids: list[str]) -> None:
    waiting = WebhookDelivery.objects.filter(event__payload__job_id__in=job_ids)
    assert [(d.status, d.attempts) for d in waiting] == [(DeliveryStatus.PENDING, 0)] * len(job_ids) * ENDPOINTS


def queued_tasks(private_redis: RedisServer) -> list[tuple[str, list]]:
    """(task name, args) of every message waiting in the default queue."""
    with private_redis.client() as client:
        messages = [json.loads(raw) for raw in client.lrange("celery", 0, -1)]
    return [(m["headers"]["task"], json.loads(base64.b64decode(m["body"]))[0]) for m in messages]


def test_an_event_is_one_publish_and_a_dead_broker_costs_the_request_nothing(hooked_team, private_redis, gateway):
    up_job, _ = complete_a_job(gateway, hooked_team)
    [(task, args)] = queued_tasks(private_redis)  # one message for the event's ten deliveries
    up_ids = WebhookDelivery.objects.filter(event__payload__job_id=up_job).values_list("id", flat=True)
    assert (task, sorted(args[0])) == ("tenants.enqueue_webhook_deliveries", sorted(str(pk) for pk in up_ids))
    assert len(args[0]) == ENDPOINTS

    private_redis.kill()
    # The first publish fails on the broken connection; the next ones have to connect afresh.
    down = [complete_a_job(gateway, hooked_team) for _ in range(3)]

    slowest = max(seconds for _, seconds in down)
    assert slowest < FAST_S, f"completing a job took {slowest:.2f} s with the broker down"
    assert_left_for_the_sweep([job_id for job_id, _ in down])
    assert gateway.output().count(f"could not enqueue {ENDPOINTS} webhook deliveries") == 3
    print(f"\njob completion with {ENDPOINTS} webhooks and the broker down: ≤{slowest * 1000:.0f} ms")


def test_a_hung_broker_holds_the_request_no_longer_than_its_socket_timeout(hooked_team, hung_gateway):
    job_id, seconds = complete_a_job(hung_gateway, hooked_team)

    limit = settings.CELERY_BROKER_TRANSPORT_OPTIONS["socket_timeout"] + 1.5
    assert seconds < limit, f"completing a job took {seconds:.2f} s with the broker hung"
    assert_left_for_the_sweep([job_id])
    assert f"could not enqueue {ENDPOINTS} webhook deliveries" in hung_gateway.output()
    print(f"\njob completion with {ENDPOINTS} webhooks and the broker hung: {seconds * 1000:.0f} ms")
