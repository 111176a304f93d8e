"""Charging jobs (SPEC §6, §5.1 complete): reserve → settle in each budget mode, charged exactly once.

The expected charge is always recomputed from the LLMCall rows with billing.money.job_charge_units,
so a wrong roll-up, a wrong rounding or a non-billable call sneaking into the bill fails the test.
"""

import threading
from decimal import Decimal

import pytest
from django.conf import settings
from django.db.models import Sum

from billing import money
from billing import services as billing_services
from billing.models import CreditAccount, LedgerEntry, Reservation
from jobs import services
from jobs.models import BILLABLE_CALL_STATUSES, Job, LLMCall
from jobs.services import CallRecord
from tenants.models import Event
from tests.conftest import make_alias, make_tenant

pytestmark = pytest.mark.django_db(transaction=True)

ONE = 10_000
BUDGETS = {
    "job": {"budget_mode": "job", "credits_per_job": Decimal("2.5")},
    "usd": {"budget_mode": "usd", "credits_per_dollar": Decimal(1000), "markup_percent": Decimal(20)},
    "tokens": {"budget_mode": "tokens", "tokens_per_credit": 7},
}


def team_with(budget: str, credits: int = 100):
    return make_tenant(
        "acme-corp", "acme", credits=credits, access_groups=["standard"], default_model="chat-fast", **BUDGETS[budget]
    )


def new_job(tenant) -> str:
    response = tenant.api.post("/api/jobs/create", {"job_type": "billing"})
    assert response.status_code == 201, response.json()
    return response.json()["job_id"]


def llm_call(tenant, job_id: str, text: str = "Hello", **body) -> dict:
    response = tenant.api.post(
        f"/api/jobs/{job_id}/llm-call", {"messages": [{"role": "user", "content": text}], **body}
    )
    assert response.status_code == 200, response.json()
    return response.json()


def expected_charge(team, job_id: str) -> int:
    """What the job should cost, from its billable call rows (success and cancelled)."""
    team.refresh_from_db()
    billable = LLMCall.objects.filter(job_id=job_id, status__in=BILLABLE_CALL_STATUSES).aggregate(
        tokens=Sum("total_tokens"), cost=Sum("cost_nanos")
    )
    return money.job_charge_units(
        budget_mode=team.budget_mode,
        credits_per_job=team.credits_per_job,
        credits_per_dollar=team.credits_per_dollar,
        tokens_per_credit=team.tokens_per_credit,
        cost_nanos=billable["cost"] or 0,
        total_tokens=billable["tokens"] or 0,
    )


def assert_books_balance(team) -> CreditAccount:
    """The cached balance equals the ledger sum and the hold equals the open reservations."""
    account = CreditAccount.objects.get(team=team)
    ledger = LedgerEntry.objects.filter(team=team).aggregate(total=Sum("amount_units"))["total"]
    held = Reservation.objects.filter(team=team, status="open").aggregate(total=Sum("amount_units"))["total"] or 0
    assert account.balance_units == ledger
    assert account.reserved_units == held
    return account


def record(
    tenant,
    job_id: str,
    status: str,
    prompt: int,
    completion: int,
    cost_nanos: int,
    provider_cost_nanos: int | None = None,
):
    """A call row written by the same service the gateway uses (for statuses the mock cannot force);
    the provider cost is the client cost unless given (a markup)."""
    return services.record_call(
        team=tenant.team,
        job_id=job_id,
        record=CallRecord(
            model_alias="chat-fast", status=status, stream=True, prompt_tokens=prompt, completion_tokens=completion,
            provider_cost_nanos=cost_nanos if provider_cost_nanos is None else provider_cost_nanos,
            cost_nanos=cost_nanos,
        ),
    )  # fmt: skip


@pytest.mark.parametrize("budget", sorted(BUDGETS))
def test_completed_job_is_charged_from_its_billable_calls(mock, chat_alias, budget):
    team = team_with(budget)
    job_id = new_job(team)
    llm_call(team, job_id, "first [[mock:chunks=7]]")
    llm_call(team, job_id, "a somewhat longer second prompt", max_tokens=13)
    record(team, job_id, "cancelled", prompt=9, completion=4, cost_nanos=21_000)  # a disconnected stream: billable
    record(team, job_id, "error", prompt=500, completion=500, cost_nanos=9_000_000)  # never billable

    response = team.api.post(f"/api/jobs/{job_id}/complete", {"status": "completed"})

    assert response.status_code == 200, response.json()
    charge = expected_charge(team.team, job_id)
    everything = money.job_charge_units(
        budget_mode=team.team.budget_mode, credits_per_job=team.team.credits_per_job,
        credits_per_dollar=team.team.credits_per_dollar, tokens_per_credit=team.team.tokens_per_credit,
        cost_nanos=Job.objects.get(id=job_id).cost_nanos, total_tokens=Job.objects.get(id=job_id).total_tokens,
    )  # fmt: skip
    if budget != "job":
        assert charge != everything  # the error call really would have changed the bill
    assert charge == {"job": 25_000}.get(budget, charge)
    [entry] = LedgerEntry.objects.filter(job_id=job_id)
    assert (entry.kind, entry.amount_units, entry.balance_after_units) == ("charge", -charge, 100 * ONE - charge)
    job = Job.objects.get(id=job_id)
    assert (job.status, job.credits_charged_units, job.billable_calls, job.total_calls) == ("completed", charge, 3, 4)
    body = response.json()
    assert body["credits_charged"] == float(money.units_to_credits(charge))
    assert body["credits_remaining"] == float(money.units_to_credits(100 * ONE - charge))
    assert body["costs"]["total_calls"] == 4
    assert sorted(call["status"] for call in body["calls"]) == ["cancelled", "error", "success", "success"]
    assert Reservation.objects.get(job_id=job_id).status == "settled"
    account = assert_books_balance(team.team)
    assert (account.balance_units, account.reserved_units, account.used_units) == (100 * ONE - charge, 0, charge)
    costs = team.api.get(f"/api/jobs/{job_id}/costs").json()
    assert costs["credits_charged"] == body["credits_charged"]


def test_usd_mode_rounds_a_fraction_of_a_unit_up(mock, chat_alias):
    # 44 000 nanos × 1.2 markup = 52 800 nanos; × 1000 credits/USD = 0.0528 credits = 528 units exactly,
    # and with 3 credits/USD: 0.0001584 credits = 1.584 units → 2 (never under-charge).
    team = make_tenant("acme-corp", "acme", access_groups=["standard"], default_model="chat-fast",
                       budget_mode="usd", credits_per_dollar=Decimal(3), markup_percent=Decimal(20))  # fmt: skip
    job_id = new_job(team)
    assert llm_call(team, job_id)["cost_usd"] == 0.0000528

    team.api.post(f"/api/jobs/{job_id}/complete", {"status": "completed"})

    assert LedgerEntry.objects.get(job_id=job_id).amount_units == -2


def test_usage_mode_hold_grows_with_accrued_usage(mock, chat_alias):
    team = make_tenant("acme-corp", "acme", access_groups=["standard"], default_model="chat-fast",
                       budget_mode="tokens", tokens_per_credit=10, min_reservation=Decimal(1))  # fmt: skip
    job_id = new_job(team)
    assert Reservation.objects.get(job_id=job_id).amount_units == ONE  # min_reservation

    llm_call(team, job_id)  # 24 tokens = 2.4 credits > the 1-credit minimum

    assert Reservation.objects.get(job_id=job_id).amount_units == 24_000
    assert team.api.get("/api/credits/balance").json()["credits_remaining"] == 97.6
    assert_books_balance(team.team)

    team.api.post(f"/api/jobs/{job_id}/complete", {"status": "completed"})

    assert LedgerEntry.objects.get(job_id=job_id).amount_units == -24_000
    account = assert_books_balance(team.team)
    assert (account.remaining_units, account.reserved_units) == (976_000, 0)


@pytest.mark.parametrize("budget", ["job", "tokens"])
def test_completed_job_without_a_billable_call_is_not_charged(mock, chat_alias, budget):
    team = team_with(budget)
    job_id = new_job(team)
    record(team, job_id, "error", prompt=10, completion=0, cost_nanos=1_000)

    response = team.api.post(f"/api/jobs/{job_id}/complete", {"status": "completed"})

    assert response.status_code == 200
    assert (response.json()["credits_charged"], response.json()["credits_remaining"]) == (0, 100)
    assert not LedgerEntry.objects.filter(job_id=job_id).exists()
    assert Reservation.objects.get(job_id=job_id).status == "settled"
    assert assert_books_balance(team.team).reserved_units == 0


@pytest.mark.parametrize("budget", sorted(BUDGETS))
def test_failed_or_cancelled_job_charges_nothing(mock, chat_alias, budget):
    team = team_with(budget)
    for status in ["failed", "cancelled"]:
        job_id = new_job(team)
        llm_call(team, job_id)

        response = team.api.post(f"/api/jobs/{job_id}/complete", {"status": status})

        assert response.status_code == 200
        assert (response.json()["credits_charged"], response.json()["credits_remaining"]) == (0, 100), status
        assert not LedgerEntry.objects.filter(job_id=job_id).exists()
        assert Reservation.objects.get(job_id=job_id).status == "released"
        assert Job.objects.get(id=job_id).credits_charged_units == 0
        assert assert_books_balance(team.team).reserved_units == 0


@pytest.mark.parametrize("budget", sorted(BUDGETS))
def test_completing_twice_charges_once_and_another_status_is_409(mock, chat_alias, budget):
    team = team_with(budget)
    job_id = new_job(team)
    llm_call(team, job_id)
    first = team.api.post(f"/api/jobs/{job_id}/complete", {"status": "completed"})

    again = team.api.post(f"/api/jobs/{job_id}/complete", {"status": "completed"})
    other = team.api.post(f"/api/jobs/{job_id}/complete", {"status": "failed", "error_message": "late"})

    assert (first.status_code, again.status_code) == (200, 200)
    assert again.json() == first.json()  # same result, replayed from the terminal job
    assert other.status_code == 409
    assert other.json() == {"detail": "Job is already completed", "code": "job_already_finished"}
    assert LedgerEntry.objects.filter(job_id=job_id).count() == 1
    job = Job.objects.get(id=job_id)
    assert (job.status, job.error_message) == ("completed", None)
    account = assert_books_balance(team.team)
    assert account.used_units == expected_charge(team.team, job_id)


@pytest.mark.skipif(
    settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"),
    reason="the in-memory shared-cache SQLite test DB cannot serve concurrent writers (no busy timeout)",
)
def test_concurrent_completions_charge_exactly_once(mock, chat_alias):
    from django.db import connection
    from django.test import Client

    from tests.conftest import Api

    team = team_with("tokens")
    job_id = new_job(team)
    llm_call(team, job_id)
    statuses: list[int] = []

    def complete(status: str) -> None:
        try:
            statuses.append(
                Api(Client(), team.key).post(f"/api/jobs/{job_id}/complete", {"status": status}).status_code
            )
        finally:
            connection.close()

    threads = [threading.Thread(target=complete, args=("completed" if i % 2 else "cancelled",)) for i in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    job = Job.objects.get(id=job_id)
    winners = sum(1 for status in statuses if status == 200)
    assert sorted(set(statuses)) == [200, 409] and winners == 5  # every call with the winning status replays it
    charges = LedgerEntry.objects.filter(job_id=job_id, kind="charge").count()
    assert charges == (1 if job.status == "completed" else 0)
    assert assert_books_balance(team.team).reserved_units == 0


def test_call_finishing_after_completion_is_charged_on_its_own(mock, chat_alias):
    """A stream still running when its job completed: the late (billable) call is charged separately."""
    team = team_with("tokens")
    job_id = new_job(team)
    llm_call(team, job_id)
    team.api.post(f"/api/jobs/{job_id}/complete", {"status": "completed"})
    first_charge = LedgerEntry.objects.get(job_id=job_id).amount_units

    late = record(team, job_id, "cancelled", prompt=40, completion=30, cost_nanos=0)

    entries = list(LedgerEntry.objects.filter(job_id=job_id).order_by("id").values_list("amount_units", "reference"))
    total = expected_charge(team.team, job_id)
    assert entries == [(first_charge, f"charge:{job_id}"), (-(total + first_charge), f"charge:{job_id}:{late.id}")]
    assert Job.objects.get(id=job_id).credits_charged_units == total
    assert assert_books_balance(team.team).used_units == total


def test_error_calls_do_not_bill_but_are_counted(mock, chat_alias, settings):
    settings.SAAS_LLM_NUM_RETRIES = 0  # the failure itself is what matters here, not litellm's backoff
    make_alias("chat-500", mock.url, deployments=[{"litellm_model": "openai/mock-fail-500"}])
    team = team_with("tokens")
    job_id = new_job(team)
    failed = team.api.post(
        f"/api/jobs/{job_id}/llm-call", {"model": "chat-500", "messages": [{"role": "user", "content": "x"}]}
    )
    assert failed.status_code == 502
    llm_call(team, job_id)

    done = team.api.post(f"/api/jobs/{job_id}/complete", {"status": "completed"}).json()

    assert (done["costs"]["total_calls"], done["costs"]["successful_calls"], done["costs"]["failed_calls"]) == (2, 1, 1)
    assert (
        LedgerEntry.objects.get(job_id=job_id).amount_units
        == -expected_charge(team.team, job_id)
        == -ceil_div(24 * ONE, 7)
    )


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def test_a_job_whose_hold_was_released_meanwhile_completes_uncharged_and_says_so(mock, chat_alias):
    """The expiry sweep released the hold of a job still open; completing it later charges nothing
    (never after the fact), and the job and its job.completed event report what the ledger did."""
    team = team_with("job")
    job_id = new_job(team)
    record(team, job_id, "success", prompt=10, completion=5, cost_nanos=30_000)
    Reservation.objects.filter(job_id=job_id).update(expires_at="2000-01-01T00:00:00Z")
    assert billing_services.release_expired_reservations() == 1

    response = team.api.post(f"/api/jobs/{job_id}/complete", {"status": "completed"})

    assert response.status_code == 200, response.json()
    assert response.json()["credits_charged"] == 0
    assert Job.objects.get(id=job_id).credits_charged_units == 0
    assert not LedgerEntry.objects.filter(job_id=job_id).exists()
    [event] = Event.objects.filter(type="job.completed", payload__job_id=job_id)
    assert event.payload["data"]["credits_charged"] == 0
