"""Issue 7 §3: a staff user runs a team from the Django admin in a real browser.

Playwright drives Debian's Chromium against uvicorn (DEBUG=0) serving the Postgres test database;
the effect of each admin step is checked where it matters: over HTTP with the team's own key
against the same server, and in the ledger. A screenshot of each step goes to
test-artifacts/browser/.
"""

import re
from datetime import UTC, datetime

import httpx
import pytest
from django.contrib.auth.models import User

from billing import money
from billing.models import EntryKind, LedgerEntry
from jobs import services as job_services
from jobs.models import CallStatus
from jobs.services import CallRecord
from tenants.models import ApiKey, Team, TeamStatus
from tests.browser.conftest import needs_postgres
from tests.conftest import make_tenant

pytestmark = [pytest.mark.live, needs_postgres()]

USERNAME, PASSWORD = "ops-ann", "browser-test-password-7781"
TEAM = "browser-team"
HEADER_BLUE = "rgb(65, 118, 144)"  # Django admin's --header-bg (#417690): proves admin CSS loaded


def _create_job(base_url: str, key: str) -> httpx.Response:
    return httpx.post(
        f"{base_url}/api/jobs/create",
        json={"job_type": "browser-check"},
        headers={"Authorization": f"Bearer {key}"},
        timeout=10,
        trust_env=False,
    )


@pytest.mark.django_db(transaction=True)
def test_staff_runs_a_team_from_the_admin(chromium_browser, admin_server, artifacts):
    from playwright.sync_api import expect

    base = admin_server.url
    User.objects.create_superuser(USERNAME, "ann@example.com", PASSWORD)
    tenant = make_tenant(TEAM, "browser-org", credits=100)
    key_row = ApiKey.objects.get(team=tenant.team)
    # One completed, charged job with a call today, so the usage chart has a bar to draw.
    job = job_services.create_job(team=tenant.team, job_type="resume-parse")
    job_services.record_call(
        team=tenant.team,
        job_id=job.id,
        record=CallRecord(model_alias="chat-fast", status=CallStatus.SUCCESS, prompt_tokens=42, cost_nanos=1_500_000),
    )
    job_services.complete_job(team=tenant.team, job_id=job.id, status="completed")
    baseline = _create_job(base, tenant.key)
    assert baseline.status_code == 201, baseline.text

    context = chromium_browser.new_context(base_url=base, viewport={"width": 1600, "height": 900})
    context.set_default_timeout(10_000)
    page = context.new_page()
    page_errors: list[str] = []
    bad_responses: list[str] = []
    page.on("pageerror", lambda error: page_errors.append(str(error)))
    page.on("requestfailed", lambda request: bad_responses.append(f"failed {request.url}"))
    page.on("response", lambda r: bad_responses.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    step = iter(range(1, 100))

    def shot(name: str) -> None:
        page.screenshot(path=artifacts / f"{next(step):02d}-{name}.png", full_page=True)

    def run_action(changelist: str, selected: str, action: str) -> None:
        page.goto(changelist)
        page.locator(f'input[name="_selected_action"][value="{selected}"]').check()
        page.locator('select[name="action"]').select_option(action)
        page.locator('button[name="index"]').click()

    try:
        # 1. Log in: /admin/ redirects to the login form; the styled admin index comes back.
        page.goto("/admin/")
        expect(page).to_have_url(re.compile(r"/admin/login/\?next=/admin/$"))
        page.fill("#id_username", USERNAME)
        page.fill("#id_password", PASSWORD)
        shot("login")
        page.locator('input[type="submit"]').click()
        expect(page).to_have_url(f"{base}/admin/")
        expect(page.locator("#user-tools")).to_contain_text(USERNAME)
        expect(page.locator("#insights-link")).to_be_visible()
        # Static files are served with DEBUG=0 (whitenoise): the admin stylesheet applied.
        expect(page.locator("#header")).to_have_css("background-color", HEADER_BLUE)
        shot("admin-index")

        # 2. Open the team from the changelist.
        page.goto("/admin/tenants/team/")
        page.locator("#result_list").get_by_role("link", name=TEAM, exact=True).click()
        expect(page).to_have_url(f"{base}/admin/tenants/team/{TEAM}/change/")
        expect(page.locator(".field-status .readonly")).to_have_text("Active")
        expect(page.locator(".field-credits_remaining .readonly")).to_have_text("98.0000")  # 100 − 1 charged − 1 held
        shot("team-open")

        # 3. Suspend it: its key can no longer create jobs (403 team_suspended) on the same server.
        run_action("/admin/tenants/team/", TEAM, "suspend")
        expect(page.locator(".messagelist .success")).to_have_text("Suspended 1 team(s).")
        expect(page.locator("#result_list tbody tr").filter(has_text=TEAM).locator("td.field-status")).to_have_text(
            "Suspended"
        )
        shot("team-suspended")
        assert Team.objects.get(id=TEAM).status == TeamStatus.SUSPENDED
        refused = _create_job(base, tenant.key)
        assert refused.status_code == 403, refused.text
        assert refused.json()["code"] == "team_suspended"

        # 4. Resume it: job creation works again.
        run_action("/admin/tenants/team/", TEAM, "resume")
        expect(page.locator(".messagelist .success")).to_have_text("Resumed 1 team(s).")
        expect(page.locator("#result_list tbody tr").filter(has_text=TEAM).locator("td.field-status")).to_have_text(
            "Active"
        )
        shot("team-resumed")
        again = _create_job(base, tenant.key)
        assert again.status_code == 201, again.text

        # 5. Add credits through the action's intermediate form: one ledger row, the staff user as actor.
        run_action("/admin/tenants/team/", TEAM, "add_credits")
        expect(page.locator("#content form")).to_contain_text(f"Add credits to: {TEAM}")
        page.fill("#id_amount", "25.5")
        page.locator("#id_kind").select_option("purchase")
        page.fill("#id_reason", "invoice B-7 (browser)")
        shot("add-credits-form")
        page.locator('input[name="apply"]').click()
        expect(page.locator(".messagelist .success")).to_have_text("Added 25.5 credits to 1 team(s).")
        shot("credits-added")
        grants = LedgerEntry.objects.filter(team_id=TEAM, kind=EntryKind.PURCHASE)
        assert [(e.amount_units, e.actor, e.reason) for e in grants] == [
            (money.credits_to_units("25.5"), f"staff:{USERNAME}", "invoice B-7 (browser)")
        ]
        balance = httpx.get(
            f"{base}/api/credits/balance",
            headers={"Authorization": f"Bearer {tenant.key}"},
            timeout=10,
            trust_env=False,
        )
        assert balance.status_code == 200, balance.text
        assert balance.json()["credits_allocated"] == pytest.approx(125.5)  # 100 + 25.5
        assert balance.json()["credits_remaining"] == pytest.approx(122.5)  # − 1 charged − 2 held

        # 6. Revoke the team's key in the admin: the key now gets 401.
        run_action(f"/admin/tenants/apikey/?q={TEAM}", str(key_row.pk), "revoke")
        expect(page.locator(".messagelist .success")).to_have_text("Revoked 1 key(s).")
        key_cells = page.locator("#result_list tbody tr").filter(has_text=key_row.prefix)
        expect(key_cells.locator("td.field-revoked_at")).not_to_have_text("-")  # a date now
        shot("key-revoked")
        key_row.refresh_from_db()
        assert key_row.revoked_at is not None
        revoked = _create_job(base, tenant.key)
        assert revoked.status_code == 401, revoked.text

        # 7. The usage chart, from the team's page: an inline SVG with 30 days and today's bar.
        page.goto(f"/admin/tenants/team/{TEAM}/change/")
        page.locator("#team-insights-link").click()
        expect(page).to_have_url(f"{base}/admin/insights/?team={TEAM}")
        chart = page.locator("#usage-chart svg.usage-chart")
        expect(chart).to_be_visible()
        box = chart.bounding_box()
        assert box is not None and (box["width"], box["height"]) == (760, 260)
        expect(chart.locator("rect")).to_have_count(30)
        expect(chart.locator("polyline")).to_have_count(1)
        today = datetime.now(UTC).date().isoformat()
        bar = chart.locator("rect").filter(has=page.locator("title", has_text=f"{today}: 1 credits"))
        expect(bar).to_have_count(1)
        bar_box = bar.bounding_box()
        assert bar_box is not None and bar_box["height"] > 100  # the only day with usage: the full scale
        expect(page.locator("#content")).to_contain_text("3 jobs (1 completed, 0 failed)")
        expect(page.locator("#top-models")).to_contain_text("chat-fast")
        shot("usage-chart")
    except Exception:
        page.screenshot(path=artifacts / "failure.png", full_page=True)
        raise
    finally:
        context.close()

    assert page_errors == [], page_errors
    assert bad_responses == [], bad_responses
