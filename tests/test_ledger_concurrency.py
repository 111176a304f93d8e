"""The reserve → settle race on Postgres with real threads (SPEC §6).

Each thread has its own database connection (closed at the end); a barrier releases them together.
Afterwards no credit is double spent and `verify_ledger` proves balance == Σ ledger.
"""

import threading
import uuid
from collections import Counter
from collections.abc import Callable
from decimal import Decimal
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection

from billing import services
from billing.errors import InsufficientCredits
from billing.models import CreditAccount, EntryKind, LedgerEntry, Reservation, ReservationStatus
from tests.conftest import make_tenant

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="row-lock races need Postgres (CI runs it)"),
]

ONE = 10_000


def run_concurrently(count: int, work: Callable[[int], object]) -> list[object]:
    """Run work(i) in `count` threads started together; returns each result or the exception raised."""
    barrier = threading.Barrier(count)
    results: list[object] = [None] * count

    def target(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[index] = work(index)
        except Exception as exc:  # recorded and asserted on by the caller
            results[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=target, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    return results


def verify_ledger() -> str:
    out = StringIO()
    call_command("verify_ledger", stdout=out, stderr=StringIO())
    return out.getvalue()


def test_50_concurrent_reservations_against_7_credits():
    team = make_tenant("racers", "race-org", credits=7).team
    job_ids = [uuid.uuid4() for _ in range(50)]

    results = run_concurrently(50, lambda i: services.reserve_for_job(team=team, job_id=job_ids[i]))

    outcomes = Counter(type(result).__name__ for result in results)
    assert outcomes == {"Reservation": 7, "InsufficientCredits": 43}
    assert all(isinstance(r, (Reservation, InsufficientCredits)) for r in results)
    account = CreditAccount.objects.get(team=team)
    assert (account.balance_units, account.reserved_units, account.remaining_units) == (7 * ONE, 7 * ONE, 0)
    held = Reservation.objects.filter(team=team, status=ReservationStatus.OPEN)
    assert held.count() == 7
    assert {r.job_id for r in held} == {r.job_id for r in results if isinstance(r, Reservation)}
    assert "ledger OK" in verify_ledger()


def test_concurrent_settles_of_one_job_charge_once():
    team = make_tenant("settlers", "settle-org", credits=10).team
    job_id = uuid.uuid4()
    services.reserve_for_job(team=team, job_id=job_id)

    results = run_concurrently(
        20, lambda i: services.settle_job(team=team, job_id=job_id, charge_units=25_000, actor=f"worker-{i}")
    )

    assert all(isinstance(r, LedgerEntry) for r in results), results
    charges = LedgerEntry.objects.filter(team=team, kind=EntryKind.CHARGE)
    assert charges.count() == 1
    assert {r.pk for r in results} == {charges.get().pk}
    account = CreditAccount.objects.get(team=team)
    assert (account.balance_units, account.used_units, account.reserved_units) == (75_000, 25_000, 0)
    assert Reservation.objects.get(job_id=job_id).status == ReservationStatus.SETTLED
    assert "ledger OK" in verify_ledger()


def test_concurrent_settle_and_release_of_one_job_never_do_both():
    team = make_tenant("closers", "close-org", credits=10).team
    job_id = uuid.uuid4()
    services.reserve_for_job(team=team, job_id=job_id)

    def work(i: int):
        if i % 2:
            return services.release_job(team=team, job_id=job_id)
        return services.settle_job(team=team, job_id=job_id, charge_units=ONE)

    results = run_concurrently(20, work)

    assert not any(isinstance(r, Exception) for r in results), results
    status = Reservation.objects.get(job_id=job_id).status
    charges = LedgerEntry.objects.filter(team=team, kind=EntryKind.CHARGE).count()
    released = sum(r is True for r in results)
    if status == ReservationStatus.SETTLED:
        assert (charges, released) == (1, 0)
    else:
        assert (status, charges, released) == (ReservationStatus.RELEASED, 0, 1)
    assert CreditAccount.objects.get(team=team).reserved_units == 0
    assert "ledger OK" in verify_ledger()


def test_concurrent_grants_with_one_reference_write_one_entry():
    team = make_tenant("granted", "grant-org", credits=1).team

    results = run_concurrently(
        10,
        lambda i: services.grant_credits(team=team, amount=Decimal("5"), actor="webhook", reference="stripe:evt_1"),
    )

    assert all(isinstance(r, LedgerEntry) for r in results), results
    assert LedgerEntry.objects.filter(reference="stripe:evt_1").count() == 1
    assert len({r.pk for r in results}) == 1
    assert CreditAccount.objects.get(team=team).balance_units == 6 * ONE
    assert "ledger OK" in verify_ledger()


def test_concurrent_mixed_traffic_keeps_the_books_exact():
    team = make_tenant("busy", "busy-org", credits=20, low_balance_threshold=Decimal("5")).team
    job_ids = [uuid.uuid4() for _ in range(30)]

    def work(i: int):
        reservation = services.reserve_for_job(team=team, job_id=job_ids[i])
        if i % 3 == 0:
            return services.release_job(team=team, job_id=reservation.job_id)
        return services.settle_job(team=team, job_id=reservation.job_id, charge_units=ONE)

    results = run_concurrently(30, work)

    unexpected = [r for r in results if isinstance(r, Exception) and not isinstance(r, InsufficientCredits)]
    assert unexpected == []
    charged = LedgerEntry.objects.filter(team=team, kind=EntryKind.CHARGE).count()
    assert charged == sum(isinstance(r, LedgerEntry) for r in results)
    account = CreditAccount.objects.get(team=team)
    assert account.balance_units == 20 * ONE - charged * ONE
    assert account.reserved_units == 0
    assert account.balance_units >= 0  # never overspent
    # The alert fired at most once whatever the interleaving.
    assert team.events.filter(type="credits.low_balance").count() <= 1
    assert "ledger OK" in verify_ledger()
