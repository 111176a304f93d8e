"""Django admin for tenants (SPEC §8): staff run everything through the same services."""

import re

import pytest
from django.contrib.auth.models import User
from django.contrib.messages import get_messages
from django.test import Client

from billing.models import CreditAccount, LedgerEntry
from tenants.models import ApiKey, Organization, Team, TeamStatus, hash_key

KEY_RE = r"sk-[A-Za-z0-9_-]{32,}"


def _action(client: Client, url: str, action: str, ids: list[str], **extra):
    return client.post(url, {"action": action, "_selected_action": ids, **extra}, follow=True)


def _messages(response) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def test_admin_requires_a_staff_login(acme):
    anonymous = Client().get("/admin/tenants/team/")
    assert anonymous.status_code == 302
    assert anonymous["Location"].startswith("/admin/login/")

    User.objects.create_user("plain", password="pw-not-staff-123")
    client = Client()
    client.login(username="plain", password="pw-not-staff-123")
    assert client.get("/admin/tenants/team/").status_code == 302


def test_login_page_is_html(db):
    response = Client().get("/admin/login/")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")


def test_team_changelist_lists_teams_with_credits(staff, acme, globex):
    response = staff.get("/admin/tenants/team/")
    assert response.status_code == 200
    html = response.content.decode()
    assert "acme-corp" in html and "globex-eng" in html
    assert "100.0000" in html  # remaining credits column


@pytest.mark.parametrize(
    ("query", "present", "absent"),
    [
        ({"q": "globex"}, "globex-eng", "acme-corp"),
        ({"status__exact": "suspended"}, "globex-eng", "acme-corp"),
        ({"organization__id__exact": "acme"}, "acme-corp", "globex-eng"),
    ],
)
def test_team_changelist_search_and_filters(staff, acme, globex, query, present, absent):
    Team.objects.filter(id="globex-eng").update(status=TeamStatus.SUSPENDED)
    response = staff.get("/admin/tenants/team/", query)
    assert response.status_code == 200
    rows = [str(obj.pk) for obj in response.context["cl"].result_list]
    assert present in rows and absent not in rows


@pytest.mark.parametrize(
    "url",
    [
        "/admin/",
        "/admin/tenants/organization/",
        "/admin/tenants/organization/acme/change/",
        "/admin/tenants/team/acme-corp/change/",
        "/admin/tenants/team/add/",
        "/admin/tenants/apikey/",
        "/admin/tenants/event/",
    ],
)
def test_admin_pages_render(staff, acme, url):
    assert staff.get(url).status_code == 200


def test_team_change_page_never_shows_a_key_hash(staff, acme):
    html = staff.get("/admin/tenants/team/acme-corp/change/").content.decode()
    key = ApiKey.objects.get(key_hash=hash_key(acme.key))
    assert key.prefix in html
    assert key.key_hash not in html and acme.key not in html


def test_api_key_change_page_never_shows_the_hash(staff, acme):
    key = ApiKey.objects.get(key_hash=hash_key(acme.key))
    response = staff.get(f"/admin/tenants/apikey/{key.pk}/change/")
    assert response.status_code == 200
    html = response.content.decode()
    assert key.prefix in html
    assert key.key_hash not in html


def test_admin_key_created_in_the_console_is_shown_once_and_works(staff, acme):
    response = staff.post(
        "/admin/tenants/apikey/add/", {"name": "ops", "team": "", "expires_at_0": "", "expires_at_1": ""}, follow=True
    )
    assert response.status_code == 200
    messages = [str(message) for message in response.context["messages"]]
    raw = next(message.split(": ")[-1] for message in messages if "shown only once" in message)
    key = ApiKey.objects.get(name="ops")
    assert key.team is None and key.key_hash == hash_key(raw) and raw not in key.key_hash
    # The new admin key really acts as one.
    assert staff.get("/admin/tenants/apikey/").status_code == 200
    from tests.conftest import Api

    assert Api(Client(), raw).get("/api/organizations/acme").status_code == 200


def test_team_key_created_in_the_console_is_bound_to_its_team(staff, acme):
    staff.post(
        "/admin/tenants/apikey/add/", {"name": "bot", "team": "acme-corp", "expires_at_0": "", "expires_at_1": ""}
    )
    assert ApiKey.objects.get(name="bot").team_id == "acme-corp"


def test_suspend_and_resume_actions(staff, acme, globex):
    response = _action(staff, "/admin/tenants/team/", "suspend", ["acme-corp", "globex-eng"])
    assert response.status_code == 200
    assert "Suspended 2 team(s)." in _messages(response)
    assert set(Team.objects.values_list("status", flat=True)) == {TeamStatus.SUSPENDED}

    # Idempotent: suspending again keeps the state.
    _action(staff, "/admin/tenants/team/", "suspend", ["acme-corp"])
    assert Team.objects.get(id="acme-corp").status == TeamStatus.SUSPENDED

    response = _action(staff, "/admin/tenants/team/", "resume", ["acme-corp"])
    assert "Resumed 1 team(s)." in _messages(response)
    assert dict(Team.objects.values_list("id", "status")) == {"acme-corp": "active", "globex-eng": "suspended"}


def test_create_key_action_shows_the_key_once(staff, acme):
    before = set(ApiKey.objects.filter(team=acme.team).values_list("pk", flat=True))
    response = _action(staff, "/admin/tenants/team/", "create_key", ["acme-corp"])
    assert response.status_code == 200
    [message] = [m for m in _messages(response) if "acme-corp" in m]
    raw = re.search(KEY_RE, message).group(0)

    new = ApiKey.objects.filter(team=acme.team).exclude(pk__in=before).get()
    assert new.key_hash == hash_key(raw)
    assert new.name == "admin:root"
    assert raw not in [str(v) for v in ApiKey.objects.filter(pk=new.pk).values().get().values()]
    got = acme.api.client.get("/api/teams/acme-corp", HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert got.status_code == 200

    # Shown once: the next page does not repeat it.
    assert raw not in staff.get("/admin/tenants/team/").content.decode()


def test_revoke_action_on_keys(staff, acme, globex):
    key = ApiKey.objects.get(key_hash=hash_key(acme.key))
    response = _action(staff, "/admin/tenants/apikey/", "revoke", [str(key.pk)])
    assert response.status_code == 200
    assert "Revoked 1 key(s)." in _messages(response)
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert ApiKey.objects.get(key_hash=hash_key(globex.key)).revoked_at is None

    refused = acme.api.get("/api/teams/acme-corp")
    assert refused.status_code == 401
    assert refused.json() == {"detail": "API key has been revoked"}
    assert globex.api.get("/api/teams/globex-eng").status_code == 200


def test_add_credits_action_writes_the_ledger_with_the_staff_actor(staff, acme):
    form = _action(staff, "/admin/tenants/team/", "add_credits", ["acme-corp"])
    assert form.status_code == 200
    assert "amount" in form.content.decode()
    assert LedgerEntry.objects.filter(team=acme.team).count() == 1  # the form alone writes nothing

    response = _action(
        staff,
        "/admin/tenants/team/",
        "add_credits",
        ["acme-corp"],
        apply="1",
        amount="25.5",
        kind="purchase",
        reason="invoice 42",
    )
    assert response.status_code == 200
    entry = LedgerEntry.objects.filter(team=acme.team).order_by("-id").first()
    assert (entry.kind, entry.amount_units, entry.reason, entry.actor) == (
        "purchase",
        255_000,
        "invoice 42",
        "staff:root",
    )
    assert CreditAccount.objects.get(team=acme.team).balance_units == 1_255_000


def test_team_created_in_the_admin_gets_a_credit_account(staff, acme):
    response = staff.post(
        "/admin/tenants/team/add/",
        {
            "id": "acme-admin",
            "organization": "acme",
            "team_alias": "",
            "budget_mode": "job",
            "credits_per_job": "1",
            "credits_per_dollar": "10",
            "tokens_per_credit": "10000",
            "min_reservation": "1",
            "markup_percent": "0",
            "metadata": "{}",
            "keys-TOTAL_FORMS": "0",
            "keys-INITIAL_FORMS": "0",
            "keys-MIN_NUM_FORMS": "0",
            "keys-MAX_NUM_FORMS": "1000",
        },
    )
    assert response.status_code == 302, response.context["adminform"].form.errors if response.context else ""
    team = Team.objects.get(id="acme-admin")
    assert team.organization_id == "acme"
    assert team.status == TeamStatus.ACTIVE
    assert CreditAccount.objects.get(team=team).balance_units == 0


def test_organization_created_in_the_admin(staff):
    response = staff.post("/admin/tenants/organization/add/", {"id": "umbrella", "name": "Umbrella", "metadata": "{}"})
    assert response.status_code == 302
    assert Organization.objects.get(id="umbrella").name == "Umbrella"
