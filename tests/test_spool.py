"""The call spool (jobs/spool.py): a call the database could not record waits on disk and is recorded
exactly once when it can be. The live outage test (tests/test_outages.py) runs it on real workers."""

import json
import uuid

import pytest
from asgiref.sync import async_to_sync
from django.db import OperationalError

from billing.models import LedgerEntry
from jobs import gateway, services, spool
from jobs.models import Job, LLMCall
from jobs.services import CallRecord
from tests.conftest import make_tenant


@pytest.fixture(autouse=True)
def spool_dir(settings, tmp_path):
    settings.SAAS_LLM_SPOOL_DIR = str(tmp_path / "spool")
    return tmp_path / "spool"


def a_record(**fields) -> CallRecord:
    defaults = {"model_alias": "chat-fast", "status": "success", "prompt_tokens": 3, "completion_tokens": 5}
    return CallRecord(**{**defaults, **fields}, cost_nanos=800, provider_cost_nanos=800)


def test_a_spooled_call_is_recorded_once_and_its_file_removed(db, spool_dir):
    tenant = make_tenant("acme-corp", "acme")
    job = services.create_job(team=tenant.team, job_type="spooled", started=True)
    record = a_record(response_body={"content": "hi"}, price_snapshot={"source": "deployment"})
    path = spool.save(team_id=tenant.team.id, job_id=job.id, complete_job=True, record=record)
    assert path.parent == spool_dir and json.loads(path.read_text())["record"]["call_id"] == str(record.call_id)

    assert spool.replay() == 1
    assert spool.replay() == 0

    assert not list(spool_dir.glob("*.json"))
    call = LLMCall.objects.get(id=record.call_id)
    assert (call.prompt_tokens, call.completion_tokens, call.response_body) == (3, 5, {"content": "hi"})
    job.refresh_from_db()
    assert (job.status, job.total_calls, job.credits_charged_units) == ("completed", 1, 10_000)
    assert LedgerEntry.objects.filter(job_id=job.id, kind="charge").count() == 1


def test_a_call_already_recorded_is_not_counted_again(db, spool_dir):
    """A record step whose transaction committed before its connection broke, then spooled."""
    tenant = make_tenant("acme-corp", "acme")
    job = services.create_job(team=tenant.team, job_type="twice")
    record = a_record()
    services.record_call(team=tenant.team, job_id=job.id, record=record)
    spool.save(team_id=tenant.team.id, job_id=job.id, complete_job=False, record=record)

    assert spool.replay() == 1

    job.refresh_from_db()
    assert (job.total_calls, job.prompt_tokens) == (1, 3)
    assert LLMCall.objects.count() == 1 and not list(spool_dir.glob("*.json"))


def test_calls_wait_while_the_database_is_unavailable(db, spool_dir, monkeypatch):
    tenant = make_tenant("acme-corp", "acme")
    job = services.create_job(team=tenant.team, job_type="waiting")
    spool.save(team_id=tenant.team.id, job_id=job.id, complete_job=False, record=a_record())

    def down(**kwargs):
        raise OperationalError("connection refused")

    monkeypatch.setattr(services, "record_call", down)
    assert spool.replay() == 0
    assert len(list(spool_dir.glob("*.json"))) == 1
    monkeypatch.undo()
    assert spool.replay() == 1


def test_a_call_the_books_refuse_for_good_is_kept_aside_never_deleted(db, spool_dir):
    tenant = make_tenant("acme-corp", "acme")
    spool.save(team_id=tenant.team.id, job_id=uuid.uuid4(), complete_job=False, record=a_record())  # no such job

    assert spool.replay() == 0

    assert not list(spool_dir.glob("*.json"))
    assert len(list((spool_dir / "rejected").glob("*.json"))) == 1


@pytest.mark.django_db(transaction=True)
def test_the_record_step_retries_then_spools_instead_of_losing_the_call(spool_dir, settings, monkeypatch):
    settings.SAAS_LLM_RECORD_RETRY_S = 0.3
    tenant = make_tenant("acme-corp", "acme")
    job = services.create_job(team=tenant.team, job_type="outage", started=True)
    admitted = gateway.AdmittedCall(
        team=tenant.team,
        job=job,
        alias="chat-fast",
        purpose="",
        messages=[],
        params={},
        call_id=uuid.uuid4(),
        single_call=True,
    )
    attempts = []

    @async_to_sync
    async def save() -> None:
        await gateway.save_call(admitted, a_record(call_id=admitted.call_id))

    def down(*args, **kwargs):
        attempts.append(1)
        raise OperationalError("connection refused")

    monkeypatch.setattr(services, "record_call", down)
    save()

    assert len(attempts) >= 3  # retried with backoff first
    assert [path.stem for path in spool_dir.glob("*.json")] == [str(admitted.call_id)]
    monkeypatch.undo()
    assert spool.replay() == 1
    assert Job.objects.get(id=job.id).status == "completed"
