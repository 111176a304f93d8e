"""manage.py add_credits / verify_ledger, the Django admin's credit screens and the billing Celery task."""

import uuid
from datetime import timedelta
from decimal import Decimal
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.db.models import F
from django.test import Client
from django.utils import timezone

from billing import services, tasks
from billing.models import CreditAccount, LedgerEntry, Reservation, ReservationStatus

ONE = 10_000


def account_of(team) -> CreditAccount:
    return CreditAccount.objects.get(team=team)


def run(*args, **options) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err, **options)
    return out.getvalue(), err.getvalue()


# --- manage.py add_credits ------------------------------------------------------------------


def test_add_credits_command(acme):
    out, _ = run("add_credits", "acme-corp", "25.5", "--reason", "invoice 42", "--kind", "purchase")

    assert out.strip() == "added 25.5 credits to acme-corp; balance 125.5000"
    entry = LedgerEntry.objects.filter(team=acme.team).first()
    assert (entry.kind, entry.amount_units, entry.balance_after_units) == ("purchase", 255_000, 1_255_000)
    assert (entry.reason, entry.actor) == ("invoice 42", "manage.py")
    account = account_of(acme.team)
    assert (account.balance_units, account.allocated_units) == (1_255_000, 1_255_000)


def test_add_credits_command_defaults_to_grant(acme):
    run("add_credits", "acme-corp", "0.0001")
    entry = LedgerEntry.objects.filter(team=acme.team).first()
    assert (entry.kind, entry.amount_units, entry.reason) == ("grant", 1, "")


@pytest.mark.parametrize(
    ("amount", "message"),
    [
        ("abc", "invalid amount"),
        ("", "invalid amount"),
        ("NaN", "invalid amount"),
        ("Infinity", "invalid amount"),
        ("1.00001", "invalid amount"),
        ("0", "amount must be > 0"),
        ("-5", "amount must be > 0"),
        ("1000000000.0001", "amount must be > 0 and ≤ 10^9"),
        ("1e12", "amount must be > 0 and ≤ 10^9"),
    ],
)
def test_add_credits_command_rejects_bad_amounts(acme, amount, message):
    with pytest.raises(CommandError, match=message.replace("^", r"\^")):
        run("add_credits", "acme-corp", amount)
    assert LedgerEntry.objects.count() == 1
    assert account_of(acme.team).balance_units == 100 * ONE


def test_add_credits_command_unknown_team(db):
    with pytest.raises(CommandError, match="Team 'nope' not found"):
        run("add_credits", "nope", "5")
    assert not LedgerEntry.objects.exists()


def test_add_credits_command_rejects_charge_kind(acme):
    with pytest.raises(CommandError):
        run("add_credits", "acme-corp", "5", "--kind", "charge")
    assert LedgerEntry.objects.count() == 1


# --- manage.py verify_ledger ----------------------------------------------------------------


def busy_books(acme, globex) -> None:
    for team in (acme.team, globex.team):
        done, open_ = uuid.uuid4(), uuid.uuid4()
        services.reserve_for_job(team=team, job_id=done)
        services.reserve_for_job(team=team, job_id=open_)
        services.settle_job(team=team, job_id=done, charge_units=12_345)
    services.adjust_credits(team=acme.team, amount=Decimal("-3"), reason="fix", actor="staff:ann")
    services.grant_credits(team=globex.team, amount=Decimal("2"), kind="refund", actor="t")


def test_verify_ledger_passes_on_consistent_books(acme, globex):
    busy_books(acme, globex)
    out, err = run("verify_ledger")
    assert out.strip() == "ledger OK"
    assert err == ""


@pytest.mark.parametrize(
    "corruption",
    [
        {"balance_units": F("balance_units") + 1},
        {"balance_units": F("balance_units") - 1, "allocated_units": F("allocated_units") - 1},
        {"used_units": F("used_units") + 1, "allocated_units": F("allocated_units") + 1},
        {"reserved_units": F("reserved_units") + ONE},
        {"allocated_units": F("allocated_units") + 1},
    ],
)
def test_verify_ledger_names_the_corrupted_team(acme, globex, corruption):
    busy_books(acme, globex)
    CreditAccount.objects.filter(team=globex.team).update(**corruption)

    with pytest.raises(CommandError, match="globex-eng") as excinfo:
        run("verify_ledger")
    assert "acme-corp" not in str(excinfo.value)
    assert "1 team(s)" in str(excinfo.value)


def test_verify_ledger_reports_every_problem_on_stderr(acme, globex):
    CreditAccount.objects.filter(team=acme.team).update(balance_units=F("balance_units") + 7)
    CreditAccount.objects.filter(team=globex.team).update(reserved_units=5)
    err = StringIO()

    with pytest.raises(CommandError, match="2 team\\(s\\)") as excinfo:
        call_command("verify_ledger", stdout=StringIO(), stderr=err)

    assert "acme-corp" in str(excinfo.value) and "globex-eng" in str(excinfo.value)
    lines = err.getvalue().splitlines()
    assert "acme-corp: balance 1000007 != ledger sum 1000000 (units)" in lines
    assert "globex-eng: reserved 5 != open reservations 0 (units)" in lines


def test_verify_ledger_catches_a_hold_that_leaked(acme):
    job_id = uuid.uuid4()
    services.reserve_for_job(team=acme.team, job_id=job_id)
    Reservation.objects.filter(job_id=job_id).update(status=ReservationStatus.RELEASED)  # account still holds it
    with pytest.raises(CommandError, match="acme-corp"):
        run("verify_ledger")


# --- Celery task -------------------------------------------------------------------------------


def test_release_expired_reservations_task_called_directly(acme):
    expired, live = uuid.uuid4(), uuid.uuid4()
    services.reserve_for_job(team=acme.team, job_id=expired)
    services.reserve_for_job(team=acme.team, job_id=live)
    Reservation.objects.filter(job_id=expired).update(expires_at=timezone.now() - timedelta(minutes=1))

    assert tasks.release_expired_reservations() == 1
    assert tasks.release_expired_reservations.name == "billing.release_expired_reservations"

    assert Reservation.objects.get(job_id=expired).status == ReservationStatus.RELEASED
    assert Reservation.objects.get(job_id=live).status == ReservationStatus.OPEN
    assert account_of(acme.team).reserved_units == ONE
    assert tasks.release_expired_reservations() == 0
    run("verify_ledger")


# --- Django admin -----------------------------------------------------------------------------

TEAM_CHANGELIST = "/admin/tenants/team/"
LEDGER_CHANGELIST = "/admin/billing/ledgerentry/"


@pytest.fixture
def staff(db, settings) -> Client:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast logins in tests
    get_user_model().objects.create_superuser("ann", "ann@example.com", "s3cret-pass")
    client = Client()
    assert client.login(username="ann", password="s3cret-pass")
    return client


def test_admin_add_credits_action(staff, acme, globex):
    form = staff.post(TEAM_CHANGELIST, {"action": "add_credits", "_selected_action": [acme.team.pk], "index": 0})
    assert form.status_code == 200
    assert b'name="amount"' in form.content and b"acme-corp" in form.content
    assert LedgerEntry.objects.count() == 2  # showing the form writes nothing

    response = staff.post(
        TEAM_CHANGELIST,
        {
            "action": "add_credits",
            "_selected_action": [acme.team.pk],
            "apply": "1",
            "amount": "12.5",
            "kind": "purchase",
            "reason": "wire transfer",
        },
    )

    assert response.status_code == 302
    entry = LedgerEntry.objects.filter(team=acme.team).first()
    assert (entry.kind, entry.amount_units, entry.balance_after_units) == ("purchase", 125_000, 1_125_000)
    assert (entry.actor, entry.reason) == ("staff:ann", "wire transfer")
    assert account_of(acme.team).balance_units == 1_125_000
    assert account_of(globex.team).balance_units == 100 * ONE  # not selected
    run("verify_ledger")


def test_admin_add_credits_action_on_several_teams(staff, acme, globex):
    staff.post(
        TEAM_CHANGELIST,
        {
            "action": "add_credits",
            "_selected_action": [acme.team.pk, globex.team.pk],
            "apply": "1",
            "amount": "3",
            "kind": "grant",
            "reason": "",
        },
    )
    for team in (acme.team, globex.team):
        [entry] = LedgerEntry.objects.filter(team=team, actor="staff:ann")
        assert (entry.kind, entry.amount_units) == ("grant", 3 * ONE)
        assert account_of(team).balance_units == 103 * ONE


@pytest.mark.parametrize(
    "fields",
    [
        {"amount": "1.00001", "kind": "grant"},
        {"amount": "0", "kind": "grant"},
        {"amount": "-1", "kind": "grant"},
        {"amount": "1000000001", "kind": "grant"},
        {"amount": "abc", "kind": "grant"},
        {"amount": "5", "kind": "charge"},
        {"amount": "", "kind": "grant"},
    ],
)
def test_admin_add_credits_action_rejects_bad_input(staff, acme, fields):
    response = staff.post(
        TEAM_CHANGELIST,
        {"action": "add_credits", "_selected_action": [acme.team.pk], "apply": "1", "reason": "x", **fields},
    )
    assert response.status_code == 200  # the form again, with errors
    assert b"errorlist" in response.content
    assert LedgerEntry.objects.count() == 1
    assert account_of(acme.team).balance_units == 100 * ONE


def test_admin_ledger_changelist_renders_and_is_read_only(staff, acme):
    job_id = uuid.uuid4()
    services.reserve_for_job(team=acme.team, job_id=job_id)
    charge = services.settle_job(team=acme.team, job_id=job_id, charge_units=12_345)

    changelist = staff.get(LEDGER_CHANGELIST)
    assert changelist.status_code == 200
    assert b"acme-corp" in changelist.content and b"-1.2345" in changelist.content
    assert staff.get(LEDGER_CHANGELIST, {"kind": "charge", "q": "acme"}).status_code == 200

    assert staff.get(f"{LEDGER_CHANGELIST}add/").status_code == 403
    detail = staff.get(f"{LEDGER_CHANGELIST}{charge.pk}/change/")
    assert detail.status_code == 200  # view only
    assert b'name="_save"' not in detail.content
    edit = staff.post(
        f"{LEDGER_CHANGELIST}{charge.pk}/change/", {"kind": "grant", "amount_units": 1, "reason": "edited"}
    )
    assert edit.status_code == 403
    assert staff.post(f"{LEDGER_CHANGELIST}{charge.pk}/delete/", {"post": "yes"}).status_code == 403
    bulk = staff.post(LEDGER_CHANGELIST, {"action": "delete_selected", "_selected_action": [charge.pk], "post": "yes"})
    assert bulk.status_code in (200, 302)

    charge.refresh_from_db()
    assert (charge.kind, charge.amount_units, charge.reason) == ("charge", -12_345, "job completed")
    assert LedgerEntry.objects.count() == 2


def test_admin_requires_login(acme):
    response = Client().get(LEDGER_CHANGELIST)
    assert response.status_code == 302
    assert "/admin/login/" in response["Location"]
