"""Webhook deliveries through a real Celery worker on Redis (SPEC §5.7: outbox, retries, sweep).

The worker is a subprocess (`celery -A saas_llm worker --pool solo`) on the test database, with a
1 s retry schedule; the receiver is a real HTTP server on loopback. Postgres + Redis only.
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid

import pytest
from django.conf import settings

from jobs import services as job_services
from jobs.models import CallStatus
from saas_llm.celery import app as celery_app
from tenants.models import DeliveryAttempt, DeliveryStatus, WebhookDelivery
from tenants.tasks import sweep_webhook_deliveries
from tests.conftest import needs_postgres_and_redis, subprocess_database_url
from tests.live import ROOT
from tests.test_webhooks import verify_signature

pytestmark = [pytest.mark.live, pytest.mark.django_db(transaction=True), needs_postgres_and_redis()]


class CeleryWorker:
    """`celery worker` on the test database and Redis; `stop()` always, `kill()` to simulate a crash."""

    def __init__(self) -> None:
        self.log = tempfile.TemporaryFile()
        env = {
            "DATABASE_URL": subprocess_database_url(),
            "REDIS_URL": settings.REDIS_URL,
            "CELERY_BROKER_URL": settings.REDIS_URL,
            "SAAS_LLM_WEBHOOK_ALLOW_PRIVATE": "1",
            "SAAS_LLM_WEBHOOK_RETRY_SCHEDULE": "1,1",
            "PYTHONUNBUFFERED": "1",
        }
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "saas_llm",
                "worker",
                "--pool",
                "solo",
                "--concurrency",
                "1",
                "-Q",
                "celery",
                "--loglevel",
                "INFO",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-n",
                f"webhook-test-{uuid.uuid4().hex[:8]}@%h",
            ],
            cwd=ROOT,
            env={**os.environ, **env},
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 60
        while " ready." not in self.output():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"celery worker did not start:\n{self.output()}")
            time.sleep(0.1)

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


@pytest.fixture
def start_worker():
    started: list[CeleryWorker] = []

    def start() -> CeleryWorker:
        worker = CeleryWorker()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture(autouse=True)
def register_on_loopback(settings):
    settings.SAAS_LLM_WEBHOOK_ALLOW_PRIVATE = True


def complete_a_job(tenant) -> str:
    job_id = tenant.api.post("/api/jobs/create", {"job_type": "worker-test"}).json()["job_id"]
    job_services.record_call(
        team=tenant.team,
        job_id=uuid.UUID(job_id),
        record=job_services.CallRecord(
            model_alias="chat-fast", status=CallStatus.SUCCESS, prompt_tokens=5, completion_tokens=5
        ),
    )
    response = tenant.api.post(f"/api/jobs/{job_id}/complete", {"status": "completed"})
    assert response.status_code == 200
    return job_id


def wait_for_status(delivery_id, status: str, timeout: float = 15) -> WebhookDelivery:
    deadline = time.monotonic() + timeout
    while True:
        delivery = WebhookDelivery.objects.get(pk=delivery_id)
        if delivery.status == status:
            return delivery
        assert time.monotonic() < deadline, (delivery.status, delivery.attempts, delivery.last_error)
        time.sleep(0.1)


def test_worker_delivers_and_retries_with_backoff(acme, webhook_receiver, start_worker):
    secret = acme.api.post(
        "/api/webhooks/register", {"webhook_url": webhook_receiver.url, "events": ["job.completed"]}
    ).json()["secret"]
    webhook_receiver.statuses = [500]
    worker = start_worker()

    job_id = complete_a_job(acme)  # the delivery is handed to the broker when the completion commits
    requests = webhook_receiver.wait_for(2, timeout=20)

    assert len(requests) == 2, worker.output()
    assert all(verify_signature(secret, r["headers"], r["body"]) for r in requests)
    assert requests[0]["headers"]["webhook-id"] == requests[1]["headers"]["webhook-id"]
    payload = json.loads(requests[1]["body"])
    assert (payload["event"], payload["job_id"], payload["data"]["status"]) == ("job.completed", job_id, "completed")
    delivery = wait_for_status(WebhookDelivery.objects.get().pk, DeliveryStatus.DELIVERED)
    assert delivery.attempts == 2
    attempts = list(DeliveryAttempt.objects.order_by("number"))
    assert [(a.number, a.status_code) for a in attempts] == [(1, 500), (2, 200)]
    gap = (attempts[1].created_at - attempts[0].created_at).total_seconds()
    assert 0.8 <= gap < 10  # waited for the 1 s retry, not the broker's whim


def test_sweep_delivers_what_a_dead_worker_never_sent(acme, webhook_receiver, start_worker):
    acme.api.post("/api/webhooks/register", {"webhook_url": webhook_receiver.url, "events": ["job.completed"]})
    start_worker().kill()  # the only worker crashed

    job_id = complete_a_job(acme)
    # The hand-off reached the broker; then the broker lost it (a restart without persistence).
    assert celery_app.control.purge() >= 1
    delivery = WebhookDelivery.objects.get()
    start_worker()
    time.sleep(1.5)
    assert webhook_receiver.requests == []  # nothing left to deliver it...
    assert WebhookDelivery.objects.get().status == DeliveryStatus.PENDING  # ...but the outbox row

    sweep_webhook_deliveries.delay()  # what beat runs every 15 s
    [request] = webhook_receiver.wait_for(1, timeout=20)

    assert json.loads(request["body"])["job_id"] == job_id
    assert wait_for_status(delivery.pk, DeliveryStatus.DELIVERED).attempts == 1


def test_one_message_fans_out_to_every_endpoint_on_the_worker(acme, webhook_receiver, start_worker):
    secrets = [
        acme.api.post(
            "/api/webhooks/register", {"webhook_url": f"{webhook_receiver.url}/{n}", "events": ["job.completed"]}
        ).json()["secret"]
        for n in range(3)
    ]
    start_worker()

    job_id = complete_a_job(acme)  # one publish for the event; the worker splits it into a task per delivery
    requests = webhook_receiver.wait_for(3, timeout=20)

    assert sorted(r["path"] for r in requests) == ["/hooks/0", "/hooks/1", "/hooks/2"]
    assert len({r["headers"]["webhook-id"] for r in requests}) == 1
    for request in requests:
        secret = secrets[int(request["path"].rsplit("/", 1)[1])]
        assert verify_signature(secret, request["headers"], request["body"])
        assert json.loads(request["body"])["job_id"] == job_id
    for delivery in WebhookDelivery.objects.all():
        assert wait_for_status(delivery.pk, DeliveryStatus.DELIVERED).attempts == 1
