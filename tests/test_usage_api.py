"""Usage analytics (SPEC §5.3): GET /api/teams/{team_id}/usage and GET /api/organizations/{org_id}/usage.

Rows are written through jobs.services (create_job, record_call, complete_job), then back-dated; every
expected number is recomputed here from the Job/LLMCall rows themselves.
"""

from collections import defaultdict
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from urllib.parse import parse_qs, urlparse

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from billing.models import LedgerEntry
from jobs import services
from jobs.models import CallStatus, Job, JobStatus, LLMCall
from jobs.services import CallRecord
from tests.conftest import make_tenant

FIELDS = (
    "jobs",
    "completed_jobs",
    "failed_jobs",
    "calls",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cost_usd",
    "credits_used",
    "uncharged_cost_usd",
)
ADMIN_FIELDS = (*FIELDS, "uncharged_provider_cost_usd")
TERMINAL = (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED)


def add_job(team, job_type: str, calls: list[tuple], *, status: str | None, at: datetime):
    """A job with its calls (alias, call status, prompt, completion, cost nanos), finished with `status`
    (None: left open), then back-dated to `at` together with its calls."""
    job = services.create_job(team=team, job_type=job_type)
    for alias, call_status, prompt, completion, cost in calls:
        services.record_call(
            team=team,
            job_id=job.id,
            record=CallRecord(
                model_alias=alias,
                status=call_status,
                prompt_tokens=prompt,
                completion_tokens=completion,
                cost_nanos=cost,
                provider_cost_nanos=cost - cost // 6,  # a 20% markup, so provider cost is a number of its own
            ),
        )
    if status in TERMINAL:
        services.complete_job(team=team, job_id=job.id, status=status)
    Job.objects.filter(pk=job.pk).update(created_at=at)
    LLMCall.objects.filter(job=job).update(created_at=at)
    return job


def sums(jobs: list[Job], calls: list[LLMCall], *, admin: bool = False) -> dict:
    """The usage fields, computed from the rows (what the endpoint must aggregate in the database).

    Uncharged: failed/cancelled jobs without a charge in the ledger; their provider cost for admin keys only.
    """
    charged = set(LedgerEntry.objects.filter(kind="charge").values_list("job_id", flat=True))
    uncharged = [job for job in jobs if job.status in (JobStatus.FAILED, JobStatus.CANCELLED) and job.id not in charged]
    values = {
        "jobs": len(jobs),
        "completed_jobs": sum(job.status == JobStatus.COMPLETED for job in jobs),
        "failed_jobs": sum(job.status == JobStatus.FAILED for job in jobs),
        "calls": len(calls),
        "prompt_tokens": sum(call.prompt_tokens for call in calls),
        "completion_tokens": sum(call.completion_tokens for call in calls),
        "total_tokens": sum(call.total_tokens for call in calls),
        "cost_usd": float(Decimal(sum(call.cost_nanos for call in calls)).scaleb(-9)),
        "credits_used": float(Decimal(sum(job.credits_charged_units for job in jobs)).scaleb(-4)),
        "uncharged_cost_usd": float(Decimal(sum(job.cost_nanos for job in uncharged)).scaleb(-9)),
    }
    if admin:
        values["uncharged_provider_cost_usd"] = float(
            Decimal(sum(job.provider_cost_nanos for job in uncharged)).scaleb(-9)
        )
    return values


def rows_in(team_ids: list[str], start: datetime, end: datetime) -> tuple[list[Job], list[LLMCall]]:
    jobs = list(Job.objects.filter(team_id__in=team_ids, created_at__gte=start, created_at__lt=end))
    calls = list(
        LLMCall.objects.filter(team_id__in=team_ids, created_at__gte=start, created_at__lt=end).select_related("job")
    )
    return jobs, calls


def expected_groups(group_by: str, jobs: list[Job], calls: list[LLMCall], *, admin: bool = False) -> list[dict]:
    if group_by == "model":
        # A job counts under every model it called.
        by_key_calls = defaultdict(list)
        for call in calls:
            by_key_calls[call.model_alias].append(call)
        groups = {
            alias: sums(list({call.job_id: call.job for call in alias_calls}.values()), alias_calls, admin=admin)
            for alias, alias_calls in by_key_calls.items()
        }
    else:
        key_of_job = {
            "day": lambda job: job.created_at.astimezone(UTC).date().isoformat(),
            "job_type": lambda job: job.job_type,
            "team": lambda job: job.team_id,
        }[group_by]
        job_groups, call_groups = defaultdict(list), defaultdict(list)
        for job in jobs:
            job_groups[key_of_job(job)].append(job)
        for call in calls:
            key = call.created_at.astimezone(UTC).date().isoformat() if group_by == "day" else key_of_job(call.job)
            call_groups[key].append(call)
        groups = {key: sums(job_groups[key], call_groups[key], admin=admin) for key in {*job_groups, *call_groups}}
    return [{"key": key, **groups[key]} for key in sorted(groups)]


def day_at(days_ago: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    day = timezone.now().astimezone(UTC).date() - timedelta(days=days_ago)
    return datetime.combine(day, time(hour, minute, second), tzinfo=UTC)


D0, D1, D2 = 10, 9, 8  # days ago


@pytest.fixture
def usage_data(db):
    """acme-corp (tokens budget mode, fractional credits) with jobs over three days, plus rows of two
    other teams (acme-labs in the same organization, globex-eng in another) that acme must never see."""
    acme = make_tenant("acme-corp", "acme", credits=10_000, budget_mode="tokens", tokens_per_credit=7)
    labs = make_tenant("acme-labs", "acme", credits=10_000, charge_failed_jobs=True)
    globex = make_tenant("globex-eng", "globex", credits=10_000)
    team = acme.team
    ok, err, cancelled = CallStatus.SUCCESS, CallStatus.ERROR, CallStatus.CANCELLED
    add_job(team, "resume.parse", [("chat-fast", ok, 100, 20, 1_234_567), ("chat-smart", ok, 50, 10, 987_654_321)],
            status=JobStatus.COMPLETED, at=day_at(D0, 9))  # fmt: skip
    add_job(team, "summary", [("chat-fast", err, 0, 0, 0)], status=JobStatus.FAILED, at=day_at(D0, 23, 59, 59))
    add_job(team, "resume.parse", [("chat-fast", ok, 30, 5, 3), ("chat-fast", cancelled, 7, 2, 11)],
            status=JobStatus.COMPLETED, at=day_at(D1))  # fmt: skip
    add_job(team, "summary", [], status=None, at=day_at(D1, 12))  # pending, no calls
    add_job(team, "summary", [("chat-smart", ok, 10, 10, 500)], status=JobStatus.CANCELLED, at=day_at(D2, 6))
    add_job(team, "resume.parse", [("chat-smart", ok, 1, 1, 1)], status=None, at=day_at(D2, 18))  # in progress
    add_job(labs.team, "summary", [("chat-fast", ok, 1000, 1000, 5_000_000)], status=JobStatus.COMPLETED,
            at=day_at(D1, 8))  # fmt: skip
    # acme-labs charges failed jobs: the first is charged, the second had nothing billable.
    add_job(labs.team, "summary", [("chat-smart", ok, 10, 10, 2_400)], status=JobStatus.FAILED, at=day_at(D2, 8))
    add_job(labs.team, "resume.parse", [("chat-fast", err, 5, 0, 360)], status=JobStatus.CANCELLED, at=day_at(D1, 9))
    add_job(globex.team, "resume.parse", [("chat-fast", ok, 9000, 9000, 90_000_000)], status=JobStatus.COMPLETED,
            at=day_at(D0, 10))  # fmt: skip
    return {"acme": acme, "labs": labs, "globex": globex}


@pytest.fixture
def teams(db):
    """The three teams without any usage row (for validation and authorization checks)."""
    return {
        "acme": make_tenant("acme-corp", "acme"),
        "labs": make_tenant("acme-labs", "acme"),
        "globex": make_tenant("globex-eng", "globex"),
    }


def iso(days_ago: int) -> str:
    return day_at(days_ago).date().isoformat()


# --- numbers ------------------------------------------------------------------------------------


@pytest.mark.parametrize("group_by", ["day", "job_type", "model"])
def test_team_usage_equals_the_sums_of_its_rows(usage_data, admin, group_by):
    acme = usage_data["acme"]
    response = acme.api.get(
        "/api/teams/acme-corp/usage", {"group_by": group_by, "start_date": iso(D0), "end_date": iso(D2)}
    )

    assert response.status_code == 200, response.content
    body = response.json()
    jobs, calls = rows_in(["acme-corp"], day_at(D0), day_at(D2 - 1))
    assert (len(jobs), len(calls)) == (6, 7)  # the whole acme dataset, nothing of the other teams
    assert body["team_id"] == "acme-corp"
    assert body["group_by"] == group_by
    assert body["start_date"] == f"{iso(D0)}T00:00:00Z"
    assert body["end_date"] == f"{iso(D2 - 1)}T00:00:00Z"  # a date end_date covers its whole day
    assert body["summary"] == sums(jobs, calls)
    assert body["summary"]["credits_used"] > 0 and body["summary"]["cost_usd"] > 0
    assert body["summary"]["uncharged_cost_usd"] > 0  # the cancelled job
    expected = expected_groups(group_by, jobs, calls)
    assert body["results"] == expected
    assert body["count"] == len(expected)
    assert (body["next"], body["previous"]) == (None, None)
    assert all(set(row) == {"key", *FIELDS} for row in body["results"])  # never the provider cost
    # An admin key sees the same numbers, and the provider cost of the uncharged jobs.
    as_admin = admin.get(
        "/api/teams/acme-corp/usage", {"group_by": group_by, "start_date": iso(D0), "end_date": iso(D2)}
    ).json()
    assert as_admin["summary"] == sums(jobs, calls, admin=True)
    assert as_admin["results"] == expected_groups(group_by, jobs, calls, admin=True)
    assert all(set(row) == {"key", *ADMIN_FIELDS} for row in as_admin["results"])
    assert as_admin["summary"]["uncharged_provider_cost_usd"] > 0


def test_team_usage_groups_have_the_expected_keys(usage_data):
    """Spot-check the aggregation by hand, so a wrong helper above cannot hide a wrong endpoint."""
    api = usage_data["acme"].api
    params = {"start_date": iso(D0), "end_date": iso(D2)}

    by_day = {row["key"]: row for row in api.get("/api/teams/acme-corp/usage", params).json()["results"]}
    assert list(by_day) == [iso(D0), iso(D1), iso(D2)]  # default group_by is day
    assert (by_day[iso(D0)]["jobs"], by_day[iso(D0)]["completed_jobs"], by_day[iso(D0)]["failed_jobs"]) == (2, 1, 1)
    assert (by_day[iso(D0)]["calls"], by_day[iso(D0)]["prompt_tokens"], by_day[iso(D0)]["total_tokens"]) == (
        3,
        150,
        180,
    )
    assert by_day[iso(D0)]["cost_usd"] == 0.988888888
    assert by_day[iso(D0)]["credits_used"] == 25.7143  # ceil(180 tokens / 7, 4 decimals)
    assert (by_day[iso(D1)]["jobs"], by_day[iso(D1)]["calls"], by_day[iso(D1)]["credits_used"]) == (2, 2, 6.2858)
    # Uncharged: only the cancelled job of D2 (the failed one of D0 cost nothing).
    uncharged = {key: row["uncharged_cost_usd"] for key, row in by_day.items()}
    assert uncharged == {iso(D0): 0, iso(D1): 0, iso(D2): 0.0000005}

    by_model = {
        row["key"]: row
        for row in api.get("/api/teams/acme-corp/usage", {**params, "group_by": "model"}).json()["results"]
    }
    assert list(by_model) == ["chat-fast", "chat-smart"]
    assert (by_model["chat-fast"]["jobs"], by_model["chat-fast"]["calls"]) == (3, 4)
    assert (by_model["chat-smart"]["jobs"], by_model["chat-smart"]["calls"]) == (3, 3)
    assert (by_model["chat-fast"]["uncharged_cost_usd"], by_model["chat-smart"]["uncharged_cost_usd"]) == (0, 0.0000005)

    by_type = {
        row["key"]: row
        for row in api.get("/api/teams/acme-corp/usage", {**params, "group_by": "job_type"}).json()["results"]
    }
    assert (by_type["summary"]["jobs"], by_type["summary"]["calls"], by_type["summary"]["failed_jobs"]) == (3, 2, 1)
    assert (by_type["resume.parse"]["jobs"], by_type["resume.parse"]["completed_jobs"]) == (3, 2)
    assert (by_type["summary"]["uncharged_cost_usd"], by_type["resume.parse"]["uncharged_cost_usd"]) == (0.0000005, 0)


# --- date ranges -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "window"),
    [
        # A date end_date is inclusive: D0 23:59:59 is in, D1 00:00:00 is out.
        pytest.param({"start_date": iso(D0), "end_date": iso(D0)}, (day_at(D0), day_at(D1)), id="one-day"),
        pytest.param({"start_date": iso(D1), "end_date": iso(D1)}, (day_at(D1), day_at(D2)), id="next-day"),
        pytest.param(
            {"start_date": f"{iso(D0)}T12:00:00Z", "end_date": f"{iso(D1)}T06:00:00Z"},
            (day_at(D0, 12), day_at(D1, 6)),
            id="datetimes",
        ),
        pytest.param({"start_date": iso(D2)}, (day_at(D2), timezone.now() + timedelta(days=1)), id="open-end"),
    ],
)
def test_team_usage_date_filters(usage_data, params, window):
    response = usage_data["acme"].api.get("/api/teams/acme-corp/usage", params)

    assert response.status_code == 200, response.content
    jobs, calls = rows_in(["acme-corp"], *window)
    assert 0 < len(jobs) < 6  # the window really cuts the dataset
    assert response.json()["summary"] == sums(jobs, calls)
    assert response.json()["results"] == expected_groups("day", jobs, calls)


def test_inclusive_end_date_keeps_the_last_second_of_the_day(usage_data):
    summary = (
        usage_data["acme"]
        .api.get("/api/teams/acme-corp/usage", {"start_date": iso(D0), "end_date": iso(D0)})
        .json()["summary"]
    )
    assert (summary["jobs"], summary["failed_jobs"], summary["calls"]) == (2, 1, 3)


def test_default_range_is_the_last_30_days(db):
    acme = make_tenant("acme-corp", "acme", credits=100)
    ok = CallStatus.SUCCESS
    add_job(acme.team, "old", [("chat-fast", ok, 1000, 1000, 1000)], status=JobStatus.COMPLETED, at=day_at(31, 12))
    add_job(acme.team, "recent", [("chat-fast", ok, 10, 2, 7)], status=JobStatus.COMPLETED, at=day_at(29, 12))
    add_job(acme.team, "today", [("chat-fast", ok, 3, 4, 5)], status=JobStatus.COMPLETED, at=timezone.now())

    body = acme.api.get("/api/teams/acme-corp/usage").json()

    assert body["group_by"] == "day"
    start = datetime.fromisoformat(body["start_date"].replace("Z", "+00:00"))
    end = datetime.fromisoformat(body["end_date"].replace("Z", "+00:00"))
    assert timedelta(days=30) <= end - start < timedelta(days=31)
    assert abs(end - timezone.now()) < timedelta(minutes=1)
    assert body["summary"]["jobs"] == 2
    assert (body["summary"]["prompt_tokens"], body["summary"]["completion_tokens"]) == (13, 6)
    assert body["summary"]["credits_used"] == 2
    assert [row["key"] for row in body["results"]] == [day_at(29).date().isoformat(), timezone.now().date().isoformat()]
    # Asking for the old day explicitly still finds it.
    old = acme.api.get(
        "/api/teams/acme-corp/usage",
        {"start_date": day_at(31).date().isoformat(), "end_date": day_at(31).date().isoformat()},
    )
    assert old.json()["summary"]["prompt_tokens"] == 1000


# --- pagination -----------------------------------------------------------------------------------


def test_team_usage_is_paginated(db):
    acme = make_tenant("acme-corp", "acme", credits=100)
    for days_ago in range(1, 6):  # not today: today's 10:00 may not have come yet
        add_job(acme.team, f"type-{days_ago}", [("chat-fast", CallStatus.SUCCESS, 10 + days_ago, 1, 100)],
                status=JobStatus.COMPLETED, at=day_at(days_ago, 10))  # fmt: skip
    full = acme.api.get("/api/teams/acme-corp/usage").json()
    assert full["count"] == 5 and len(full["results"]) == 5

    first = acme.api.get("/api/teams/acme-corp/usage", {"limit": 2}).json()
    assert first["count"] == 5
    assert first["results"] == full["results"][:2]
    assert first["previous"] is None
    assert parse_qs(urlparse(first["next"]).query)["offset"] == ["2"]
    assert first["summary"] == full["summary"]  # the summary covers the whole range, not the page

    pages, url = [], first["next"]
    while url:
        page = acme.api.get(urlparse(url).path + "?" + urlparse(url).query).json()
        assert page["previous"] is not None
        pages.append(page)
        url = page["next"]
    assert [len(page["results"]) for page in pages] == [2, 1]
    assert first["results"] + [row for page in pages for row in page["results"]] == full["results"]

    last = acme.api.get("/api/teams/acme-corp/usage", {"limit": 2, "offset": 4}).json()
    assert (last["results"], last["next"]) == (full["results"][4:], None)
    beyond = acme.api.get("/api/teams/acme-corp/usage", {"offset": 10}).json()
    assert (beyond["count"], beyond["results"]) == (5, [])


# --- validation ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"group_by": "week"}, "group_by"),
        ({"group_by": "team"}, "group_by"),  # only the organization endpoint groups by team
        ({"start_date": "yesterday"}, "start_date"),
        ({"end_date": "2024-13-01"}, "end_date"),
        ({"start_date": "2024-02-01", "end_date": "2024-01-01"}, "end_date"),
        ({"limit": "-1"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"offset": "-5"}, "offset"),
    ],
)
def test_team_usage_bad_query_is_422(teams, params, field):
    response = teams["acme"].api.get("/api/teams/acme-corp/usage", params)

    assert response.status_code == 422, response.content
    detail = response.json()["detail"]
    assert isinstance(detail, list) and detail
    assert ["query", field] in [error["loc"][:2] for error in detail]


@pytest.mark.parametrize("params", [{"group_by": "week"}, {"start_date": "2024-02-30"}, {"limit": "x"}])
def test_organization_usage_bad_query_is_422(teams, admin, params):
    response = admin.get("/api/organizations/acme/usage", params)
    assert response.status_code == 422, response.content
    assert response.json()["detail"][0]["loc"][0] == "query"


# --- authorization ------------------------------------------------------------------------------


def test_team_key_of_another_team_is_403(teams):
    response = teams["globex"].api.get("/api/teams/acme-corp/usage")
    assert response.status_code == 403
    assert response.json()["detail"] == "API key does not belong to team 'acme-corp'"
    assert teams["globex"].api.get("/api/teams/globex-eng/usage").status_code == 200


def test_team_usage_needs_a_key_and_a_known_team(teams, admin, anon):
    assert anon.get("/api/teams/acme-corp/usage").status_code == 401
    assert admin.get("/api/teams/no-such-team/usage").status_code == 404
    assert admin.get("/api/v1/teams/acme-corp/usage").status_code == 200


def test_organization_usage_is_admin_only(teams, anon):
    response = teams["acme"].api.get("/api/organizations/acme/usage")
    assert response.status_code == 403
    assert "detail" in response.json()
    assert anon.get("/api/organizations/acme/usage").status_code == 401


# --- organization usage -------------------------------------------------------------------------


@pytest.mark.parametrize("group_by", [None, "team", "day", "job_type", "model"])
def test_organization_usage_sums_its_teams(usage_data, admin, group_by):
    params = {"start_date": iso(D0), "end_date": iso(D2)}
    if group_by:
        params["group_by"] = group_by
    response = admin.get("/api/organizations/acme/usage", params)

    assert response.status_code == 200, response.content
    body = response.json()
    jobs, calls = rows_in(["acme-corp", "acme-labs"], day_at(D0), day_at(D2 - 1))
    assert body["organization_id"] == "acme"
    assert body["group_by"] == (group_by or "team")
    assert body["summary"] == sums(jobs, calls, admin=True)
    assert body["results"] == expected_groups(group_by or "team", jobs, calls, admin=True)
    if group_by in (None, "team"):
        assert [row["key"] for row in body["results"]] == ["acme-corp", "acme-labs"]  # not globex-eng
        # acme-labs (charge_failed_jobs) was charged for its failed job; its cancelled one had nothing billable.
        labs = body["results"][1]
        assert (labs["uncharged_cost_usd"], labs["uncharged_provider_cost_usd"]) == (0.00000036, 0.0000003)


def test_organization_usage_unknown_org_is_404(teams, admin):
    assert admin.get("/api/organizations/nope/usage").status_code == 404


# --- database aggregation: a constant number of queries ----------------------------------------


def _spread_rows(team, count: int, offset: int = 0) -> None:
    for index in range(offset, offset + count):
        add_job(
            team,
            f"type-{index % 5}",
            [
                (f"model-{index % 6}", CallStatus.SUCCESS, 10, 5, 1000),
                (f"model-{(index + 1) % 6}", CallStatus.ERROR, 0, 0, 0),
            ],
            status=JobStatus.COMPLETED if index % 3 else JobStatus.FAILED,
            at=day_at(index % 12 + 1, 9),  # from yesterday back: today's 09:00 may not have come yet
        )


@pytest.mark.parametrize(
    ("path", "group_by"),
    [
        ("/api/teams/acme-corp/usage", "day"),
        ("/api/teams/acme-corp/usage", "job_type"),
        ("/api/teams/acme-corp/usage", "model"),
        ("/api/organizations/acme/usage", "team"),
        ("/api/organizations/acme/usage", "model"),
    ],
)
def test_query_count_does_not_grow_with_rows(db, admin, path, group_by):
    acme = make_tenant("acme-corp", "acme", credits=1000)
    labs = make_tenant("acme-labs", "acme", credits=1000)
    ops = make_tenant("acme-ops", "acme", credits=1000)

    def measure() -> tuple[int, dict]:
        admin.get(path, {"group_by": group_by})  # warm the key cache / last_used_at
        with CaptureQueriesContext(connection) as queries:
            response = admin.get(path, {"group_by": group_by})
        assert response.status_code == 200, response.content
        return len(queries.captured_queries), response.json()

    # 3 jobs, then 30 (for the organization, spread over three teams).
    for index in range(3):
        _spread_rows(acme.team, 1, offset=index)
    few, small = measure()
    teams = [acme.team] if path.startswith("/api/teams/") else [acme.team, labs.team, ops.team]
    for index in range(3, 30):
        _spread_rows(teams[index % len(teams)], 1, offset=index)
    many, large = measure()

    assert small["summary"]["jobs"] == 3 and large["summary"]["jobs"] == 30
    assert small["summary"]["calls"] == 6 and large["summary"]["calls"] == 60
    assert small["count"] < large["count"]  # more groups too, not only more rows
    assert many == few
    assert many <= 10
