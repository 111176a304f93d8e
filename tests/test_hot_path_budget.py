"""The hot routes' budget per LLM call (issue: lean hot path): two database steps — two thread hops,
two transactions — and nothing else, through the ASGI application the server runs (saas_llm/lean.py).

Counted in process, on every thread: a transaction is an outermost `atomic` block that commits or
rolls back, or a statement run outside one (autocommit); a hop is a `sync_to_async` call.
"""

import asyncio
import threading
from dataclasses import dataclass

import httpx
import pytest
from asgiref.sync import SyncToAsync
from django.core.asgi import get_asgi_application
from django.db import connection
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.utils import CursorWrapper

from jobs.models import Job, JobStatus, LLMCall
from saas_llm.lean import LeanDispatch
from tests.conftest import make_tenant

pytestmark = [
    pytest.mark.django_db(transaction=True),
    # Counted as Postgres counts them; SQLite opens its IMMEDIATE transactions with a statement.
    pytest.mark.skipif(connection.vendor != "postgresql", reason="counts Postgres transactions"),
]


@dataclass
class Counts:
    transactions: int = 0
    statements: int = 0
    hops: int = 0


@pytest.fixture
def counts(monkeypatch) -> Counts:
    counted = Counts()
    lock = threading.Lock()

    def bump(**deltas: int) -> None:
        with lock:
            for name, delta in deltas.items():
                setattr(counted, name, getattr(counted, name) + delta)

    execute, commit, rollback = CursorWrapper.execute, BaseDatabaseWrapper.commit, BaseDatabaseWrapper.rollback

    def counting_execute(self, sql, params=None):
        bump(statements=1, transactions=0 if self.db.in_atomic_block else 1)
        return execute(self, sql, params)

    def counting_commit(self):
        bump(transactions=1)
        return commit(self)

    def counting_rollback(self):
        bump(transactions=1)
        return rollback(self)

    hop = SyncToAsync.__call__

    async def counting_hop(self, *args, **kwargs):
        bump(hops=1)
        return await hop(self, *args, **kwargs)

    monkeypatch.setattr(CursorWrapper, "execute", counting_execute)
    monkeypatch.setattr(BaseDatabaseWrapper, "commit", counting_commit)
    monkeypatch.setattr(BaseDatabaseWrapper, "rollback", counting_rollback)
    monkeypatch.setattr(SyncToAsync, "__call__", counting_hop)
    return counted


@pytest.fixture
def tenant(chat_alias):
    return make_tenant(
        "acme-corp",
        "acme",
        credits=1000,
        access_groups=["standard"],
        default_model="chat-fast",
        rpm_limit=1000,
        tpm_limit=1_000_000,
        max_parallel_requests=100,
    )


def post_all(tenant, requests: list[tuple[str, dict]]) -> list[httpx.Response]:
    """The requests, in order, through the ASGI application uvicorn serves (not Django's test client)."""
    application = LeanDispatch(get_asgi_application())

    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=application)
        headers = {"Authorization": f"Bearer {tenant.key}"}
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost", headers=headers) as client:
            return [await client.post(path, json=body) for path, body in requests]

    return asyncio.run(run())


CHAT = {"model": "chat-fast", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}


def test_a_v1_call_is_two_hops_and_two_transactions(tenant, counts):
    [warm_up] = post_all(tenant, [("/v1/chat/completions", CHAT)])  # builds the routing table
    assert warm_up.status_code == 200, warm_up.text
    before = Counts(**vars(counts))

    [response] = post_all(tenant, [("/v1/chat/completions", CHAT)])

    assert response.status_code == 200, response.text
    assert counts.transactions - before.transactions == 2
    assert counts.hops - before.hops == 2
    job = Job.objects.get(id=response.headers["X-Job-Id"])
    assert job.status == JobStatus.COMPLETED and job.credits_charged_units > 0


def test_an_llm_call_is_two_hops_and_two_transactions(tenant, counts):
    job = tenant.api.post("/api/jobs/create", {"job_type": "budget"}).json()["job_id"]
    path = f"/api/jobs/{job}/llm-call"
    [warm_up] = post_all(tenant, [(path, {"messages": CHAT["messages"]})])
    assert warm_up.status_code == 200, warm_up.text
    before = Counts(**vars(counts))

    [response] = post_all(tenant, [(path, {"messages": CHAT["messages"]})])

    assert response.status_code == 200, response.text
    assert counts.transactions - before.transactions == 2
    assert counts.hops - before.hops == 2
    assert LLMCall.objects.filter(job_id=job).count() == 2


def test_a_refused_call_is_one_transaction_and_leaves_nothing(tenant, counts):
    post_all(tenant, [("/v1/chat/completions", CHAT)])
    jobs_before = Job.objects.count()
    before = Counts(**vars(counts))

    [response] = post_all(tenant, [("/v1/chat/completions", {**CHAT, "model": "no-such-model"})])

    assert response.status_code == 404, response.text
    assert counts.transactions - before.transactions == 1
    assert counts.hops - before.hops == 1
    assert Job.objects.count() == jobs_before
