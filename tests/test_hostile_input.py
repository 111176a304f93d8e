"""Bad input found by an attacker's probe (issue 11): each was a 500 or a silent mistake; now a clear 4xx
(SPEC §4) or the right answer, and nothing written."""

import json
from decimal import Decimal

import pytest
from asgiref.sync import async_to_sync
from django.test import AsyncClient

from billing.models import LedgerEntry
from jobs.models import Job
from tenants.models import ApiKey, Organization

# --- dates at the edges of the calendar, offsets Postgres cannot hold ----------------------------

DATED_LISTS = ["/api/jobs", "/api/credits/transactions", "/api/teams/acme-corp/usage"]


@pytest.mark.parametrize("path", DATED_LISTS)
@pytest.mark.parametrize(
    "params",
    [
        {"end_date": "9999-12-31"},  # was a 500: the day after overflowed
        {"start_date": "0001-01-01", "end_date": "9999-12-31"},
        {"start_date": "0001-01-01T00:00:00+01:00"},  # before year 1 in UTC
        {"end_date": "2026-01-01T00:00:00-23:59"},  # Postgres holds offsets up to ±15:59 only
        {"start_date": "2020-01-01"},  # usage ranges longer than two years were refused (422)
    ],
)
def test_dates_at_the_edges_answer_200(acme, path, params):
    response = acme.api.get(path, params)
    assert response.status_code == 200, response.content


def test_usage_ending_on_the_first_day_of_the_calendar_answers_200(acme):
    response = acme.api.get("/api/teams/acme-corp/usage", {"end_date": "0001-01-01"})  # default start: 30 days before
    assert response.status_code == 200, response.content
    assert response.json()["summary"]["jobs"] == 0


@pytest.mark.parametrize("path", DATED_LISTS)
@pytest.mark.parametrize("value", ["\u0662\u0660\u0662\u0664-01-01", "2024-13-01", "yesterday", "2024-01-01T25:00"])
def test_bad_dates_are_422(acme, path, value):
    response = acme.api.get(path, {"start_date": value})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["query", "start_date"]


# --- money is parsed exactly -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw_amount",
    [
        "4.99999999999999999999",  # a JSON number: was credited as 5.0
        "0.00001",
        '"0.00001"',
        '"\\u0661"',  # an Arabic-Indic one: only ASCII digits are digits
        '"1_000"',
        '" 5"',
        "true",
    ],
)
def test_money_with_more_decimals_than_credits_hold_or_not_a_number_is_422(admin, acme, raw_amount):
    raw = '{"team_id": "acme-corp", "amount": ' + raw_amount + "}"
    response = admin.post("/api/credits/add", raw=raw)
    assert response.status_code == 422, response.content
    assert [error["loc"] for error in response.json()["detail"]] == [["body", "amount"]]
    assert LedgerEntry.objects.filter(team=acme.team).count() == 1  # the initial grant only


@pytest.mark.parametrize(("raw_amount", "credited"), [("4.9999", "4.9999"), ("12.5", "12.5"), ("1e2", "100")])
def test_money_given_as_a_json_number_is_credited_exactly(admin, acme, raw_amount, credited):
    raw = '{"team_id": "acme-corp", "amount": ' + raw_amount + "}"
    response = admin.post("/api/credits/add", raw=raw)
    assert response.status_code == 201, response.content
    entry = LedgerEntry.objects.filter(team=acme.team).latest("created_at")
    assert entry.amount_units == int(Decimal(credited) * 10_000)


def test_team_prices_and_limits_take_json_numbers_exactly(admin, acme):
    response = admin.put("/api/teams/acme-corp", {"credits_per_job": 0.1, "markup_percent": 12.3456})
    assert response.status_code == 200, response.content
    acme.team.refresh_from_db()
    assert (acme.team.credits_per_job, acme.team.markup_percent) == (Decimal("0.1"), Decimal("12.3456"))


# --- strings no database can hold ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/api/jobs/create", {"job_type": "x", "metadata": {"k": "a\ud800"}}),  # was a 500
        ("/api/jobs/create", {"job_type": "x\x00"}),
        ("/api/organizations/create", {"organization_id": "o", "name": "O", "metadata": {"\udc00": 1}}),
        ("/api/teams/acme-corp/keys", {"name": "\ud83d"}),
    ],
)
def test_unstorable_strings_anywhere_are_422_and_nothing_is_written(admin, acme, path, body):
    jobs, orgs, keys = Job.objects.count(), Organization.objects.count(), ApiKey.objects.count()
    response = admin.post(path, raw=json.dumps({"team_id": "acme-corp", **body}))  # ASCII JSON: \\ud800 escaped
    assert response.status_code == 422, response.content
    assert response.json()["detail"][0]["type"] in (
        "value_error.null_characters_not_allowed",
        "value_error.surrogate_characters_not_allowed",
    )
    assert (Job.objects.count(), Organization.objects.count(), ApiKey.objects.count()) == (jobs, orgs, keys)


def test_a_job_completed_with_unstorable_metadata_is_422_and_stays_open(acme):
    job_id = acme.api.post("/api/jobs/create", {"job_type": "x"}).json()["job_id"]
    response = acme.api.post(f"/api/jobs/{job_id}/complete", raw='{"status": "completed", "metadata": {"k": "\\udfff"}}')
    assert response.status_code == 422
    assert Job.objects.get(id=job_id).status == "pending"


# --- request bodies over the size limit ------------------------------------------------------------


def test_a_body_over_the_limit_is_413_on_management_endpoints(admin, acme, settings):
    """DRF reads the request stream itself: Django's limit on request.body never applied there."""
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2048
    response = admin.post("/api/jobs/create", {"team_id": "acme-corp", "job_type": "x", "metadata": {"b": "x" * 4096}})
    assert response.status_code == 413
    assert response.json() == {"detail": "Request body is larger than 2048 bytes", "code": "request_too_large"}
    assert not Job.objects.exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("path", "openai"), [("/api/jobs/{job}/llm-call", False), ("/v1/chat/completions", True)])
def test_a_body_over_the_limit_is_413_on_the_llm_routes(acme, settings, path, openai):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 2048
    body = json.dumps({"model": "chat-fast", "messages": [{"role": "user", "content": "x" * 4096}]})
    response = async_to_sync(AsyncClient().post)(
        path.format(job="00000000-0000-0000-0000-000000000000"),
        body,
        content_type="application/json",
        headers={"Authorization": f"Bearer {acme.key}"},
    )
    assert response.status_code == 413, response.content
    error = response.json()["error"] if openai else response.json()
    assert error["code"] == "request_too_large"
