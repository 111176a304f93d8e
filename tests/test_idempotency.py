"""Idempotency-Key on every POST (SPEC §4).

Scope (credential, key); the first final response (< 500, not 409/429) is replayed for 24 h with
`Idempotent-Replayed: true` and without doing the work again. Tests use both the sync test client
(the middleware's sync path) and AsyncClient (its async path, as under uvicorn); the cross-process
race runs against uvicorn with two workers on Postgres.
"""

import json
import threading
import time
import uuid
from datetime import timedelta

import httpx
import pytest
from asgiref.sync import async_to_sync
from django.test import AsyncClient, Client
from django.utils import timezone

from billing.models import EntryKind, LedgerEntry
from jobs import services as job_services
from jobs.models import CallStatus, Job, JobStatus, LLMCall
from saas_llm.idempotency import purge_expired
from tenants import limits
from tenants import services as tenant_services
from tenants.models import IdempotencyRecord, IdempotencyStatus, hash_key
from tenants.tasks import purge_idempotency_keys
from tests.conftest import Api, make_tenant, needs_postgres_and_redis

HELLO = [{"role": "user", "content": "hello world"}]
MISMATCH = {"detail": "Idempotency-Key was used with a different request", "code": "idempotency_mismatch"}
IN_PROGRESS = {"detail": "A request with this Idempotency-Key is still in progress", "code": "idempotency_in_progress"}


@pytest.fixture(autouse=True)
def fresh_limiter(monkeypatch):
    monkeypatch.setattr(limits, "_limiter", None)


def apost(key: str | None, path: str, body, headers: dict | None = None):
    """POST through AsyncClient: the ASGI request path, as uvicorn serves it."""

    async def go():
        sent = {"Authorization": f"Bearer {key}"} if key else {}
        sent.update(headers or {})
        return await AsyncClient().post(path, json.dumps(body), content_type="application/json", headers=sent)

    return async_to_sync(go)()


def idem(key: str) -> dict:
    return {"Idempotency-Key": key}


# --- jobs/create: replay, mismatch, validation ------------------------------------------------------


def test_same_key_twice_replays_the_first_response(acme):
    body = {"job_type": "resume.parse", "metadata": {"file": "a.pdf"}}

    first = acme.api.post("/api/jobs/create", body, headers=idem("create-1"))
    second = acme.api.post("/api/jobs/create", body, headers=idem("create-1"))

    assert first.status_code == second.status_code == 201
    assert second.content == first.content
    assert second.headers["Idempotent-Replayed"] == "true"
    assert second.headers["Content-Type"] == "application/json"
    assert "Idempotent-Replayed" not in first.headers
    assert Job.objects.filter(team=acme.team).count() == 1
    record = IdempotencyRecord.objects.get()
    assert (record.key, record.status, record.response_status) == ("create-1", IdempotencyStatus.COMPLETED, 201)
    assert record.credential == hash_key(acme.key)  # never the raw key


def test_replay_does_not_reserve_credits_again(acme):
    for _ in range(3):
        assert acme.api.post("/api/jobs/create", {"job_type": "x"}, headers=idem("reserve-once")).status_code == 201

    balance = acme.api.get("/api/credits/balance").json()

    assert balance["credits_reserved"] == 1
    assert balance["credits_remaining"] == 99


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/jobs/create", {"job_type": "something-else"}),
        ("/api/webhooks/register", {"job_type": "resume.parse"}),
    ],
    ids=["different-body", "different-path"],
)
def test_same_key_for_a_different_request_is_422(acme, path, body):
    acme.api.post("/api/jobs/create", {"job_type": "resume.parse"}, headers=idem("k-1"))

    response = acme.api.post(path, body, headers=idem("k-1"))

    assert response.status_code == 422
    assert response.json() == MISMATCH
    assert Job.objects.count() == 1
    assert IdempotencyRecord.objects.get().response_status == 201  # the original is still replayable


def test_key_longer_than_255_characters_is_422(acme):
    too_long = acme.api.post("/api/jobs/create", {"job_type": "x"}, headers=idem("k" * 256))
    longest = acme.api.post("/api/jobs/create", {"job_type": "x"}, headers=idem("k" * 255))

    assert too_long.status_code == 422
    assert [error["loc"] for error in too_long.json()["detail"]] == [["header", "Idempotency-Key"]]
    assert longest.status_code == 201
    assert Job.objects.count() == 1
    assert IdempotencyRecord.objects.get().key == "k" * 255


def test_final_client_errors_are_replayed_too(acme):
    first = acme.api.post("/api/jobs/create", {"job_type": ""}, headers=idem("bad-1"))
    second = acme.api.post("/api/jobs/create", {"job_type": ""}, headers=idem("bad-1"))

    assert first.status_code == second.status_code == 422
    assert second.content == first.content
    assert second.headers["Idempotent-Replayed"] == "true"


def test_keys_are_scoped_per_credential(acme, globex):
    _, second_acme_key = tenant_services.issue_key(team=acme.team, name="second")
    second_acme = Api(acme.api.client, second_acme_key)

    responses = [
        api.post("/api/jobs/create", {"job_type": "x"}, headers=idem("shared-key"))
        for api in (acme.api, globex.api, second_acme)
    ]

    assert [r.status_code for r in responses] == [201, 201, 201]
    assert not [r for r in responses if "Idempotent-Replayed" in r.headers]
    assert len({r.json()["job_id"] for r in responses}) == 3
    assert Job.objects.filter(team=acme.team).count() == 2
    assert Job.objects.filter(team=globex.team).count() == 1
    assert IdempotencyRecord.objects.count() == 3


def test_without_a_valid_bearer_nothing_is_remembered(anon):
    response = anon.post("/api/jobs/create", {"job_type": "x"}, headers=idem("anon-1"))

    assert response.status_code == 401
    assert not IdempotencyRecord.objects.exists()


def test_an_empty_key_is_400(acme):
    response = acme.api.post("/api/jobs/create", {"job_type": "x"}, headers=idem(""))

    assert response.status_code == 400
    assert response.json() == {"detail": "Idempotency-Key must not be empty", "code": "invalid_idempotency_key"}
    assert not Job.objects.exists() and not IdempotencyRecord.objects.exists()


def spost(key: str | None, path: str, body, headers: dict | None = None):
    """POST through the sync test client: the middleware's sync path."""
    return Api(Client(), key).post(path, body, headers=headers)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("send", [spost, apost], ids=["sync", "async"])
def test_a_body_over_the_limit_is_413_with_a_key(acme, settings, send):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    body = {"job_type": "x", "metadata": {"blob": "x" * 2000}}

    response = send(acme.key, "/api/jobs/create", body, idem("big-1"))

    assert response.status_code == 413, response.content
    assert response.json() == {"detail": "Request body is larger than 1000 bytes", "code": "request_too_large"}
    assert not Job.objects.exists() and not IdempotencyRecord.objects.exists()


@pytest.mark.django_db(transaction=True)  # the async path reads the key on a worker thread's connection
@pytest.mark.parametrize("send", [spost, apost], ids=["sync", "async"])
def test_a_revoked_key_gets_401_not_the_stored_response(acme, send):
    key, raw = tenant_services.issue_key(team=acme.team, name="soon-revoked")
    first = send(raw, "/api/jobs/create", {"job_type": "x"}, idem("revoked-1"))
    assert first.status_code == 201
    tenant_services.revoke_key(key=key)

    replay = send(raw, "/api/jobs/create", {"job_type": "x"}, idem("revoked-1"))
    mismatch = send(raw, "/api/jobs/create", {"job_type": "other"}, idem("revoked-1"))

    for response in (replay, mismatch):
        assert response.status_code == 401, response.content
        assert response.json() == {"detail": "API key has been revoked"}
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert "Idempotent-Replayed" not in response.headers
    assert Job.objects.count() == 1


# Every POST whose answer holds a secret shown once: (path, body, the secret's field).
SECRET_CREATIONS = {
    "team-create": ("/api/teams/create", {"team_id": "t-secret", "organization_id": "acme"}, "virtual_key"),
    "key-create": ("/api/teams/acme-corp/keys", {"name": "ci"}, "key"),
    "webhook-register": (
        "/api/webhooks/register",
        {"team_id": "acme-corp", "webhook_url": "http://127.0.0.1:9/hooks", "events": ["job.completed"]},
        "secret",
    ),
}


@pytest.mark.parametrize("creation", SECRET_CREATIONS)
def test_one_time_secrets_are_never_stored_and_replays_redact_them(admin, acme, settings, creation):
    settings.SAAS_LLM_WEBHOOK_ALLOW_PRIVATE = True
    path, body, field = SECRET_CREATIONS[creation]

    first = admin.post(path, body, headers=idem(creation))
    replay = admin.post(path, body, headers=idem(creation))

    assert first.status_code == 201, first.content
    secret = first.json()[field]
    assert secret.startswith(("sk-", "whsec_"))
    stored = bytes(IdempotencyRecord.objects.get(key=creation).response_body)
    assert secret.encode() not in stored
    assert replay.status_code == 201
    assert replay.headers["Idempotent-Replayed"] == "true"
    replayed = replay.json()
    assert field not in replayed and replayed["secret_redacted"] is True
    assert {name: value for name, value in first.json().items() if name != field} == {
        name: value for name, value in replayed.items() if name != "secret_redacted"
    }


# --- retention -------------------------------------------------------------------------------------


def test_records_live_24_hours_and_purge_deletes_expired_ones(acme):
    acme.api.post("/api/jobs/create", {"job_type": "x"}, headers=idem("old"))
    acme.api.post("/api/jobs/create", {"job_type": "x"}, headers=idem("new"))
    record = IdempotencyRecord.objects.get(key="old")
    assert record.expires_at - record.created_at == pytest.approx(timedelta(hours=24), abs=timedelta(seconds=5))
    IdempotencyRecord.objects.filter(key="old").update(
        created_at=timezone.now() - timedelta(hours=25), expires_at=timezone.now() - timedelta(hours=1)
    )

    assert purge_expired(now=timezone.now() + timedelta(hours=23)) == 1
    assert list(IdempotencyRecord.objects.values_list("key", flat=True)) == ["new"]
    assert purge_idempotency_keys() == 0  # the periodic task: nothing else expired yet
    assert purge_expired(now=timezone.now() + timedelta(hours=24, seconds=10)) == 1
    assert not IdempotencyRecord.objects.exists()


def test_an_expired_key_runs_the_request_again(acme):
    first = acme.api.post("/api/jobs/create", {"job_type": "x"}, headers=idem("expiring"))
    IdempotencyRecord.objects.update(expires_at=timezone.now() - timedelta(seconds=1))

    second = acme.api.post("/api/jobs/create", {"job_type": "x"}, headers=idem("expiring"))

    assert second.status_code == 201
    assert "Idempotent-Replayed" not in second.headers
    assert second.json()["job_id"] != first.json()["job_id"]
    assert Job.objects.count() == 2


def test_an_abandoned_first_attempt_is_taken_over(acme):
    IdempotencyRecord.objects.create(
        credential=hash_key(acme.key),
        key="orphan",
        fingerprint="0" * 64,
        expires_at=timezone.now() + timedelta(hours=1),
    )
    IdempotencyRecord.objects.update(created_at=timezone.now() - timedelta(minutes=11))  # its worker died

    response = acme.api.post("/api/jobs/create", {"job_type": "x"}, headers=idem("orphan"))

    assert response.status_code == 201
    assert Job.objects.count() == 1
    record = IdempotencyRecord.objects.get()
    assert (record.status, record.response_status) == (IdempotencyStatus.COMPLETED, 201)


# --- jobs complete and credits add: no second charge or grant ------------------------------------------


def test_replayed_completion_returns_the_first_answer_and_charges_once(acme, admin):
    job_id = acme.api.post("/api/jobs/create", {"job_type": "x"}).json()["job_id"]
    job_services.record_call(  # one billable call (no provider needed): the job costs 1 credit
        team=acme.team,
        job_id=uuid.UUID(job_id),
        record=job_services.CallRecord(model_alias="chat-fast", status=CallStatus.SUCCESS, prompt_tokens=3),
    )
    path = f"/api/jobs/{job_id}/complete"

    first = acme.api.post(path, {"status": "completed"}, headers=idem("done-1"))
    admin.post("/api/credits/add", {"team_id": acme.team.id, "amount": 50})  # the balance moves on
    replay = acme.api.post(path, {"status": "completed"}, headers=idem("done-1"))

    assert first.status_code == replay.status_code == 200
    assert first.json()["credits_charged"] == 1 and first.json()["credits_remaining"] == 99
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.content == first.content  # not re-rendered: still the balance of that moment
    assert LedgerEntry.objects.filter(team=acme.team, kind=EntryKind.CHARGE).count() == 1
    assert acme.api.get("/api/credits/balance").json()["credits_remaining"] == 149
    assert Job.objects.get(id=job_id).status == JobStatus.COMPLETED


def test_a_conflict_is_not_stored(acme):
    job_id = acme.api.post("/api/jobs/create", {"job_type": "x"}).json()["job_id"]
    acme.api.post(f"/api/jobs/{job_id}/complete", {"status": "completed"})

    conflict = acme.api.post(f"/api/jobs/{job_id}/complete", {"status": "failed"}, headers=idem("late"))

    assert conflict.status_code == 409
    assert conflict.json()["code"] == "job_already_finished"
    assert not IdempotencyRecord.objects.exists()


def test_credits_add_with_the_same_key_grants_once(acme, admin):
    body = {"team_id": acme.team.id, "amount": 25, "reason": "promo"}

    responses = [admin.post("/api/credits/add", body, headers=idem("grant-1")) for _ in range(3)]

    assert [r.status_code for r in responses] == [201, 201, 201]
    assert responses[1].content == responses[2].content == responses[0].content
    assert LedgerEntry.objects.filter(team=acme.team, kind=EntryKind.GRANT).count() == 2  # initial + this one
    assert acme.api.get("/api/credits/balance").json()["credits_allocated"] == 125


# --- LLM calls ---------------------------------------------------------------------------------------


def new_job(tenant) -> str:
    response = tenant.api.post("/api/jobs/create", {"job_type": "idem"})
    assert response.status_code == 201
    return response.json()["job_id"]


@pytest.mark.django_db(transaction=True)
def test_replayed_llm_call_does_not_call_the_provider_again(llm_team, mock):
    job_id = new_job(llm_team)
    path = f"/api/jobs/{job_id}/llm-call"

    first = apost(llm_team.key, path, {"messages": HELLO}, idem("call-1"))
    replay = apost(llm_team.key, path, {"messages": HELLO}, idem("call-1"))

    assert first.status_code == replay.status_code == 200
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json() == first.json()
    assert mock.stats()["requests"] == 1
    assert LLMCall.objects.filter(job_id=job_id).count() == 1
    assert Job.objects.get(id=job_id).total_calls == 1


@pytest.mark.django_db(transaction=True)
def test_server_errors_are_not_stored_so_a_retry_runs_again(llm_team, mock):
    job_id = new_job(llm_team)
    path = f"/api/jobs/{job_id}/llm-call"
    mock.control(fail_next=3)  # the first call and both of its retries

    failed = apost(llm_team.key, path, {"messages": HELLO}, idem("flaky"))
    assert failed.status_code == 502
    assert not IdempotencyRecord.objects.exists()
    retried = apost(llm_team.key, path, {"messages": HELLO}, idem("flaky"))
    replayed = apost(llm_team.key, path, {"messages": HELLO}, idem("flaky"))

    assert retried.status_code == 200 and "Idempotent-Replayed" not in retried.headers
    assert replayed.headers["Idempotent-Replayed"] == "true" and replayed.json() == retried.json()
    assert mock.stats()["requests"] == 4
    assert sorted(LLMCall.objects.filter(job_id=job_id).values_list("status", flat=True)) == [
        CallStatus.ERROR,
        CallStatus.SUCCESS,
    ]


@pytest.mark.django_db(transaction=True)
def test_rate_limited_responses_are_not_stored(chat_alias, mock):
    tenant = make_tenant("acme-corp", "acme", access_groups=["standard"], default_model="chat-fast", rpm_limit=1)
    job_id = new_job(tenant)
    path = f"/api/jobs/{job_id}/llm-call"
    assert apost(tenant.key, path, {"messages": HELLO}).status_code == 200

    limited = apost(tenant.key, path, {"messages": HELLO}, idem("throttled"))
    assert limited.status_code == 429
    assert not IdempotencyRecord.objects.exists()
    tenant.team.__class__.objects.filter(pk=tenant.team.pk).update(rpm_limit=10)
    retried = apost(tenant.key, path, {"messages": HELLO}, idem("throttled"))

    assert retried.status_code == 200
    assert "Idempotent-Replayed" not in retried.headers
    assert LLMCall.objects.filter(job_id=job_id).count() == 2


@pytest.mark.django_db(transaction=True)
def test_a_retry_while_the_first_runs_is_409(llm_team, mock):
    job_id = new_job(llm_team)
    path = f"/api/jobs/{job_id}/llm-call"
    slow = {"messages": [{"role": "user", "content": "hello [[mock:latency=3000]]"}]}
    results = {}
    thread = threading.Thread(target=lambda: results.update(first=apost(llm_team.key, path, slow, idem("slow"))))
    thread.start()
    # Wait until the first request is at the provider: its key is claimed and its database writes
    # are done (so nothing here races it on SQLite), and it answers 3 s later.
    deadline = time.monotonic() + 30
    while mock.stats()["requests"] < 1:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert IdempotencyRecord.objects.get(key="slow").status == IdempotencyStatus.IN_PROGRESS

    during = apost(llm_team.key, path, slow, idem("slow"))
    thread.join(timeout=20)
    after = apost(llm_team.key, path, slow, idem("slow"))

    assert during.status_code == 409, (during.content, results)
    assert during.json() == IN_PROGRESS
    assert results["first"].status_code == 200
    assert after.headers["Idempotent-Replayed"] == "true" and after.json() == results["first"].json()
    assert mock.stats()["requests"] == 1
    assert LLMCall.objects.count() == 1


@pytest.mark.django_db(transaction=True)
def test_streaming_endpoint_refuses_the_header(llm_team, mock, sse_post):
    job_id = new_job(llm_team)

    response, _ = sse_post(llm_team.key, f"/api/jobs/{job_id}/llm-call-stream", {"messages": HELLO}, idem("s-1"))

    assert response.status_code == 400
    assert response.json() == {
        "detail": "Idempotency-Key is not supported on the streaming endpoint",
        "code": "idempotency_not_supported",
    }
    assert mock.stats()["requests"] == 0
    assert not LLMCall.objects.exists()
    assert not IdempotencyRecord.objects.exists()
    assert Job.objects.get(id=job_id).status == JobStatus.PENDING


# --- across processes: uvicorn --workers 2 on Postgres --------------------------------------------------


def race(base_url: str, key: str, path: str, body: dict, idempotency_key: str, count: int = 10) -> list[httpx.Response]:
    """`count` threads, each with its own connection, POST the same request at the same moment."""
    barrier, responses = threading.Barrier(count), [None] * count

    def send(index: int) -> None:
        with httpx.Client(base_url=base_url, timeout=30, trust_env=False) as client:
            barrier.wait(timeout=10)
            responses[index] = client.post(
                path, json=body, headers={"Authorization": f"Bearer {key}", "Idempotency-Key": idempotency_key}
            )

    threads = [threading.Thread(target=send, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=40)
    assert all(response is not None for response in responses)
    return responses


def check_race(responses: list[httpx.Response], success: int) -> httpx.Response:
    """Exactly one response did the work; the others are its replay or a 409 in progress."""
    originals = [r for r in responses if r.status_code == success and "idempotent-replayed" not in r.headers]
    assert len(originals) == 1, [(r.status_code, r.headers.get("idempotent-replayed")) for r in responses]
    for response in responses:
        if response.status_code == 409:
            assert response.json() == IN_PROGRESS
        else:
            assert response.status_code == success
            assert response.json() == originals[0].json()
    return originals[0]


@pytest.mark.live
@pytest.mark.django_db(transaction=True, reset_sequences=True)
@needs_postgres_and_redis()
def test_concurrent_job_creates_with_one_key_across_processes(acme, live_gateway):
    responses = race(live_gateway.url, acme.key, "/api/jobs/create", {"job_type": "race"}, "race-create")

    original = check_race(responses, 201)
    assert str(Job.objects.get().id) == original.json()["job_id"]
    assert IdempotencyRecord.objects.get().status == IdempotencyStatus.COMPLETED


@pytest.mark.live
@pytest.mark.django_db(transaction=True, reset_sequences=True)
@needs_postgres_and_redis()
def test_concurrent_llm_calls_with_one_key_across_processes(llm_team, mock, live_gateway):
    job_id = new_job(llm_team)
    slow = {"messages": [{"role": "user", "content": "hello [[mock:latency=1000]]"}]}

    responses = race(live_gateway.url, llm_team.key, f"/api/jobs/{job_id}/llm-call", slow, "race-call")

    check_race(responses, 200)
    assert [r.status_code for r in responses].count(409) >= 1  # the others arrived while it ran
    assert mock.stats()["requests"] == 1
    assert LLMCall.objects.filter(job_id=job_id).count() == 1
