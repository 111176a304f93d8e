"""billing/money.py: every conversion, budget mode and rounding edge as a parametrize table.

Rule under test (SPEC §6, STYLE money rules): integers of the smallest unit, exact Decimal
arithmetic, rounded UP once at the end; inputs with more precision than their unit, NaN or
infinity are an AmountError, never a silent rounding.
"""

from decimal import Decimal as D

import pytest

from billing import money
from billing.money import AmountError

BIG_61_DIGITS = "1" * 61  # more significant digits than money.py's working precision (60)


# --- credits ⇄ units --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("credits", "units"),
    [
        ("1", 10_000),
        (1, 10_000),
        (D("0.0001"), 1),  # the smallest unit
        ("0.0001", 1),
        ("1e-4", 1),
        ("123.4567", 1_234_567),
        ("1.50000000", 15_000),  # trailing zeros are not extra precision
        ("0", 0),
        (0, 0),
        ("-2.5", -25_000),  # adjustments may be negative
        ("-0.0001", -1),
        (10**9, 10**13),  # the API maximum
        ("1E+2", 1_000_000),
        ("999999999.9999", 9_999_999_999_999),
        ("1E+30", 10**34),  # huge but few significant digits: exact
        ("9" * 55, int("9" * 55) * 10_000),  # 59 significant digits in units: exact
    ],
)
def test_credits_to_units_is_exact(credits, units):
    assert money.credits_to_units(credits) == units
    assert isinstance(money.credits_to_units(credits), int)


@pytest.mark.parametrize(
    "credits",
    [
        "0.00001",  # 5 decimals: an error, not a rounding (neither down to 0 nor up to 0.0001)
        "1.23456",
        D("1e-5"),
        "0.00019",
        "-0.00001",
        0.1,  # a float is not an exact decimal: Decimal(0.1) has 55 decimals
        "NaN",
        "-NaN",
        "sNaN",
        "Infinity",
        "-Infinity",
        "inf",
        D("NaN"),
        D("-Infinity"),
        "abc",
        "",
        "1,5",
        None,
        BIG_61_DIGITS,  # 65 significant digits once in units: refused, never silently rounded
        BIG_61_DIGITS + ".1234",
        BIG_61_DIGITS + ".00001",
    ],
)
def test_credits_to_units_rejects_inexact_or_non_finite(credits):
    with pytest.raises(AmountError):
        money.credits_to_units(credits)


def test_amount_error_is_a_value_error():
    assert issubclass(AmountError, ValueError)


@pytest.mark.parametrize(
    ("units", "credits"),
    [
        (1, "0.0001"),
        (0, "0.0000"),
        (10_000, "1.0000"),
        (15_000, "1.5000"),
        (-25_000, "-2.5000"),
        (1_234_567, "123.4567"),
        (2**63 - 1, "922337203685477.5807"),  # the largest BigIntegerField value
    ],
)
def test_units_to_credits_has_exactly_four_places(units, credits):
    result = money.units_to_credits(units)
    assert isinstance(result, D)
    assert str(result) == credits
    assert result.as_tuple().exponent == -4
    assert money.credits_to_units(result) == units  # round trip


# --- USD ⇄ nanos ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("usd", "nanos"),
    [
        ("1", 1_000_000_000),
        ("0.000000001", 1),
        ("1e-9", 1),
        ("12.345678912", 12_345_678_912),
        ("0", 0),
        (D("0.10"), 100_000_000),
        ("-0.5", -500_000_000),
        ("1000000000", 10**18),
        ("1" * 55 + ".5", int("1" * 55 + "5") * 10**8),  # huge, trailing zeros only: exact
    ],
)
def test_usd_to_nanos_is_exact(usd, nanos):
    assert money.usd_to_nanos(usd) == nanos
    if abs(nanos) < 2**63:  # what a BigIntegerField can hold round-trips
        assert money.nanos_to_usd(nanos) == D(usd)


@pytest.mark.parametrize(
    "usd",
    [
        "0.0000000001",
        "1.0000000005",
        "NaN",
        "Infinity",
        "-inf",
        "x",
        None,
        0.1,
        "1" * 55 + ".123456789",  # 64 significant digits: must not be silently rounded
    ],
)
def test_usd_to_nanos_rejects_inexact_or_non_finite(usd):
    with pytest.raises(AmountError):
        money.usd_to_nanos(usd)


@pytest.mark.parametrize(("nanos", "usd"), [(1, "0.000000001"), (0, "0"), (1_500_000_000, "1.5"), (-7, "-0.000000007")])
def test_nanos_to_usd_has_exactly_nine_places(nanos, usd):
    result = money.nanos_to_usd(nanos)
    assert result == D(usd)
    assert result.as_tuple().exponent == -9


# --- provider cost ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prompt", "completion", "input_price", "output_price", "nanos"),
    [
        # gpt-4o-mini-like prices: 1000 × 0.15 $/M + 500 × 0.6 $/M = 0.00045 $ exactly
        (1000, 500, D("0.00000015"), D("0.0000006"), 450_000),
        (0, 0, D("0.00000015"), D("0.0000006"), 0),
        (1, 0, D("1e-12"), D("0"), 1),  # 0.001 nano rounds UP to 1, never down to 0
        (0, 1, D("0"), D("0.0000000011"), 2),  # 1.1 nano → 2
        (3, 0, D("0.000000001"), D("0"), 3),  # exact: no rounding at all
        # rounded ONCE: 0.4 + 0.4 = 0.8 nano → 1 (rounding each term up first would give 2)
        (1, 1, D("0.0000000004"), D("0.0000000004"), 1),
        (10**9, 10**9, D("0.00006"), D("0.00012"), 180_000 * 10**9),  # huge: 180 000 $ exactly
    ],
)
def test_token_cost_nanos(prompt, completion, input_price, output_price, nanos):
    assert (
        money.token_cost_nanos(
            prompt_tokens=prompt,
            completion_tokens=completion,
            input_cost_per_token=input_price,
            output_cost_per_token=output_price,
        )
        == nanos
    )


@pytest.mark.parametrize("bad", [D("NaN"), D("Infinity"), D("-Infinity")])
def test_token_cost_nanos_non_finite_price_is_amount_error(bad):
    with pytest.raises(AmountError):
        money.token_cost_nanos(
            prompt_tokens=1, completion_tokens=1, input_cost_per_token=bad, output_cost_per_token=D(0)
        )


# --- markup -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cost", "markup", "price"),
    [
        (100, D("0"), 100),
        (100, D("20"), 120),
        (3, D("50"), 5),  # 4.5 → 5
        (1, D("0.0001"), 2),  # 1.000001 → 2: the smallest markup still rounds up
        (3, D("33.3333"), 4),  # 3.999999 → 4
        (0, D("50"), 0),
        (1, D("100"), 2),
        (10**18, D("12.5"), 1_125 * 10**15),  # huge, exact
        (7, D("-50"), 4),  # a discount also rounds up (3.5 → 4)
    ],
)
def test_apply_markup(cost, markup, price):
    assert money.apply_markup(cost, markup) == price


@pytest.mark.parametrize("bad", [D("NaN"), D("Infinity"), D("-Infinity")])
def test_apply_markup_non_finite_is_amount_error(bad):
    with pytest.raises(AmountError):
        money.apply_markup(100, bad)


# --- budget modes -----------------------------------------------------------------------------

DEFAULTS = {
    "credits_per_job": D("1"),
    "credits_per_dollar": D("10"),
    "tokens_per_credit": 10_000,
    "cost_nanos": 0,
    "total_tokens": 0,
}


@pytest.mark.parametrize(
    ("mode", "overrides", "units"),
    [
        # job: the flat per-job price, whatever the usage
        ("job", {}, 10_000),
        ("job", {"cost_nanos": 10**12, "total_tokens": 10**9}, 10_000),
        ("job", {"credits_per_job": D("0.0001")}, 1),
        ("job", {"credits_per_job": D("2.5")}, 25_000),
        ("job", {"credits_per_job": D("0")}, 0),
        ("job", {"credits_per_job": D("1000000000")}, 10**13),
        # usd: cost_usd × credits_per_dollar
        ("usd", {"cost_nanos": 1_000_000_000}, 100_000),  # 1 $ × 10 = 10 credits
        ("usd", {"cost_nanos": 0}, 0),
        ("usd", {"cost_nanos": 1}, 1),  # 1e-8 credit → one unit, never zero
        ("usd", {"cost_nanos": 100_000}, 10),  # exact 0.001 credit
        ("usd", {"cost_nanos": 100_001}, 11),  # 10.0001 units → 11
        ("usd", {"cost_nanos": 3, "credits_per_dollar": D("0.5")}, 1),
        ("usd", {"cost_nanos": 1_000_000_000, "credits_per_dollar": D("3.3333")}, 33_333),
        ("usd", {"cost_nanos": 10**18}, 10**14),  # 1e9 $ → 1e10 credits
        ("usd", {"cost_nanos": 5, "credits_per_dollar": D("0")}, 0),
        # tokens: total_tokens ÷ tokens_per_credit
        ("tokens", {"total_tokens": 10_000}, 10_000),
        ("tokens", {"total_tokens": 0}, 0),
        ("tokens", {"total_tokens": 1}, 1),
        ("tokens", {"total_tokens": 1, "tokens_per_credit": 3}, 3_334),  # 3333.33… → 3334
        ("tokens", {"total_tokens": 3, "tokens_per_credit": 3}, 10_000),
        ("tokens", {"total_tokens": 1, "tokens_per_credit": 10**12}, 1),
        ("tokens", {"total_tokens": 15_001, "tokens_per_credit": 10_000}, 15_001),
        ("tokens", {"total_tokens": 10**15, "tokens_per_credit": 1}, 10**19),
    ],
)
def test_job_charge_units(mode, overrides, units):
    assert money.job_charge_units(budget_mode=mode, **{**DEFAULTS, **overrides}) == units


def test_job_charge_units_unknown_mode():
    with pytest.raises(ValueError, match="unknown budget mode"):
        money.job_charge_units(budget_mode="credits", **DEFAULTS)


@pytest.mark.parametrize(
    ("mode", "overrides"),
    [
        ("job", {"credits_per_job": D("0.00001")}),  # too many decimals: no silent rounding
        ("job", {"credits_per_job": D("NaN")}),
        ("job", {"credits_per_job": D("Infinity")}),
        ("usd", {"cost_nanos": 5, "credits_per_dollar": D("NaN")}),
        ("usd", {"cost_nanos": 5, "credits_per_dollar": D("Infinity")}),
    ],
)
def test_job_charge_units_bad_configuration_is_amount_error(mode, overrides):
    with pytest.raises(AmountError):
        money.job_charge_units(budget_mode=mode, **{**DEFAULTS, **overrides})


def test_usd_mode_rounds_once_not_per_step():
    # 1 nano at 1.5 credits/$ with a 50 % markup: markup rounds 1.5 → 2 nanos (one rounding per value),
    # then 2 nanos × 1.5 credits/$ = 3e-9 credits = 3e-5 units → 1 unit.
    price = money.apply_markup(1, D("50"))
    assert price == 2
    assert (
        money.job_charge_units(budget_mode="usd", **{**DEFAULTS, "credits_per_dollar": D("1.5"), "cost_nanos": price})
        == 1
    )


# --- reservations -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "per_job", "minimum", "units"),
    [
        ("job", D("1"), D("5"), 10_000),  # job mode holds the per-job price
        ("job", D("2.5"), D("0"), 25_000),
        ("usd", D("1"), D("5"), 50_000),  # usage modes hold the minimum reservation
        ("tokens", D("1"), D("0.0001"), 1),
        ("tokens", D("9"), D("0"), 0),
    ],
)
def test_reservation_units(mode, per_job, minimum, units):
    assert money.reservation_units(budget_mode=mode, credits_per_job=per_job, min_reservation=minimum) == units


def test_reservation_units_too_many_decimals():
    with pytest.raises(AmountError):
        money.reservation_units(budget_mode="usd", credits_per_job=D("1"), min_reservation=D("0.00001"))
