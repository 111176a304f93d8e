"""/api/credits/balance, /api/credits/add, /api/credits/transactions (SPEC §5.5, §3, §4).

Every write is checked in the database (LedgerEntry rows, CreditAccount), not only in the response.
"""

import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from billing import services
from billing.models import CreditAccount, LedgerEntry
from tenants import services as tenant_services
from tenants.models import ApiKey
from tests.conftest import make_tenant

ONE = 10_000
MISMATCH = {"detail": "API key does not belong to team 'globex-eng'", "code": "team_mismatch"}
ADMIN_REQUIRED = {"detail": "This endpoint requires an admin API key", "code": "admin_required"}


def account_of(team) -> CreditAccount:
    return CreditAccount.objects.get(team=team)


def missing(loc: list) -> dict:
    return {"detail": [{"loc": loc, "msg": "field required", "type": "value_error.missing"}]}


# --- authentication (every endpoint) --------------------------------------------------------

ENDPOINTS = [
    ("get", "/api/credits/balance"),
    ("post", "/api/credits/add"),
    ("get", "/api/credits/transactions"),
]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_no_key_is_401(anon, acme, method, path):
    response = getattr(anon, method)(path, {"team_id": "acme-corp"} if method == "get" else None)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"
    assert response.json() == {"detail": "Missing API key: send 'Authorization: Bearer sk-…'"}
    assert LedgerEntry.objects.count() == 1  # only acme's initial allocation


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_revoked_key_is_401(admin, admin_key, acme, method, path):
    tenant_services.revoke_key(key=ApiKey.objects.get(team__isnull=True))
    body = {"team_id": "acme-corp", "amount": 5}
    response = admin.get(path, {"team_id": "acme-corp"}) if method == "get" else admin.post(path, body)
    assert response.status_code == 401
    assert response.json() == {"detail": "API key has been revoked"}
    assert account_of(acme.team).balance_units == 100 * ONE


@pytest.mark.parametrize("header", ["Bearer sk-not-a-real-key-000000000000000000000", "Basic abc", "Bearer"])
def test_unknown_or_malformed_key_is_401(acme, header):
    response = acme.api.client.get("/api/credits/balance", HTTP_AUTHORIZATION=header)
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Bearer"


# --- GET /api/credits/balance ---------------------------------------------------------------


def test_balance_with_team_key(acme):
    response = acme.api.get("/api/credits/balance")
    assert response.status_code == 200
    assert response.json() == {
        "team_id": "acme-corp",
        "credits_allocated": 100.0,
        "credits_used": 0.0,
        "credits_reserved": 0.0,
        "credits_remaining": 100.0,
        "budget_mode": "job",
        "low_balance_threshold": None,
    }


def test_balance_reflects_reservations_and_charges(acme):
    first, second = uuid.uuid4(), uuid.uuid4()
    services.reserve_for_job(team=acme.team, job_id=first)
    services.reserve_for_job(team=acme.team, job_id=second)
    services.settle_job(team=acme.team, job_id=first, charge_units=15_000)

    body = acme.api.get("/api/credits/balance", {"team_id": "acme-corp"}).json()

    # remaining = allocated − used − reserved
    assert (body["credits_allocated"], body["credits_used"], body["credits_reserved"], body["credits_remaining"]) == (
        100.0,
        1.5,
        1.0,
        97.5,
    )


def test_balance_renders_numbers_not_strings(db, admin):
    make_tenant("frac", "frac-org", credits=Decimal("0.0001"), budget_mode="usd", low_balance_threshold=Decimal("12.5"))
    response = admin.get("/api/credits/balance", {"team_id": "frac"})
    assert response.status_code == 200
    raw = response.content.decode()
    assert '"credits_remaining":0.0001' in raw.replace(" ", "")
    body = response.json()
    assert body["budget_mode"] == "usd"
    assert body["low_balance_threshold"] == 12.5
    assert all(isinstance(body[field], float) for field in ("credits_allocated", "credits_remaining"))


def test_balance_admin_with_team_id(admin, acme, globex):
    services.grant_credits(team=globex.team, amount=Decimal("7"), actor="t")
    response = admin.get("/api/credits/balance", {"team_id": "globex-eng"})
    assert response.status_code == 200
    assert response.json()["team_id"] == "globex-eng"
    assert response.json()["credits_remaining"] == 107.0


def test_balance_admin_without_team_id_is_422(admin, acme):
    response = admin.get("/api/credits/balance")
    assert response.status_code == 422
    assert response.json() == missing(["query", "team_id"])


def test_balance_admin_unknown_team_is_404(admin):
    response = admin.get("/api/credits/balance", {"team_id": "nope"})
    assert response.status_code == 404
    assert response.json() == {"detail": "Team 'nope' not found", "code": "team_not_found"}


def test_balance_team_key_naming_another_team_is_403(acme, globex):
    response = acme.api.get("/api/credits/balance", {"team_id": "globex-eng"})
    assert response.status_code == 403
    assert response.json() == MISMATCH


def test_balance_team_key_naming_an_unknown_team_is_403(acme):
    # A team key never learns whether another id exists.
    response = acme.api.get("/api/credits/balance", {"team_id": "ghost"})
    assert response.status_code == 403
    assert response.json() == {"detail": "API key does not belong to team 'ghost'", "code": "team_mismatch"}


def test_balance_bad_team_id_is_422(admin):
    response = admin.get("/api/credits/balance", {"team_id": "Not A Slug!"})
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["query", "team_id"]


def test_balance_is_served_under_v1(acme):
    response = acme.api.get("/api/v1/credits/balance")
    assert response.status_code == 200
    assert response.json()["credits_remaining"] == 100.0


# --- POST /api/credits/add ------------------------------------------------------------------


def test_add_credits_happy_path(admin, admin_key, acme):
    response = admin.post(
        "/api/credits/add", {"team_id": "acme-corp", "amount": "12.3456", "reason": "promo", "kind": "purchase"}
    )

    assert response.status_code == 201
    body = response.json()
    transaction = body.pop("transaction")
    assert body == {"team_id": "acme-corp", "credits_added": 12.3456, "credits_remaining": 112.3456}
    entry = LedgerEntry.objects.get(transaction_id=transaction["transaction_id"])
    assert transaction == {
        "transaction_id": str(entry.transaction_id),
        "team_id": "acme-corp",
        "kind": "purchase",
        "amount": 12.3456,
        "balance_after": 112.3456,
        "job_id": None,
        "reason": "promo",
        "actor": f"api-key:{ApiKey.display_prefix(admin_key)}",
        "created_at": transaction["created_at"],
    }
    assert transaction["created_at"].endswith("Z")
    assert (entry.kind, entry.amount_units, entry.balance_after_units) == ("purchase", 123_456, 1_123_456)
    account = account_of(acme.team)
    assert (account.balance_units, account.allocated_units, account.used_units) == (1_123_456, 1_123_456, 0)


@pytest.mark.parametrize("amount", [5, "5", 5.0, "5.0000", "5e0"])
def test_add_credits_accepts_number_or_numeric_string(admin, acme, amount):
    response = admin.post("/api/credits/add", {"team_id": "acme-corp", "amount": amount})
    assert response.status_code == 201
    assert response.json()["credits_added"] == 5.0
    entry = LedgerEntry.objects.filter(team=acme.team).first()  # newest
    assert (entry.kind, entry.amount_units, entry.reason) == ("grant", 5 * ONE, "")  # default kind: grant


@pytest.mark.parametrize("kind", ["purchase", "grant", "refund"])
def test_add_credits_kinds(admin, acme, kind):
    response = admin.post("/api/credits/add", {"team_id": "acme-corp", "amount": 1, "kind": kind})
    assert response.status_code == 201
    assert response.json()["transaction"]["kind"] == kind
    assert LedgerEntry.objects.filter(team=acme.team, kind=kind, amount_units=ONE).count() == 1


def test_add_credits_boundaries(admin, acme):
    assert admin.post("/api/credits/add", {"team_id": "acme-corp", "amount": "0.0001"}).status_code == 201
    assert admin.post("/api/credits/add", {"team_id": "acme-corp", "amount": 1_000_000_000}).status_code == 201
    assert account_of(acme.team).balance_units == 100 * ONE + 1 + 10**13


def test_add_credits_remaining_accounts_for_holds(admin, acme):
    services.reserve_for_job(team=acme.team, job_id=uuid.uuid4())
    body = admin.post("/api/credits/add", {"team_id": "acme-corp", "amount": 1}).json()
    assert body["credits_remaining"] == 100.0  # 101 − 1 reserved
    assert body["transaction"]["balance_after"] == 101.0


@pytest.mark.parametrize(
    ("amount", "error_type"),
    [
        ("abc", "type_error"),
        ("", "type_error"),
        (True, "type_error"),
        ([5], "type_error"),
        (-5, "value_error.number.not_ge"),
        ("-0.0001", "value_error.number.not_ge"),
        (0, "value_error.number.not_ge"),
        ("0.0000", "value_error.number.not_ge"),
        ("NaN", "type_error"),
        ("Infinity", "type_error"),
        ("-Infinity", "type_error"),
        ("1.00001", "value_error.decimal.max_places"),
        (0.00001, "value_error.decimal.max_places"),
        ("1000000000.0001", None),
        (1e10, None),
        ("1e30", None),
    ],
)
def test_add_credits_bad_amount_is_422(admin, acme, amount, error_type):
    response = admin.post("/api/credits/add", {"team_id": "acme-corp", "amount": amount})

    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "amount"]
    if error_type:
        assert error["type"] == error_type
    assert LedgerEntry.objects.count() == 1
    assert account_of(acme.team).balance_units == 100 * ONE


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_add_credits_bare_json_nan_is_422(admin, acme, literal):
    response = admin.post("/api/credits/add", raw=f'{{"team_id": "acme-corp", "amount": {literal}}}')
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "amount"]
    assert LedgerEntry.objects.count() == 1


def test_add_credits_missing_amount_is_422(admin, acme):
    response = admin.post("/api/credits/add", {"team_id": "acme-corp"})
    assert response.status_code == 422
    assert response.json() == missing(["body", "amount"])


def test_add_credits_unknown_field_is_422(admin, acme):
    response = admin.post("/api/credits/add", {"team_id": "acme-corp", "amount": 5, "amout": 50})
    assert response.status_code == 422
    assert response.json() == {
        "detail": [{"loc": ["body", "amout"], "msg": "extra fields not permitted", "type": "extra_forbidden"}]
    }
    assert LedgerEntry.objects.count() == 1


@pytest.mark.parametrize("kind", ["charge", "adjustment", "gift", "", None, 1])
def test_add_credits_bad_kind_is_422(admin, acme, kind):
    response = admin.post("/api/credits/add", {"team_id": "acme-corp", "amount": 5, "kind": kind})
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "kind"]
    assert LedgerEntry.objects.count() == 1


@pytest.mark.parametrize("reason", ["x" * 501, 5, ["a"]])
def test_add_credits_bad_reason_is_422(admin, acme, reason):
    response = admin.post("/api/credits/add", {"team_id": "acme-corp", "amount": 5, "reason": reason})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "reason"]
    assert LedgerEntry.objects.count() == 1


def test_add_credits_admin_without_team_id_is_422(admin, acme):
    response = admin.post("/api/credits/add", {"amount": 5})
    assert response.status_code == 422
    assert response.json() == missing(["body", "team_id"])
    assert LedgerEntry.objects.count() == 1


def test_add_credits_unknown_team_is_404(admin):
    response = admin.post("/api/credits/add", {"team_id": "nope", "amount": 5})
    assert response.status_code == 404
    assert response.json() == {"detail": "Team 'nope' not found", "code": "team_not_found"}
    assert not LedgerEntry.objects.exists()


@pytest.mark.parametrize(
    "body",
    [
        {"team_id": "acme-corp", "amount": 5},
        {"amount": 5},
        {"team_id": "globex-eng", "amount": 5},
        {"amount": "garbage", "bogus": 1},  # the permission check comes before validation
    ],
)
def test_add_credits_with_team_key_is_403(acme, globex, body):
    response = acme.api.post("/api/credits/add", body)
    assert response.status_code == 403
    assert response.json() == ADMIN_REQUIRED
    assert account_of(acme.team).balance_units == 100 * ONE
    assert account_of(globex.team).balance_units == 100 * ONE
    assert LedgerEntry.objects.count() == 2


def test_add_credits_malformed_json_is_400(admin, acme):
    response = admin.post("/api/credits/add", raw='{"team_id": "acme-corp", "amount": ')
    assert response.status_code == 400
    assert response.json()["code"] == "invalid_request"
    assert LedgerEntry.objects.count() == 1


def test_add_credits_body_not_an_object_is_422(admin, acme):
    response = admin.post("/api/credits/add", [{"team_id": "acme-corp", "amount": 5}])
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body"]
    assert LedgerEntry.objects.count() == 1


def test_add_credits_wrong_content_type_is_400(admin, acme):
    response = admin.post("/api/credits/add", raw="team_id=acme-corp&amount=5", content_type="text/plain")
    assert response.status_code == 400
    assert LedgerEntry.objects.count() == 1


# --- GET /api/credits/transactions ---------------------------------------------------------


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def grant_at(team, amount: str, when: str, reason: str = "") -> LedgerEntry:
    entry = services.grant_credits(team=team, amount=Decimal(amount), actor="t", reason=reason)
    # created_at is auto_now_add: back-date the row for the date filters.
    LedgerEntry.objects.filter(pk=entry.pk).update(created_at=at(when))
    return entry


def reasons(response) -> list[str]:
    assert response.status_code == 200, response.content
    return [row["reason"] for row in response.json()["results"]]


def test_transactions_newest_first_with_full_shape(acme):
    job_id = uuid.uuid4()
    services.reserve_for_job(team=acme.team, job_id=job_id)
    charge = services.settle_job(team=acme.team, job_id=job_id, charge_units=12_345, actor="job", reason="job done")

    response = acme.api.get("/api/credits/transactions")

    assert response.status_code == 200
    body = response.json()
    assert (body["count"], body["next"], body["previous"]) == (2, None, None)
    newest, oldest = body["results"]
    assert newest == {
        "transaction_id": str(charge.transaction_id),
        "team_id": "acme-corp",
        "kind": "charge",
        "amount": -1.2345,
        "balance_after": 98.7655,
        "job_id": str(job_id),
        "reason": "job done",
        "actor": "job",
        "created_at": newest["created_at"],
    }
    assert newest["created_at"].endswith("Z")
    assert (oldest["kind"], oldest["amount"], oldest["balance_after"], oldest["job_id"]) == (
        "grant",
        100.0,
        100.0,
        None,
    )
    assert (oldest["reason"], oldest["actor"]) == ("initial allocation", "tests")


def test_transactions_are_isolated_per_team(admin, acme, globex):
    grant_at(globex.team, "1", "2024-01-01T00:00:00", reason="globex only")

    assert reasons(acme.api.get("/api/credits/transactions")) == ["initial allocation"]
    assert reasons(admin.get("/api/credits/transactions", {"team_id": "globex-eng"})) == [
        "globex only",
        "initial allocation",
    ]
    response = acme.api.get("/api/credits/transactions", {"team_id": "globex-eng"})
    assert response.status_code == 403
    assert response.json() == MISMATCH


def test_transactions_admin_needs_team_id(admin, acme):
    response = admin.get("/api/credits/transactions")
    assert response.status_code == 422
    assert response.json() == missing(["query", "team_id"])


def test_transactions_filter_by_kind_and_job(acme):
    job_a, job_b = uuid.uuid4(), uuid.uuid4()
    for job_id in (job_a, job_b):
        services.reserve_for_job(team=acme.team, job_id=job_id)
        services.settle_job(team=acme.team, job_id=job_id, charge_units=ONE, reason=f"job {job_id}")
    services.grant_credits(team=acme.team, amount=Decimal("3"), kind="refund", actor="t", reason="refund")

    assert reasons(acme.api.get("/api/credits/transactions", {"kind": "charge"})) == [f"job {job_b}", f"job {job_a}"]
    assert reasons(acme.api.get("/api/credits/transactions", {"kind": "refund"})) == ["refund"]
    assert reasons(acme.api.get("/api/credits/transactions", {"kind": "purchase"})) == []
    assert reasons(acme.api.get("/api/credits/transactions", {"job_id": str(job_a)})) == [f"job {job_a}"]
    assert reasons(acme.api.get("/api/credits/transactions", {"job_id": str(uuid.uuid4())})) == []


@pytest.fixture
def dated(acme):
    """acme's allocation on 31 Dec 2023 plus grants around 11 Jan 2024 (reason = when)."""
    LedgerEntry.objects.filter(team=acme.team).update(created_at=at("2023-12-31T12:00:00"))
    grant_at(acme.team, "1", "2024-01-10T12:00:00", reason="jan10")
    grant_at(acme.team, "1", "2024-01-11T00:00:00", reason="jan11-start")
    grant_at(acme.team, "1", "2024-01-11T23:59:59.999999", reason="jan11-end")
    grant_at(acme.team, "1", "2024-01-12T00:00:00", reason="jan12")
    return acme


def listed(tenant, **params) -> list[str]:
    return reasons(tenant.api.get("/api/credits/transactions", params))


def test_transactions_datetime_filters(dated):
    # A datetime end_date includes that instant; start_date is inclusive too.
    assert listed(dated, start_date="2024-01-10T12:00:00Z", end_date="2024-01-11T00:00:00Z") == [
        "jan11-start",
        "jan10",
    ]
    assert listed(dated, end_date="2024-01-10T11:59:59Z") == ["initial allocation"]
    assert listed(dated, start_date="2024-01-11T02:00:00+02:00", end_date="2024-01-11T23:00:00+00:00") == [
        "jan11-start"
    ]
    assert listed(dated, start_date="2024-01-11T23:59:59.999999Z") == ["jan12", "jan11-end"]
    assert listed(dated, start_date="2025-01-01T00:00:00Z") == []
    # start == end (a datetime) is the single instant, not an empty range.
    assert listed(dated, start_date="2024-01-11T00:00:00Z", end_date="2024-01-11T00:00:00Z") == ["jan11-start"]


def test_transactions_date_end_date_is_inclusive(dated):
    # A date end_date is inclusive: the whole of 11 January, nothing of the 12th.
    assert listed(dated, end_date="2024-01-11") == ["jan11-end", "jan11-start", "jan10", "initial allocation"]
    assert listed(dated, start_date="2024-01-11") == ["jan12", "jan11-end", "jan11-start"]
    assert listed(dated, start_date="2024-01-11", end_date="2024-01-11") == ["jan11-end", "jan11-start"]


def test_transactions_naive_datetime_is_utc(dated):
    assert listed(dated, start_date="2024-01-11T00:00:00", end_date="2024-01-11T12:00:00") == ["jan11-start"]


@pytest.mark.parametrize(
    ("params", "loc"),
    [
        ({"start_date": "yesterday"}, ["query", "start_date"]),
        ({"end_date": "2024-13-01"}, ["query", "end_date"]),
        ({"end_date": "2024-02-30"}, ["query", "end_date"]),
        ({"start_date": "2024-01-01T25:00:00"}, ["query", "start_date"]),
        ({"start_date": "2024-01-02T00:00:00Z", "end_date": "2024-01-01T00:00:00Z"}, ["query", "end_date"]),
        pytest.param({"start_date": "2024-01-02", "end_date": "2024-01-01"}, ["query", "end_date"]),
        ({"kind": "bonus"}, ["query", "kind"]),
        ({"job_id": "not-a-uuid"}, ["query", "job_id"]),
        ({"limit": "-1"}, ["query", "limit"]),
        ({"limit": "ten"}, ["query", "limit"]),
        ({"offset": "-5"}, ["query", "offset"]),
        ({"offset": "1.5"}, ["query", "offset"]),
    ],
)
def test_transactions_bad_filters_are_422(acme, params, loc):
    response = acme.api.get("/api/credits/transactions", params)
    assert response.status_code == 422
    assert [error["loc"] for error in response.json()["detail"]] == [loc]


def test_transactions_pagination(acme):
    for index in range(5):
        services.grant_credits(team=acme.team, amount=Decimal("1"), actor="t", reason=f"g{index}")

    first = acme.api.get("/api/credits/transactions", {"limit": 2})
    body = first.json()
    assert body["count"] == 6
    assert [row["reason"] for row in body["results"]] == ["g4", "g3"]
    assert body["previous"] is None
    assert "limit=2" in body["next"] and "offset=2" in body["next"]

    second = acme.api.get("/api/credits/transactions", {"limit": 2, "offset": 2}).json()
    assert [row["reason"] for row in second["results"]] == ["g2", "g1"]
    assert second["previous"] is not None

    last = acme.api.get("/api/credits/transactions", {"limit": 2, "offset": 4}).json()
    assert [row["reason"] for row in last["results"]] == ["g0", "initial allocation"]
    assert last["next"] is None

    assert acme.api.get("/api/credits/transactions", {"offset": 10}).json()["results"] == []
    assert acme.api.get("/api/credits/transactions", {"limit": 0}).status_code == 422
    # Above 1000 is clamped, not refused.
    assert len(acme.api.get("/api/credits/transactions", {"limit": 5000}).json()["results"]) == 6


def test_transactions_default_limit_is_100(db):
    tenant = make_tenant("many", "many-org", credits=1)
    LedgerEntry.objects.bulk_create(
        LedgerEntry(team=tenant.team, kind="grant", amount_units=1, balance_after_units=ONE + i + 1, reason=f"b{i}")
        for i in range(105)
    )
    body = tenant.api.get("/api/credits/transactions").json()
    assert body["count"] == 106
    assert len(body["results"]) == 100
    assert body["results"][0]["reason"] == "b104"
    assert json.dumps(body)  # serialisable as is
