"""billing/services.py: reserve → settle/release, grants, adjustments, usage accrual, expiry, low balance.

Every write is checked against the database (ledger rows, the cached CreditAccount, reservations)
and the ledger invariants of `verify_ledger` (balance == Σ ledger, reserved == Σ open holds).
"""

import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from billing import services
from billing.errors import InsufficientCredits
from billing.models import CreditAccount, EntryKind, LedgerEntry, Reservation, ReservationStatus
from billing.money import AmountError
from billing.selectors import ledger_discrepancies
from tenants.models import Event
from tests.conftest import make_tenant

ONE = 10_000  # one credit in units


def account_of(team) -> CreditAccount:
    return CreditAccount.objects.get(team=team)


def entries(team, **filters) -> list[LedgerEntry]:
    return list(LedgerEntry.objects.filter(team=team, **filters).order_by("id"))


def low_balance_events(team) -> list[Event]:
    return list(Event.objects.filter(team=team, type="credits.low_balance").order_by("created_at"))


def assert_books_balance() -> None:
    assert ledger_discrepancies() == []
    for account in CreditAccount.objects.all():
        running = 0
        for entry in LedgerEntry.objects.filter(team_id=account.team_id).order_by("id"):
            running += entry.amount_units
            assert entry.balance_after_units == running
        assert account.balance_units == running


# --- reserve → settle -------------------------------------------------------------------------


def test_reserve_holds_credits_per_job(acme):
    job_id = uuid.uuid4()
    reservation = services.reserve_for_job(team=acme.team, job_id=job_id)

    assert reservation.job_id == job_id
    assert (reservation.initial_units, reservation.amount_units, reservation.status) == (ONE, ONE, "open")
    assert reservation.expires_at > timezone.now() + timedelta(hours=24)
    account = account_of(acme.team)
    assert (account.balance_units, account.reserved_units, account.remaining_units) == (100 * ONE, ONE, 99 * ONE)
    assert entries(acme.team, kind=EntryKind.CHARGE) == []  # a hold is not a ledger entry
    assert_books_balance()


def test_settle_charges_once_and_releases_the_hold(acme):
    job_id = uuid.uuid4()
    services.reserve_for_job(team=acme.team, job_id=job_id)

    entry = services.settle_job(team=acme.team, job_id=job_id, charge_units=15_000, actor="job:test")

    assert entry is not None
    assert (entry.kind, entry.amount_units, entry.balance_after_units) == ("charge", -15_000, 985_000)
    assert (entry.job_id, entry.actor, entry.reference) == (job_id, "job:test", f"charge:{job_id}")
    account = account_of(acme.team)
    assert (account.balance_units, account.used_units, account.reserved_units) == (985_000, 15_000, 0)
    assert account.allocated_units == 100 * ONE
    reservation = Reservation.objects.get(job_id=job_id)
    assert reservation.status == ReservationStatus.SETTLED
    assert reservation.closed_at is not None
    assert_books_balance()


def test_settle_twice_charges_once(acme):
    job_id = uuid.uuid4()
    services.reserve_for_job(team=acme.team, job_id=job_id)
    first = services.settle_job(team=acme.team, job_id=job_id, charge_units=ONE)

    # A retry — even one that computed a different amount — returns the first charge.
    second = services.settle_job(team=acme.team, job_id=job_id, charge_units=5 * ONE)

    assert second.pk == first.pk
    assert [e.amount_units for e in entries(acme.team, kind=EntryKind.CHARGE)] == [-ONE]
    account = account_of(acme.team)
    assert (account.balance_units, account.used_units, account.reserved_units) == (99 * ONE, ONE, 0)
    assert_books_balance()


def test_release_after_settle_has_no_effect(acme):
    job_id = uuid.uuid4()
    services.reserve_for_job(team=acme.team, job_id=job_id)
    services.settle_job(team=acme.team, job_id=job_id, charge_units=ONE)
    before = account_of(acme.team)

    assert services.release_job(team=acme.team, job_id=job_id) is False

    after = account_of(acme.team)
    assert (after.balance_units, after.reserved_units, after.used_units) == (
        before.balance_units,
        before.reserved_units,
        before.used_units,
    )
    assert Reservation.objects.get(job_id=job_id).status == ReservationStatus.SETTLED
    assert len(entries(acme.team, kind=EntryKind.CHARGE)) == 1
    assert_books_balance()


def test_settle_after_release_charges_nothing(acme):
    job_id = uuid.uuid4()
    services.reserve_for_job(team=acme.team, job_id=job_id)
    assert services.release_job(team=acme.team, job_id=job_id) is True

    assert services.settle_job(team=acme.team, job_id=job_id, charge_units=ONE) is None

    assert entries(acme.team, kind=EntryKind.CHARGE) == []
    account = account_of(acme.team)
    assert (account.balance_units, account.reserved_units, account.used_units) == (100 * ONE, 0, 0)
    assert Reservation.objects.get(job_id=job_id).status == ReservationStatus.RELEASED
    assert_books_balance()


def test_release_twice_frees_the_hold_once(acme):
    job_a, job_b = uuid.uuid4(), uuid.uuid4()
    services.reserve_for_job(team=acme.team, job_id=job_a)
    services.reserve_for_job(team=acme.team, job_id=job_b)

    assert services.release_job(team=acme.team, job_id=job_a) is True
    assert services.release_job(team=acme.team, job_id=job_a) is False

    assert account_of(acme.team).reserved_units == ONE  # job_b's hold is still there
    assert services.release_job(team=acme.team, job_id=uuid.uuid4()) is False  # unknown job
    assert_books_balance()


def test_settle_with_zero_charge_writes_no_entry_and_never_charges_later(acme):
    job_id = uuid.uuid4()
    services.reserve_for_job(team=acme.team, job_id=job_id)

    # A completed job without billable calls is not charged (SPEC §6) …
    assert services.settle_job(team=acme.team, job_id=job_id, charge_units=0) is None
    # … and a late retry with an amount does not charge after the fact.
    assert services.settle_job(team=acme.team, job_id=job_id, charge_units=ONE) is None

    assert entries(acme.team, kind=EntryKind.CHARGE) == []
    account = account_of(acme.team)
    assert (account.balance_units, account.reserved_units) == (100 * ONE, 0)
    assert Reservation.objects.get(job_id=job_id).status == ReservationStatus.SETTLED
    assert_books_balance()


def test_settle_rejects_a_negative_charge(acme):
    job_id = uuid.uuid4()
    services.reserve_for_job(team=acme.team, job_id=job_id)
    with pytest.raises(ValueError):
        services.settle_job(team=acme.team, job_id=job_id, charge_units=-1)
    assert account_of(acme.team).reserved_units == ONE
    assert Reservation.objects.get(job_id=job_id).status == ReservationStatus.OPEN


def test_settle_of_one_team_does_not_touch_another(acme, globex):
    job_id = uuid.uuid4()
    services.reserve_for_job(team=acme.team, job_id=job_id)
    services.settle_job(team=acme.team, job_id=job_id, charge_units=3 * ONE)

    globex_account = account_of(globex.team)
    assert (globex_account.balance_units, globex_account.reserved_units, globex_account.used_units) == (
        100 * ONE,
        0,
        0,
    )
    assert entries(globex.team, kind=EntryKind.CHARGE) == []
    assert_books_balance()


# --- reservations against the balance -------------------------------------------------------


def test_reservations_succeed_exactly_while_covered(db):
    team = make_tenant("tight", "tight-org", credits=3).team

    for _ in range(3):
        services.reserve_for_job(team=team, job_id=uuid.uuid4())
    with pytest.raises(InsufficientCredits) as excinfo:
        services.reserve_for_job(team=team, job_id=uuid.uuid4())

    error = excinfo.value
    assert (error.status_code, error.payload()) == (
        403,
        {"detail": "Insufficient credits", "code": "insufficient_credits"},
    )
    assert Reservation.objects.filter(team=team).count() == 3
    account = account_of(team)
    assert (account.reserved_units, account.remaining_units) == (3 * ONE, 0)
    assert_books_balance()


def test_reservation_refused_below_the_per_job_price(db):
    team = make_tenant("poor", "poor-org", credits=Decimal("0.9999")).team
    with pytest.raises(InsufficientCredits):
        services.reserve_for_job(team=team, job_id=uuid.uuid4())
    assert not Reservation.objects.filter(team=team).exists()
    assert account_of(team).reserved_units == 0


@pytest.mark.parametrize(
    ("config", "held"),
    [
        ({"budget_mode": "job", "credits_per_job": Decimal("2.5")}, 25_000),
        ({"budget_mode": "usd", "min_reservation": Decimal("0.5")}, 5_000),
        ({"budget_mode": "tokens", "min_reservation": Decimal("3"), "credits_per_job": Decimal("9")}, 30_000),
    ],
)
def test_reservation_amount_follows_the_budget_mode(db, config, held):
    team = make_tenant("modes", "modes-org", **config).team
    reservation = services.reserve_for_job(team=team, job_id=uuid.uuid4())
    assert reservation.amount_units == held
    assert account_of(team).reserved_units == held


# --- grants and adjustments ---------------------------------------------------------------------


def test_grant_with_the_same_reference_twice_writes_one_entry(acme):
    first = services.grant_credits(team=acme.team, amount=Decimal("5"), actor="t", reference="stripe:pi_1")
    second = services.grant_credits(team=acme.team, amount=Decimal("5"), actor="t", reference="stripe:pi_1")

    assert second.pk == first.pk
    assert LedgerEntry.objects.filter(reference="stripe:pi_1").count() == 1
    account = account_of(acme.team)
    assert (account.balance_units, account.allocated_units) == (105 * ONE, 105 * ONE)
    assert_books_balance()


def test_grants_without_reference_are_separate_entries(acme):
    services.grant_credits(team=acme.team, amount=Decimal("1.5"), actor="t")
    services.grant_credits(team=acme.team, amount=Decimal("1.5"), actor="t")
    assert [e.amount_units for e in entries(acme.team)] == [100 * ONE, 15_000, 15_000]
    assert account_of(acme.team).balance_units == 1_030_000
    assert_books_balance()


@pytest.mark.parametrize("kind", ["grant", "purchase", "refund"])
def test_grant_kinds(acme, kind):
    entry = services.grant_credits(team=acme.team, amount=Decimal("0.0001"), kind=kind, reason="why", actor="staff:ann")
    entry.refresh_from_db()
    assert (entry.kind, entry.amount_units, entry.balance_after_units) == (kind, 1, 1_000_001)
    assert (entry.reason, entry.actor, entry.job_id) == ("why", "staff:ann", None)
    assert_books_balance()


@pytest.mark.parametrize(
    ("amount", "kind", "error"),
    [
        (Decimal("0"), "grant", ValueError),
        (Decimal("-1"), "grant", ValueError),
        (Decimal("1.00001"), "grant", AmountError),
        (Decimal("NaN"), "grant", AmountError),
        (Decimal("1"), "charge", ValueError),
        (Decimal("1"), "adjustment", ValueError),
    ],
)
def test_grant_refuses_bad_input_and_writes_nothing(acme, amount, kind, error):
    with pytest.raises(error):
        services.grant_credits(team=acme.team, amount=amount, kind=kind, actor="t")
    assert len(entries(acme.team)) == 1  # only the initial allocation
    assert account_of(acme.team).balance_units == 100 * ONE


def test_adjust_credits_negative_below_zero_is_refused(acme):
    services.reserve_for_job(team=acme.team, job_id=uuid.uuid4())  # remaining 99

    with pytest.raises(InsufficientCredits):
        services.adjust_credits(team=acme.team, amount=Decimal("-99.0001"), reason="fix", actor="staff:ann")

    assert len(entries(acme.team)) == 1
    account = account_of(acme.team)
    assert (account.balance_units, account.remaining_units) == (100 * ONE, 99 * ONE)

    # Down to exactly zero remaining is allowed.
    entry = services.adjust_credits(team=acme.team, amount=Decimal("-99"), reason="fix", actor="staff:ann")
    assert (entry.kind, entry.amount_units, entry.balance_after_units, entry.actor) == (
        "adjustment",
        -99 * ONE,
        ONE,
        "staff:ann",
    )
    assert account_of(acme.team).remaining_units == 0
    assert_books_balance()


def test_adjust_credits_positive_and_zero(acme):
    entry = services.adjust_credits(team=acme.team, amount=Decimal("2.5"), reason="goodwill", actor="staff:ann")
    assert (entry.kind, entry.amount_units) == ("adjustment", 25_000)
    assert account_of(acme.team).balance_units == 1_025_000
    with pytest.raises(ValueError):
        services.adjust_credits(team=acme.team, amount=Decimal("0"), reason="noop", actor="staff:ann")
    assert len(entries(acme.team)) == 2
    assert_books_balance()


# --- usage modes ------------------------------------------------------------------------------


@pytest.fixture
def usage_team(db):
    return make_tenant("usage", "usage-org", credits=10, budget_mode="tokens", min_reservation=Decimal("2")).team


def test_accrue_usage_raises_the_hold(usage_team):
    job_id = uuid.uuid4()
    services.reserve_for_job(team=usage_team, job_id=job_id)
    assert account_of(usage_team).reserved_units == 2 * ONE

    services.accrue_usage(team=usage_team, job_id=job_id, accrued_units=5_000)  # below the minimum hold
    assert Reservation.objects.get(job_id=job_id).amount_units == 2 * ONE
    assert account_of(usage_team).reserved_units == 2 * ONE

    services.accrue_usage(team=usage_team, job_id=job_id, accrued_units=7 * ONE)
    assert Reservation.objects.get(job_id=job_id).amount_units == 7 * ONE
    account = account_of(usage_team)
    assert (account.reserved_units, account.remaining_units, account.balance_units) == (7 * ONE, 3 * ONE, 10 * ONE)
    assert_books_balance()

    # Settling releases the whole grown hold and charges the actual usage.
    services.settle_job(team=usage_team, job_id=job_id, charge_units=7 * ONE)
    account = account_of(usage_team)
    assert (account.reserved_units, account.balance_units, account.used_units) == (0, 3 * ONE, 7 * ONE)
    assert_books_balance()


def test_accrue_usage_on_a_closed_or_unknown_job_is_a_no_op(usage_team):
    job_id = uuid.uuid4()
    services.reserve_for_job(team=usage_team, job_id=job_id)
    services.release_job(team=usage_team, job_id=job_id)

    services.accrue_usage(team=usage_team, job_id=job_id, accrued_units=9 * ONE)
    services.accrue_usage(team=usage_team, job_id=uuid.uuid4(), accrued_units=9 * ONE)

    assert account_of(usage_team).reserved_units == 0
    assert Reservation.objects.get(job_id=job_id).amount_units == 2 * ONE
    assert_books_balance()


def test_usage_overshoot_is_charged_honestly(usage_team):
    job_id = uuid.uuid4()
    services.reserve_for_job(team=usage_team, job_id=job_id)
    entry = services.settle_job(team=usage_team, job_id=job_id, charge_units=12 * ONE)  # more than the balance
    assert entry.amount_units == -12 * ONE
    account = account_of(usage_team)
    assert (account.balance_units, account.remaining_units) == (-2 * ONE, -2 * ONE)
    assert_books_balance()


def test_check_call_allowed_in_usage_modes(usage_team):
    job_id = uuid.uuid4()
    services.reserve_for_job(team=usage_team, job_id=job_id)
    services.check_call_allowed(team=usage_team, job_id=job_id)  # nothing used yet: 10 available

    services.accrue_usage(team=usage_team, job_id=job_id, accrued_units=10 * ONE - 1)
    services.check_call_allowed(team=usage_team, job_id=job_id)  # remaining one unit > 0

    services.accrue_usage(team=usage_team, job_id=job_id, accrued_units=10 * ONE)
    with pytest.raises(InsufficientCredits):
        services.check_call_allowed(team=usage_team, job_id=job_id)  # remaining exactly 0


def test_check_call_allowed_ignores_the_balance_in_job_mode(db):
    team = make_tenant("flat", "flat-org", credits=1).team
    job_id = uuid.uuid4()
    services.reserve_for_job(team=team, job_id=job_id)
    assert account_of(team).remaining_units == 0
    services.check_call_allowed(team=team, job_id=job_id)  # the job was paid for by its reservation


def test_check_call_allowed_admits_the_first_call_of_a_job_the_team_could_reserve(db):
    team = make_tenant("edge", "edge-org", credits=2, budget_mode="usd", min_reservation=Decimal("2")).team
    job_id = uuid.uuid4()
    services.reserve_for_job(team=team, job_id=job_id)
    # SPEC §6: admitted while remaining credits *after this job's accrued usage* (zero so far) are > 0.
    services.check_call_allowed(team=team, job_id=job_id)


# --- expiry ----------------------------------------------------------------------------------


def test_release_expired_reservations(acme):
    old, fresh = uuid.uuid4(), uuid.uuid4()
    services.reserve_for_job(team=acme.team, job_id=old)
    services.reserve_for_job(team=acme.team, job_id=fresh)
    Reservation.objects.filter(job_id=old).update(expires_at=timezone.now() - timedelta(seconds=1))

    assert services.release_expired_reservations() == 1

    assert Reservation.objects.get(job_id=old).status == ReservationStatus.RELEASED
    assert Reservation.objects.get(job_id=fresh).status == ReservationStatus.OPEN
    assert account_of(acme.team).reserved_units == ONE
    assert services.release_expired_reservations() == 0  # idempotent
    assert entries(acme.team, kind=EntryKind.CHARGE) == []
    assert_books_balance()


def test_release_expired_reservations_honours_now_and_limit(acme, globex):
    for team in (acme.team, acme.team, globex.team):
        services.reserve_for_job(team=team, job_id=uuid.uuid4())
    later = timezone.now() + timedelta(days=3)

    assert services.release_expired_reservations(now=later, limit=2) == 2
    assert services.release_expired_reservations(now=later) == 1

    assert not Reservation.objects.filter(status=ReservationStatus.OPEN).exists()
    assert account_of(acme.team).reserved_units == 0
    assert account_of(globex.team).reserved_units == 0
    assert_books_balance()


def test_expired_settled_reservations_are_left_alone(acme):
    job_id = uuid.uuid4()
    services.reserve_for_job(team=acme.team, job_id=job_id)
    services.settle_job(team=acme.team, job_id=job_id, charge_units=ONE)
    assert services.release_expired_reservations(now=timezone.now() + timedelta(days=3)) == 0
    assert Reservation.objects.get(job_id=job_id).status == ReservationStatus.SETTLED


# --- low balance ------------------------------------------------------------------------------


@pytest.fixture
def watched(db):
    """10 credits, 1 per job, alert below 8."""
    return make_tenant("watched", "watched-org", credits=10, low_balance_threshold=Decimal("8")).team


def test_low_balance_fires_once_when_a_reservation_crosses(watched):
    jobs = [uuid.uuid4() for _ in range(4)]
    services.reserve_for_job(team=watched, job_id=jobs[0])  # 9
    services.reserve_for_job(team=watched, job_id=jobs[1])  # 8: not below
    assert low_balance_events(watched) == []

    services.reserve_for_job(team=watched, job_id=jobs[2])  # 7: crossed
    services.reserve_for_job(team=watched, job_id=jobs[3])  # 6: still below, no second event

    [event] = low_balance_events(watched)
    payload = event.payload
    assert payload["event"] == "credits.low_balance"
    assert payload["event_id"] == str(event.id)
    assert payload["team_id"] == "watched"
    assert payload["timestamp"].endswith("Z")
    assert payload["data"] == {"credits_remaining": 7.0, "low_balance_threshold": 8.0}
    assert "job_id" not in payload
    assert account_of(watched).low_balance_armed is False


def test_low_balance_re_arms_only_after_a_grant_lifts_it_back(watched):
    jobs = [uuid.uuid4() for _ in range(3)]
    for job_id in jobs:
        services.reserve_for_job(team=watched, job_id=job_id)  # 7: fired
    assert len(low_balance_events(watched)) == 1

    # Releasing holds lifts remaining back to 10, but only a grant re-arms the alert.
    for job_id in jobs:
        services.release_job(team=watched, job_id=job_id)
    for _ in range(3):
        services.reserve_for_job(team=watched, job_id=uuid.uuid4())  # 7 again
    assert len(low_balance_events(watched)) == 1

    # A grant that leaves remaining below the threshold does not re-arm (and is no crossing) …
    services.grant_credits(team=watched, amount=Decimal("0.9999"), actor="t")  # 7.9999
    assert account_of(watched).low_balance_armed is False
    services.reserve_for_job(team=watched, job_id=uuid.uuid4())  # 6.9999
    assert len(low_balance_events(watched)) == 1

    # … one that lifts it to ≥ threshold does, and the next crossing fires again.
    services.grant_credits(team=watched, amount=Decimal("1.0001"), actor="t")  # exactly 8
    assert account_of(watched).low_balance_armed is True
    assert len(low_balance_events(watched)) == 1
    services.reserve_for_job(team=watched, job_id=uuid.uuid4())  # 7
    events = low_balance_events(watched)
    assert len(events) == 2
    assert events[1].payload["data"] == {"credits_remaining": 7.0, "low_balance_threshold": 8.0}


def test_low_balance_fires_when_a_charge_crosses(db):
    team = make_tenant(
        "metered",
        "metered-org",
        credits=10,
        budget_mode="tokens",
        min_reservation=Decimal("1"),
        low_balance_threshold=Decimal("5"),
    ).team
    job_id = uuid.uuid4()
    services.reserve_for_job(team=team, job_id=job_id)  # 9
    assert low_balance_events(team) == []

    services.settle_job(team=team, job_id=job_id, charge_units=55_000)  # 4.5

    [event] = low_balance_events(team)
    assert event.payload["data"] == {"credits_remaining": 4.5, "low_balance_threshold": 5.0}
    # A settle that stays below does not fire again.
    other = uuid.uuid4()
    services.reserve_for_job(team=team, job_id=other)
    services.settle_job(team=team, job_id=other, charge_units=ONE)
    assert len(low_balance_events(team)) == 1


def test_low_balance_fires_when_accrued_usage_crosses(db):
    team = make_tenant(
        "accruing",
        "accruing-org",
        credits=10,
        budget_mode="usd",
        min_reservation=Decimal("1"),
        low_balance_threshold=Decimal("5"),
    ).team
    job_id = uuid.uuid4()
    services.reserve_for_job(team=team, job_id=job_id)
    services.accrue_usage(team=team, job_id=job_id, accrued_units=6 * ONE)  # remaining 4
    [event] = low_balance_events(team)
    assert event.payload["data"]["credits_remaining"] == 4.0


def test_a_grant_never_fires_low_balance(db):
    # Created (granted) below the threshold: no reservation or charge crossed it (SPEC §6).
    team = make_tenant("starter", "starter-org", credits=3, low_balance_threshold=Decimal("50")).team
    services.grant_credits(team=team, amount=Decimal("1"), actor="t")
    assert low_balance_events(team) == []


def test_no_low_balance_events_without_a_threshold(acme):
    for _ in range(100):
        services.reserve_for_job(team=acme.team, job_id=uuid.uuid4())
    assert account_of(acme.team).remaining_units == 0
    assert low_balance_events(acme.team) == []
