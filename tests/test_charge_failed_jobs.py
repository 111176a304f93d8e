"""`charge_failed_jobs` (SPEC §6, issue 11 item 8): failing every job must not make usage free.

Off (the default) a failed or cancelled job only releases its hold and its cost shows as uncharged in
the team's GET and usage analytics; on, it is charged exactly what the same job `completed` is charged.
Expected charges are recomputed from the LLMCall rows, as in test_job_charging.py.
"""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import call_command
from django.db.models import Sum
from django.utils import timezone

from billing import money
from billing.models import CreditAccount, LedgerEntry, Reservation
from billing.selectors import ledger_discrepancies
from jobs import tasks
from jobs.models import Job
from tenants import services as tenant_services
from tests.conftest import make_alias, make_tenant
from tests.test_job_charging import BUDGETS, ONE, expected_charge, new_job, record

pytestmark = pytest.mark.django_db(transaction=True)

FINAL = ["failed", "cancelled"]


def team_with(budget: str, **config):
    return make_tenant(
        "acme-corp", "acme", access_groups=["standard"], default_model="chat-fast", **BUDGETS[budget], **config
    )


def complete(tenant, job_id: str, status: str) -> dict:
    response = tenant.api.post(f"/api/jobs/{job_id}/complete", {"status": status})
    assert response.status_code == 200, response.json()
    return response.json()


def run_job(tenant, status: str) -> tuple[str, dict]:
    """The same job every time: a real provider call, a cancelled stream (billable), a provider error
    (never billable), then finished with `status`."""
    job_id = new_job(tenant)
    response = tenant.api.post(
        f"/api/jobs/{job_id}/llm-call", {"messages": [{"role": "user", "content": "first [[mock:chunks=7]]"}]}
    )
    assert response.status_code == 200, response.json()
    record(tenant, job_id, "cancelled", prompt=9, completion=4, cost_nanos=21_000, provider_cost_nanos=17_500)
    record(tenant, job_id, "error", prompt=500, completion=500, cost_nanos=9_000_000, provider_cost_nanos=7_500_000)
    return job_id, complete(tenant, job_id, status)


def usd(nanos: int) -> float:
    return float(money.nanos_to_usd(nanos))


def assert_books_balance(team) -> CreditAccount:
    assert ledger_discrepancies() == []
    call_command("verify_ledger", stdout=StringIO())  # raises CommandError naming the team otherwise
    account = CreditAccount.objects.get(team=team)
    assert account.balance_units == LedgerEntry.objects.filter(team=team).aggregate(s=Sum("amount_units"))["s"]
    return account


def assert_uncharged_shown(tenant, admin, *, cost: int, provider_cost: int) -> None:
    """The team's GET and usage analytics show the uncharged cost; provider cost to admin keys only."""
    own = tenant.api.get("/api/teams/acme-corp").json()
    assert own["uncharged_cost_usd"] == usd(cost)
    assert "uncharged_provider_cost_usd" not in own
    staff = admin.get("/api/teams/acme-corp").json()
    assert (staff["uncharged_cost_usd"], staff["uncharged_provider_cost_usd"]) == (usd(cost), usd(provider_cost))

    own_usage = tenant.api.get("/api/teams/acme-corp/usage", {"group_by": "job_type"}).json()
    assert own_usage["summary"]["uncharged_cost_usd"] == usd(cost)
    assert [row["uncharged_cost_usd"] for row in own_usage["results"]] == [usd(cost)]  # one job type: "billing"
    assert all("uncharged_provider_cost_usd" not in part for part in [own_usage["summary"], *own_usage["results"]])
    staff_usage = admin.get("/api/teams/acme-corp/usage", {"group_by": "job_type"}).json()
    assert staff_usage["summary"]["uncharged_provider_cost_usd"] == usd(provider_cost)
    assert [row["uncharged_provider_cost_usd"] for row in staff_usage["results"]] == [usd(provider_cost)]


# --- off (the default): free, but visible --------------------------------------------------------


@pytest.mark.parametrize("status", FINAL)
@pytest.mark.parametrize("budget", sorted(BUDGETS))
def test_by_default_a_failed_job_is_not_charged_and_shows_as_uncharged(mock, chat_alias, admin, budget, status):
    team = team_with(budget)
    assert team.team.charge_failed_jobs is False

    job_id, body = run_job(team, status)

    assert (body["status"], body["credits_charged"], body["credits_remaining"]) == (status, 0, 100)
    assert expected_charge(team.team, job_id) > 0  # completed, it would have cost something
    assert not LedgerEntry.objects.filter(job_id=job_id).exists()
    assert Reservation.objects.get(job_id=job_id).status == "released"
    job = Job.objects.get(id=job_id)
    assert job.credits_charged_units == 0
    account = assert_books_balance(team.team)
    assert (account.balance_units, account.reserved_units, account.used_units) == (100 * ONE, 0, 0)
    assert job.cost_nanos != job.provider_cost_nanos  # so the two fields below cannot be swapped unnoticed
    assert_uncharged_shown(team, admin, cost=job.cost_nanos, provider_cost=job.provider_cost_nanos)


# --- on: charged like a completed job ------------------------------------------------------------


@pytest.mark.parametrize("status", FINAL)
@pytest.mark.parametrize("budget", sorted(BUDGETS))
def test_with_the_flag_a_failed_job_is_charged_like_a_completed_one(mock, chat_alias, admin, budget, status):
    team = team_with(budget, charge_failed_jobs=True)
    completed_id, completed = run_job(team, "completed")

    job_id, body = run_job(team, status)

    charge = expected_charge(team.team, job_id)
    assert charge > 0
    assert charge == expected_charge(team.team, completed_id) == Job.objects.get(id=completed_id).credits_charged_units
    assert charge == {"job": 25_000}.get(budget, charge)
    assert body["status"] == status
    assert body["credits_charged"] == completed["credits_charged"] == float(money.units_to_credits(charge))
    assert body["credits_remaining"] == float(money.units_to_credits(100 * ONE - 2 * charge))
    [entry] = LedgerEntry.objects.filter(job_id=job_id)
    assert (entry.kind, entry.amount_units, entry.reference) == ("charge", -charge, f"charge:{job_id}")
    assert entry.balance_after_units == 100 * ONE - 2 * charge
    assert Reservation.objects.get(job_id=job_id).status == "settled"
    job = Job.objects.get(id=job_id)
    assert (job.status, job.credits_charged_units) == (status, charge)
    account = assert_books_balance(team.team)
    assert (account.balance_units, account.reserved_units, account.used_units) == (
        100 * ONE - 2 * charge,
        0,
        2 * charge,
    )
    assert_uncharged_shown(team, admin, cost=0, provider_cost=0)  # charged: not given away


@pytest.mark.parametrize("status", FINAL)
@pytest.mark.parametrize("budget", sorted(BUDGETS))
def test_with_the_flag_a_failed_job_with_only_error_calls_is_still_not_charged(mock, chat_alias, admin, budget, status):
    # "Charged like a completed one" includes: a job with no billable call is not charged.
    team = team_with(budget, charge_failed_jobs=True)
    job_id = new_job(team)
    record(team, job_id, "error", prompt=50, completion=0, cost_nanos=9_000, provider_cost_nanos=7_500)

    body = complete(team, job_id, status)

    assert (body["credits_charged"], body["credits_remaining"]) == (0, 100)
    assert not LedgerEntry.objects.filter(job_id=job_id).exists()
    assert Reservation.objects.get(job_id=job_id).status == "settled"  # the charge path, with nothing billable
    assert Job.objects.get(id=job_id).credits_charged_units == 0
    account = assert_books_balance(team.team)
    assert (account.balance_units, account.reserved_units) == (100 * ONE, 0)
    assert_uncharged_shown(team, admin, cost=9_000, provider_cost=7_500)


@pytest.mark.parametrize("budget", sorted(BUDGETS))
def test_with_the_flag_a_single_call_job_failed_by_the_provider_is_not_charged(mock, chat_alias, settings, budget):
    """/v1/chat/completions: the provider's failure is the job's only call, an error: nothing billable."""
    settings.SAAS_LLM_NUM_RETRIES = 0
    make_alias("chat-500", mock.url, deployments=[{"litellm_model": "openai/mock-fail-500"}])
    team = team_with(budget, charge_failed_jobs=True)

    response = team.api.post(
        "/v1/chat/completions", {"model": "chat-500", "messages": [{"role": "user", "content": "x"}]}
    )

    assert response.status_code == 502, response.content
    job = Job.objects.get(team=team.team)
    assert (job.status, job.total_calls, job.failed_calls, job.credits_charged_units) == ("failed", 1, 1, 0)
    assert not LedgerEntry.objects.filter(job_id=job.id).exists()
    assert Reservation.objects.get(job_id=job.id).status == "settled"
    account = assert_books_balance(team.team)
    assert (account.balance_units, account.reserved_units) == (100 * ONE, 0)


@pytest.mark.parametrize("charge_failed_jobs", [True, False])
def test_the_expiry_task_charges_an_expired_job_only_with_the_flag(
    mock, chat_alias, admin, settings, charge_failed_jobs
):
    team = team_with("tokens", charge_failed_jobs=charge_failed_jobs)
    job_id = new_job(team)
    response = team.api.post(f"/api/jobs/{job_id}/llm-call", {"messages": [{"role": "user", "content": "Hello"}]})
    assert response.status_code == 200, response.json()
    long_ago = timezone.now() - timedelta(seconds=settings.SAAS_LLM_JOB_TIMEOUT_S + 60)
    Job.objects.filter(id=job_id).update(created_at=long_ago)

    assert tasks.expire_stale_jobs() == 1

    job = Job.objects.get(id=job_id)
    assert (job.status, job.error_message) == ("failed", "expired")
    charge = expected_charge(team.team, job_id)
    assert charge > 0
    account = assert_books_balance(team.team)
    assert account.reserved_units == 0
    if charge_failed_jobs:
        assert job.credits_charged_units == charge
        [entry] = LedgerEntry.objects.filter(job_id=job_id)
        assert (entry.kind, entry.amount_units, entry.reason) == ("charge", -charge, "job failed")
        assert Reservation.objects.get(job_id=job_id).status == "settled"
        assert account.used_units == charge
        assert_uncharged_shown(team, admin, cost=0, provider_cost=0)
    else:
        assert job.credits_charged_units == 0
        assert not LedgerEntry.objects.filter(job_id=job_id).exists()
        assert Reservation.objects.get(job_id=job_id).status == "released"
        assert account.used_units == 0
        assert_uncharged_shown(team, admin, cost=job.cost_nanos, provider_cost=job.provider_cost_nanos)


# --- a call that lands after its job finished ----------------------------------------------------


@pytest.mark.parametrize(("budget", "first_call"), [("tokens", "success"), ("job", "error")])
def test_late_call_on_a_charged_failed_job_is_charged_on_its_own(mock, chat_alias, admin, budget, first_call):
    """Like a completed job: a billable call that finishes after the job was charged adds what it owes
    (in job mode only when the job had no billable call, so was charged nothing yet)."""
    team = team_with(budget, charge_failed_jobs=True)
    job_id = new_job(team)
    record(team, job_id, first_call, prompt=30, completion=10, cost_nanos=5_000, provider_cost_nanos=4_000)
    complete(team, job_id, "failed")
    first = Job.objects.get(id=job_id).credits_charged_units
    assert first == (expected_charge(team.team, job_id) if first_call == "success" else 0)

    late = record(team, job_id, "cancelled", prompt=40, completion=30, cost_nanos=6_000, provider_cost_nanos=5_000)

    total = expected_charge(team.team, job_id)
    assert total > first
    entries = list(LedgerEntry.objects.filter(job_id=job_id).order_by("id").values_list("amount_units", "reference"))
    expected = [(-first, f"charge:{job_id}")] if first else []
    assert entries == [*expected, (first - total, f"charge:{job_id}:{late.id}")]
    assert Job.objects.get(id=job_id).credits_charged_units == total
    assert assert_books_balance(team.team).used_units == total
    assert_uncharged_shown(team, admin, cost=0, provider_cost=0)


def test_late_call_on_a_free_failed_job_stays_free_even_if_the_flag_is_turned_on_later(mock, chat_alias, admin):
    team = team_with("tokens")
    job_id = new_job(team)
    record(team, job_id, "success", prompt=30, completion=10, cost_nanos=5_000, provider_cost_nanos=4_000)
    complete(team, job_id, "cancelled")
    tenant_services.update_team(team=team.team, charge_failed_jobs=True)

    record(team, job_id, "cancelled", prompt=40, completion=30, cost_nanos=6_000, provider_cost_nanos=5_000)

    assert not LedgerEntry.objects.filter(job_id=job_id).exists()
    assert Job.objects.get(id=job_id).credits_charged_units == 0
    assert assert_books_balance(team.team).used_units == 0
    assert_uncharged_shown(team, admin, cost=11_000, provider_cost=9_000)  # the late call's cost included
