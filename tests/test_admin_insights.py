"""The staff usage page: renders the 30-day chart and the top lists from real job and call rows."""

import re

import pytest
from django.contrib.auth.models import User
from django.test import Client

from jobs import services
from jobs.models import CallStatus
from jobs.services import CallRecord
from tests.conftest import make_tenant


@pytest.fixture
def staff(db) -> Client:
    User.objects.create_superuser("ann", "ann@example.com", "pw-ann-123")
    client = Client()
    client.login(username="ann", password="pw-ann-123")
    return client


def _job_with_call(team, job_type: str, alias: str, cost_nanos: int, tokens: int) -> None:
    job = services.create_job(team=team, job_type=job_type)
    services.record_call(
        team=team,
        job_id=job.id,
        record=CallRecord(model_alias=alias, status=CallStatus.SUCCESS, prompt_tokens=tokens, cost_nanos=cost_nanos),
    )
    services.complete_job(team=team, job_id=job.id, status="completed")


def test_insights_page_renders_chart_and_top_lists(staff):
    tenant = make_tenant("acme-corp", "acme", credits=50)
    _job_with_call(tenant.team, "resume-parse", "chat-fast", 2_500_000, 120)
    _job_with_call(tenant.team, "resume-parse", "chat-smart", 500_000, 30)
    _job_with_call(tenant.team, "summary", "chat-fast", 1_000_000, 10)

    response = staff.get("/admin/insights/", {"team": "acme-corp"})

    assert response.status_code == 200
    html = response.content.decode()
    svg = re.search(r"<svg .*?</svg>", html, re.S).group(0)
    assert svg.count("<rect ") == 30  # one bar per day of the window
    assert "3 credits" in svg  # today's bar: three jobs at one credit each
    assert "<polyline" in svg
    top_types = re.search(r'<table id="top-job-types">.*?</table>', html, re.S).group(0)
    assert top_types.index("resume-parse") < top_types.index("summary")  # 2 credits before 1
    top_models = re.search(r'<table id="top-models">.*?</table>', html, re.S).group(0)
    assert top_models.index("chat-fast") < top_models.index("chat-smart")  # 2 calls before 1
    assert "3 jobs (3 completed, 0 failed)" in html


def test_insights_is_staff_only_and_linked(staff, anon):
    assert anon.client.get("/admin/insights/").status_code == 302  # to the login page
    make_tenant("acme-corp", "acme")
    assert 'id="insights-link"' in staff.get("/admin/").content.decode()
    change = staff.get("/admin/tenants/team/acme-corp/change/").content.decode()
    assert 'href="/admin/insights/?team=acme-corp"' in change


def test_insights_for_an_organization_and_for_everyone(staff):
    make_tenant("acme-corp", "acme")
    assert staff.get("/admin/insights/", {"organization": "acme"}).status_code == 200
    assert "all teams" in staff.get("/admin/insights/").content.decode()
