"""Webhooks (SPEC §5.7): the registration API, and signed deliveries to a real local receiver.

Deliveries are sent by calling `attempt_delivery` directly (the Celery task's body). These tests
run inside the test transaction, so no on-commit hand-off races them; time passing between
attempts is simulated by moving `next_attempt_at`. The embedded default (no broker: a background
thread) is tested end to end; a real Celery worker is in test_webhook_worker.py.
"""

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from jobs import services as job_services
from jobs.models import CallStatus
from tenants import services as tenant_services
from tenants import webhooks
from tenants.events import emit_event
from tenants.models import DeliveryAttempt, DeliveryStatus, Event, WebhookDelivery, WebhookEndpoint
from tests.conftest import make_tenant
from tests.live import free_port

NOT_FOUND = {"detail": "Webhook not found", "code": "webhook_not_found"}
LONG = [3600.0, 3600.0]  # retries never fire by themselves during a test


@pytest.fixture(autouse=True)
def webhook_settings(settings):
    settings.SAAS_LLM_WEBHOOK_ALLOW_PRIVATE = True  # the receiver is on loopback
    settings.SAAS_LLM_WEBHOOK_RETRY_SCHEDULE = LONG
    return settings


def register(tenant, url: str, events: list[str] | None = None, **extra) -> dict:
    response = tenant.api.post(
        "/api/webhooks/register", {"webhook_url": url, "events": events or ["job.completed"], **extra}
    )
    assert response.status_code == 201, response.content
    return response.json()


def verify_signature(secret: str, headers: dict, body: bytes) -> bool:
    """Standard Webhooks, computed independently of the application."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    candidates = [part.split(",", 1)[1] for part in headers["webhook-signature"].split(" ") if part.startswith("v1,")]
    return any(hmac.compare_digest(expected, candidate) for candidate in candidates)


# --- registration API -----------------------------------------------------------------------------


def test_register_returns_the_secret_once(acme):
    response = acme.api.post(
        "/api/webhooks/register",
        {
            "webhook_url": "https://93.184.215.14/hooks",
            "events": ["job.completed", "job.failed", "job.completed"],
            "description": "billing",
        },
    )

    assert response.status_code == 201
    body = response.json()
    assert set(body) == {"webhook_id", "team_id", "webhook_url", "events", "description", "created_at", "secret"}
    assert (body["team_id"], body["webhook_url"], body["description"]) == (
        "acme-corp",
        "https://93.184.215.14/hooks",
        "billing",
    )
    assert body["events"] == ["job.completed", "job.failed"]
    assert body["secret"].startswith("whsec_")
    assert len(base64.b64decode(body["secret"].removeprefix("whsec_"))) == 32
    endpoint = WebhookEndpoint.objects.get(id=body["webhook_id"])
    assert (endpoint.team_id, endpoint.secret, endpoint.deleted_at) == ("acme-corp", body["secret"], None)
    shown_later = [
        acme.api.get(f"/api/webhooks/{body['webhook_id']}").json(),
        acme.api.get("/api/webhooks").json()["results"][0],
    ]
    assert all("secret" not in item for item in shown_later)
    assert shown_later[0] == {k: v for k, v in body.items() if k != "secret"}


def test_each_endpoint_gets_its_own_secret(acme):
    secrets = {register(acme, "https://93.184.215.14/a")["secret"] for _ in range(3)}

    assert len(secrets) == 3


def test_admin_registers_for_a_named_team(admin, acme):
    missing = admin.post("/api/webhooks/register", {"webhook_url": "https://93.184.215.14/a", "events": ["job.failed"]})
    created = admin.post(
        "/api/webhooks/register",
        {"team_id": "acme-corp", "webhook_url": "https://93.184.215.14/a", "events": ["job.failed"]},
    )

    assert missing.status_code == 422
    assert missing.json()["detail"][0]["loc"] == ["body", "team_id"]
    assert created.status_code == 201
    assert WebhookEndpoint.objects.get().team_id == "acme-corp"


def test_team_key_cannot_register_for_another_team(acme, globex):
    response = acme.api.post(
        "/api/webhooks/register",
        {"team_id": "globex-eng", "webhook_url": "https://93.184.215.14/a", "events": ["job.failed"]},
    )

    assert response.status_code == 403
    assert response.json()["detail"] == "API key does not belong to team 'globex-eng'"
    assert not WebhookEndpoint.objects.exists()


@pytest.mark.parametrize(
    ("body", "loc", "error_type"),
    [
        ({"webhook_url": "ftp://93.184.215.14/hooks"}, ["body", "webhook_url"], None),
        ({"webhook_url": "https://user:secret@93.184.215.14/hooks"}, ["body", "webhook_url"], None),
        ({"webhook_url": "https://:secret@93.184.215.14/hooks"}, ["body", "webhook_url"], None),
        ({"webhook_url": "http://127.0.0.1:8080/hooks"}, ["body", "webhook_url"], None),
        ({"webhook_url": "http://localhost/hooks"}, ["body", "webhook_url"], None),
        ({"webhook_url": "http://10.1.2.3/hooks"}, ["body", "webhook_url"], None),
        ({"webhook_url": "http://192.168.1.20/hooks"}, ["body", "webhook_url"], None),
        ({"webhook_url": "http://169.254.169.254/latest/meta-data"}, ["body", "webhook_url"], None),
        ({"webhook_url": "http://[::1]:8080/hooks"}, ["body", "webhook_url"], None),
        ({"webhook_url": "not a url"}, ["body", "webhook_url"], None),
        ({"webhook_url": None}, ["body", "webhook_url"], None),
        ({"events": ["job.exploded"]}, ["body", "events"], None),
        ({"events": []}, ["body", "events"], None),
        ({"events": "job.completed"}, ["body", "events"], None),
        ({"secret": "whsec_mine"}, ["body", "secret"], "extra_forbidden"),
        ({"evnets": ["job.completed"]}, ["body", "evnets"], "extra_forbidden"),
    ],
)
def test_register_validation(acme, webhook_settings, body, loc, error_type):
    webhook_settings.SAAS_LLM_WEBHOOK_ALLOW_PRIVATE = False
    sent = {"webhook_url": "https://93.184.215.14/hooks", "events": ["job.completed"], **body}

    response = acme.api.post("/api/webhooks/register", sent)

    assert response.status_code == 422, response.content
    errors = response.json()["detail"]
    assert any(error["loc"][:2] == loc for error in errors), errors
    if error_type:
        assert [error["type"] for error in errors if error["loc"] == loc] == [error_type]
    assert not WebhookEndpoint.objects.exists()


def test_missing_fields_are_422(acme):
    response = acme.api.post("/api/webhooks/register", {})

    assert response.status_code == 422
    assert sorted(tuple(error["loc"]) for error in response.json()["detail"]) == [
        ("body", "events"),
        ("body", "webhook_url"),
    ]


def test_loopback_is_allowed_when_configured(acme, webhook_receiver):
    assert register(acme, webhook_receiver.url)["webhook_url"] == webhook_receiver.url


def test_list_is_scoped_to_the_team(acme, globex, admin):
    mine = register(acme, "https://93.184.215.14/acme")
    theirs = register(globex, "https://93.184.215.14/globex")

    acme_list = acme.api.get("/api/webhooks").json()
    all_list = admin.get("/api/webhooks").json()
    filtered = admin.get("/api/webhooks", {"team_id": "globex-eng"}).json()

    assert (acme_list["count"], [w["webhook_id"] for w in acme_list["results"]]) == (1, [mine["webhook_id"]])
    assert {w["webhook_id"] for w in all_list["results"]} == {mine["webhook_id"], theirs["webhook_id"]}
    assert [w["webhook_id"] for w in filtered["results"]] == [theirs["webhook_id"]]
    assert acme.api.get("/api/webhooks", {"team_id": "globex-eng"}).status_code == 403


def test_another_teams_webhook_is_404_everywhere(acme, globex):
    theirs = register(globex, "https://93.184.215.14/globex")["webhook_id"]

    responses = [
        acme.api.get(f"/api/webhooks/{theirs}"),
        acme.api.get(f"/api/webhooks/{theirs}/deliveries"),
        acme.api.delete(f"/api/webhooks/{theirs}"),
        acme.api.get(f"/api/webhooks/{uuid.uuid4()}"),
    ]

    assert [r.status_code for r in responses] == [404, 404, 404, 404]
    assert all(r.json() == NOT_FOUND for r in responses)
    assert WebhookEndpoint.objects.get(id=theirs).deleted_at is None
    assert acme.api.get("/api/webhooks/not-a-uuid").status_code == 404


def test_delete_stops_new_deliveries(acme):
    webhook_id = register(acme, "https://93.184.215.14/acme")["webhook_id"]

    deleted = acme.api.delete(f"/api/webhooks/{webhook_id}")
    again = acme.api.delete(f"/api/webhooks/{webhook_id}")
    emit_event(team=acme.team, event_type="job.completed", data={})

    assert deleted.status_code == 204
    assert again.status_code == 404
    assert WebhookEndpoint.objects.get(id=webhook_id).deleted_at is not None
    assert acme.api.get(f"/api/webhooks/{webhook_id}").status_code == 404
    assert acme.api.get("/api/webhooks").json()["count"] == 0
    assert not WebhookDelivery.objects.exists()


def test_webhook_api_needs_a_valid_key(anon, acme):
    webhook_id = register(acme, "https://93.184.215.14/acme")["webhook_id"]

    no_key = [
        anon.get("/api/webhooks"),
        anon.post("/api/webhooks/register", {"webhook_url": "https://93.184.215.14/a", "events": ["job.failed"]}),
        anon.get(f"/api/webhooks/{webhook_id}"),
        anon.delete(f"/api/webhooks/{webhook_id}"),
    ]
    tenant_services.revoke_key(key=acme.team.keys.get())
    revoked = acme.api.get(f"/api/webhooks/{webhook_id}")

    assert [r.status_code for r in no_key] == [401, 401, 401, 401]
    assert all(r.headers["WWW-Authenticate"] == "Bearer" for r in no_key)
    assert revoked.status_code == 401
    assert WebhookEndpoint.objects.get(id=webhook_id).deleted_at is None


# --- deliveries to a real receiver --------------------------------------------------------------------


def finish_job_with_one_call(tenant, status: str = "completed") -> str:
    """A job with one billed call (recorded through the service, no provider needed), then completed."""
    job_id = tenant.api.post("/api/jobs/create", {"job_type": "resume.parse"}).json()["job_id"]
    job_services.record_call(
        team=tenant.team,
        job_id=uuid.UUID(job_id),
        record=job_services.CallRecord(
            model_alias="chat-fast",
            status=CallStatus.SUCCESS,
            prompt_tokens=10,
            completion_tokens=20,
            cost_nanos=45_000,
        ),
    )
    response = tenant.api.post(f"/api/jobs/{job_id}/complete", {"status": status})
    assert response.status_code == 200, response.content
    return job_id


def due_now(delivery_id) -> None:
    """Time passes: the delivery's next attempt is due."""
    WebhookDelivery.objects.filter(pk=delivery_id).update(next_attempt_at=timezone.now())


def test_job_completed_is_delivered_signed(acme, globex, webhook_receiver):
    hook = register(acme, webhook_receiver.url, ["job.completed", "job.failed"])
    register(acme, webhook_receiver.url, ["job.failed"])  # not subscribed to this event
    register(globex, webhook_receiver.url, ["job.completed"])  # another team's endpoint

    job_id = finish_job_with_one_call(acme)
    delivery = WebhookDelivery.objects.get()  # one row, for the one subscribed endpoint
    assert (str(delivery.endpoint_id), delivery.status, delivery.attempts) == (hook["webhook_id"], "pending", 0)
    sent_at = int(time.time())
    assert webhooks.attempt_delivery(str(delivery.id)) == DeliveryStatus.DELIVERED

    [request] = webhook_receiver.requests
    headers, body = request["headers"], request["body"]
    assert request["path"] == "/hooks"
    assert headers["content-type"] == "application/json"
    assert verify_signature(hook["secret"], headers, body)
    assert not verify_signature("whsec_" + base64.b64encode(b"x" * 32).decode(), headers, body)
    assert abs(int(headers["webhook-timestamp"]) - sent_at) <= 5
    payload = json.loads(body)
    assert headers["webhook-id"] == payload["event_id"] == str(delivery.event_id)
    assert set(payload) == {"event", "event_id", "job_id", "team_id", "timestamp", "data"}
    assert (payload["event"], payload["job_id"], payload["team_id"]) == ("job.completed", job_id, "acme-corp")
    assert payload["timestamp"].endswith("Z")
    data = payload["data"]
    assert set(data) == {"total_calls", "duration_seconds", "cost_usd", "credits_charged", "status"}
    assert (data["total_calls"], data["cost_usd"], data["credits_charged"], data["status"]) == (
        1,
        0.000045,
        1.0,
        "completed",
    )
    assert 0 <= data["duration_seconds"] < 60
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code, delivery.last_error) == (
        "delivered",
        1,
        200,
        "",
    )
    assert delivery.delivered_at is not None
    assert list(DeliveryAttempt.objects.values_list("number", "status_code", "error")) == [(1, 200, "")]
    listed = acme.api.get(f"/api/webhooks/{hook['webhook_id']}/deliveries").json()
    assert listed["count"] == 1
    assert listed["results"][0]["delivery_id"] == str(delivery.id)
    assert (listed["results"][0]["event"], listed["results"][0]["status"], listed["results"][0]["attempts"]) == (
        "job.completed",
        "delivered",
        1,
    )


@pytest.mark.parametrize("status", ["failed", "cancelled"])
def test_failed_and_cancelled_jobs_have_their_events(acme, webhook_receiver, status):
    hook = register(acme, webhook_receiver.url, [f"job.{status}"])

    job_id = finish_job_with_one_call(acme, status)
    assert webhooks.attempt_delivery(str(WebhookDelivery.objects.get().id)) == DeliveryStatus.DELIVERED

    [request] = webhook_receiver.requests
    assert verify_signature(hook["secret"], request["headers"], request["body"])
    payload = json.loads(request["body"])
    assert (payload["event"], payload["job_id"]) == (f"job.{status}", job_id)
    assert (payload["data"]["status"], payload["data"]["credits_charged"]) == (status, 0.0)


def test_low_balance_is_delivered(db, webhook_receiver):
    tenant = make_tenant("lowly", "low-org", credits=5, low_balance_threshold=5)
    hook = register(tenant, webhook_receiver.url, ["credits.low_balance"])

    tenant.api.post("/api/jobs/create", {"job_type": "x"})  # reserves 1 credit: 5 → 4 crosses the threshold
    tenant.api.post("/api/jobs/create", {"job_type": "x"})  # still below: fires once per crossing
    delivery = WebhookDelivery.objects.get()
    assert webhooks.attempt_delivery(str(delivery.id)) == DeliveryStatus.DELIVERED

    [request] = webhook_receiver.requests
    assert verify_signature(hook["secret"], request["headers"], request["body"])
    payload = json.loads(request["body"])
    assert set(payload) == {"event", "event_id", "team_id", "timestamp", "data"}
    assert (payload["event"], payload["team_id"]) == ("credits.low_balance", "lowly")
    assert payload["data"] == {"credits_remaining": 4.0, "low_balance_threshold": 5.0}


def test_retries_until_the_receiver_recovers(acme, webhook_receiver):
    register(acme, webhook_receiver.url)
    webhook_receiver.statuses = [500, 500]
    finish_job_with_one_call(acme)
    delivery = WebhookDelivery.objects.get()

    outcomes = [webhooks.attempt_delivery(str(delivery.id))]
    delivery.refresh_from_db()
    first_retry_in = (delivery.next_attempt_at - timezone.now()).total_seconds()
    assert webhooks.attempt_delivery(str(delivery.id)) is None  # not due yet: nothing sent
    for _ in range(2):
        due_now(delivery.id)
        outcomes.append(webhooks.attempt_delivery(str(delivery.id)))

    assert outcomes == ["pending", "pending", "delivered"]
    assert 0.9 * LONG[0] - 5 <= first_retry_in <= 1.1 * LONG[0]  # the schedule, with jitter
    assert len(webhook_receiver.requests) == 3
    assert len({r["headers"]["webhook-id"] for r in webhook_receiver.requests}) == 1  # receivers dedupe on it
    assert list(DeliveryAttempt.objects.order_by("number").values_list("number", "status_code", "error")) == [
        (1, 500, "HTTP 500"),
        (2, 500, "HTTP 500"),
        (3, 200, ""),
    ]
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == ("delivered", 3, 200)


@pytest.mark.parametrize(
    ("answer", "outcome", "error"),
    [
        (200, "delivered", ""),
        (202, "delivered", ""),
        (302, "pending", "HTTP 302"),
        (404, "pending", "HTTP 404"),
        (410, "pending", "HTTP 410"),
        (503, "pending", "HTTP 503"),
    ],
)
def test_only_2xx_counts_as_delivered(acme, webhook_receiver, answer, outcome, error):
    register(acme, webhook_receiver.url)
    webhook_receiver.statuses = [answer]
    finish_job_with_one_call(acme)

    assert webhooks.attempt_delivery(str(WebhookDelivery.objects.get().id)) == outcome

    delivery = WebhookDelivery.objects.get()
    assert (delivery.last_status_code, delivery.last_error, delivery.attempts) == (answer, error, 1)
    assert len(webhook_receiver.requests) == 1  # redirects are not followed


def test_fails_after_the_schedule_is_exhausted(acme, webhook_receiver):
    register(acme, webhook_receiver.url)
    webhook_receiver.statuses = [500, 503, 400, 200]
    finish_job_with_one_call(acme)
    delivery = WebhookDelivery.objects.get()

    outcomes = []
    for _ in range(len(LONG) + 1):
        due_now(delivery.id)
        outcomes.append(webhooks.attempt_delivery(str(delivery.id)))
    due_now(delivery.id)
    after = webhooks.attempt_delivery(str(delivery.id))

    assert outcomes == ["pending", "pending", "failed"]  # 1 attempt + one per scheduled retry
    assert after is None  # a failed delivery is never sent again by itself
    assert len(webhook_receiver.requests) == 3
    delivery.refresh_from_db()
    assert (delivery.status, delivery.attempts, delivery.last_status_code, delivery.last_error) == (
        "failed",
        3,
        400,
        "HTTP 400",
    )
    assert DeliveryAttempt.objects.count() == 3


def test_staff_redeliver_sends_a_failed_delivery_again(acme, webhook_receiver, webhook_settings):
    webhook_settings.SAAS_LLM_WEBHOOK_RETRY_SCHEDULE = []  # one attempt only
    hook = register(acme, webhook_receiver.url)
    webhook_receiver.statuses = [500]
    finish_job_with_one_call(acme)
    delivery = WebhookDelivery.objects.get()
    assert webhooks.attempt_delivery(str(delivery.id)) == DeliveryStatus.FAILED

    webhooks.redeliver(delivery=delivery)
    assert WebhookDelivery.objects.get().status == DeliveryStatus.PENDING
    assert webhooks.attempt_delivery(str(delivery.id)) == DeliveryStatus.DELIVERED

    first, second = webhook_receiver.requests
    assert first["body"] == second["body"] and first["headers"]["webhook-id"] == second["headers"]["webhook-id"]
    assert verify_signature(hook["secret"], second["headers"], second["body"])
    assert list(DeliveryAttempt.objects.order_by("number").values_list("number", "status_code")) == [(1, 500), (2, 200)]


def test_an_unreachable_receiver_is_retried(acme):
    register(acme, f"http://127.0.0.1:{free_port()}/hooks")  # nothing listens there
    finish_job_with_one_call(acme)
    delivery = WebhookDelivery.objects.get()

    assert webhooks.attempt_delivery(str(delivery.id)) == DeliveryStatus.PENDING

    delivery.refresh_from_db()
    assert delivery.last_status_code is None
    assert delivery.last_error.startswith("ConnectError")
    assert delivery.next_attempt_at > timezone.now() + timedelta(seconds=0.9 * LONG[0] - 5)


def test_a_private_target_is_refused_at_send_time(acme, webhook_receiver, webhook_settings):
    register(acme, webhook_receiver.url)  # allowed when registered
    finish_job_with_one_call(acme)
    webhook_settings.SAAS_LLM_WEBHOOK_ALLOW_PRIVATE = False  # e.g. its DNS now points inside

    assert webhooks.attempt_delivery(str(WebhookDelivery.objects.get().id)) == DeliveryStatus.PENDING

    assert webhook_receiver.requests == []
    assert "private, loopback or link-local" in WebhookDelivery.objects.get().last_error


def test_a_deleted_endpoint_gets_nothing(acme, webhook_receiver):
    hook = register(acme, webhook_receiver.url)
    finish_job_with_one_call(acme)
    acme.api.delete(f"/api/webhooks/{hook['webhook_id']}")

    assert webhooks.attempt_delivery(str(WebhookDelivery.objects.get().id)) == DeliveryStatus.FAILED

    assert webhook_receiver.requests == []
    assert WebhookDelivery.objects.get().last_error == "endpoint deleted"


def test_a_claimed_delivery_is_not_sent_twice(acme, webhook_receiver):
    register(acme, webhook_receiver.url)
    finish_job_with_one_call(acme)
    delivery = WebhookDelivery.objects.get()
    WebhookDelivery.objects.filter(pk=delivery.pk).update(claimed_until=timezone.now() + timedelta(seconds=30))

    assert webhooks.attempt_delivery(str(delivery.id)) is None
    assert webhooks.sweep_due_deliveries() == 0  # another worker is sending it

    assert webhook_receiver.requests == []


# --- the embedded default: no broker, deliveries in a background thread ----------------------------------

eager_only = pytest.mark.skipif(not settings.CELERY_TASK_ALWAYS_EAGER, reason="a broker is configured")


def wait_for_background_sends(started_before: set, timeout: float = 10.0) -> None:
    """Until every delivery thread started since `started_before` is done (a retry's thread is
    started by the attempt before it). Only then is the test database read: the in-memory SQLite
    test database makes a reader and a concurrent writer fail instead of waiting."""
    deadline = time.monotonic() + timeout
    while any(
        isinstance(thread, threading.Timer) and thread.is_alive() and thread not in started_before
        for thread in threading.enumerate()
    ):
        assert time.monotonic() < deadline, "background deliveries did not finish"
        time.sleep(0.02)


@eager_only
@pytest.mark.django_db(transaction=True)
def test_without_a_broker_completion_delivers_in_the_background(acme, webhook_receiver, webhook_settings):
    webhook_settings.SAAS_LLM_WEBHOOK_RETRY_SCHEDULE = [0.2, 0.2]
    hook = register(acme, webhook_receiver.url)
    webhook_receiver.statuses = [500]
    threads_before = set(threading.enumerate())

    job_id = finish_job_with_one_call(acme)
    requests = webhook_receiver.wait_for(2, timeout=10)
    wait_for_background_sends(threads_before)

    assert len(requests) == 2
    assert all(verify_signature(hook["secret"], r["headers"], r["body"]) for r in requests)
    assert json.loads(requests[1]["body"])["job_id"] == job_id
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.DELIVERED, 2)
    assert list(DeliveryAttempt.objects.order_by("number").values_list("status_code", flat=True)) == [500, 200]


@eager_only
@pytest.mark.django_db(transaction=True)
def test_sweep_sends_deliveries_whose_task_was_lost(acme, webhook_receiver):
    hook = register(acme, webhook_receiver.url)
    endpoint = WebhookEndpoint.objects.get(id=hook["webhook_id"])
    # What a crash between commit and hand-off leaves behind: rows, and no task.
    event = Event.objects.create(
        team=acme.team, type="job.failed", payload={"event": "job.failed", "event_id": "x", "team_id": "acme-corp"}
    )
    lost = WebhookDelivery.objects.create(event=event, endpoint=endpoint, next_attempt_at=timezone.now())
    later_event = Event.objects.create(team=acme.team, type="job.failed", payload={})
    WebhookDelivery.objects.create(
        event=later_event, endpoint=endpoint, next_attempt_at=timezone.now() + timedelta(hours=1)
    )
    threads_before = set(threading.enumerate())

    assert webhooks.sweep_due_deliveries() == 1
    [request] = webhook_receiver.wait_for(1)
    wait_for_background_sends(threads_before)

    assert request["headers"]["webhook-id"] == str(event.id)
    assert WebhookDelivery.objects.get(pk=lost.pk).status == DeliveryStatus.DELIVERED
    assert WebhookDelivery.objects.filter(status=DeliveryStatus.PENDING).count() == 1  # the one not yet due
