"""All credit and USD arithmetic. Pure functions, no I/O.

Units (integers, so sums are exact in SQLite and Postgres alike):
  * credits are stored in *credit units*: 1 credit = 10_000 units (4 decimal places);
  * USD is stored in *nanos*: 1 USD = 1_000_000_000 nanos (9 decimal places).

Rounding rule — the only one in the project: whenever a result has more precision than its
unit, it is rounded UP (towards +infinity) to the next unit, once, at the end of the exact
Decimal computation. A charge is therefore never under-stated; at most one unit (0.0001 credit
or 1e-9 USD) is added per rounded value.
"""

from decimal import ROUND_CEILING, Decimal, Inexact, InvalidOperation, localcontext

CREDIT_UNITS = 10_000
CREDIT_DECIMALS = 4
NANOS_PER_USD = 1_000_000_000
USD_DECIMALS = 9
MAX_CREDITS = Decimal(10) ** 9


class AmountError(ValueError):
    """A value that cannot be represented exactly in its unit (too many decimals, NaN, infinite)."""


def _exact(value: Decimal | int | str) -> Decimal:
    try:
        result = Decimal(value) if not isinstance(value, Decimal) else value
    except (InvalidOperation, ValueError, TypeError):
        raise AmountError(f"not a number: {value!r}") from None
    if not result.is_finite():
        raise AmountError("must be a finite number")
    return result


def _ceil(value: Decimal) -> int:
    if not value.is_finite():
        # A NaN/infinite price, markup or rate must not surface as a bare ValueError/OverflowError.
        raise AmountError("must be a finite number")
    with localcontext() as ctx:
        ctx.prec = 60
        return int(value.to_integral_value(rounding=ROUND_CEILING))


def _scale_exactly(value: Decimal, factor: int) -> Decimal:
    # Beyond the working precision the product would be rounded silently: refuse instead.
    with localcontext() as ctx:
        ctx.prec = 60
        ctx.traps[Inexact] = True
        try:
            return value * factor
        except Inexact:
            raise AmountError("too many significant digits") from None


def credits_to_units(credits: Decimal | int | str) -> int:
    """Exact conversion; more than 4 decimal places is an error, not a rounding."""
    value = _exact(credits)
    units = _scale_exactly(value, CREDIT_UNITS)
    if units != units.to_integral_value():
        raise AmountError(f"credits have at most {CREDIT_DECIMALS} decimal places")
    return int(units)


def units_to_credits(units: int) -> Decimal:
    return (Decimal(units) / CREDIT_UNITS).quantize(Decimal(1).scaleb(-CREDIT_DECIMALS))


def usd_to_nanos(usd: Decimal | int | str) -> int:
    value = _exact(usd)
    nanos = _scale_exactly(value, NANOS_PER_USD)
    if nanos != nanos.to_integral_value():
        raise AmountError(f"USD amounts have at most {USD_DECIMALS} decimal places")
    return int(nanos)


def nanos_to_usd(nanos: int) -> Decimal:
    return (Decimal(nanos) / NANOS_PER_USD).quantize(Decimal(1).scaleb(-USD_DECIMALS))


def token_cost_nanos(
    *, prompt_tokens: int, completion_tokens: int, input_cost_per_token: Decimal, output_cost_per_token: Decimal
) -> int:
    """Provider cost of a call in nanos, from per-token USD prices; rounded up once."""
    with localcontext() as ctx:
        ctx.prec = 60
        usd = Decimal(prompt_tokens) * input_cost_per_token + Decimal(completion_tokens) * output_cost_per_token
        return _ceil(usd * NANOS_PER_USD)


def apply_markup(provider_cost_nanos: int, markup_percent: Decimal) -> int:
    """Client price = provider cost × (1 + markup/100), rounded up to the nano."""
    with localcontext() as ctx:
        ctx.prec = 60
        return _ceil(Decimal(provider_cost_nanos) * (Decimal(100) + markup_percent) / Decimal(100))


def job_charge_units(
    *,
    budget_mode: str,
    credits_per_job: Decimal,
    credits_per_dollar: Decimal,
    tokens_per_credit: int,
    cost_nanos: int,
    total_tokens: int,
) -> int:
    """Credits (in units) a completed job costs in its team's budget mode; rounded up."""
    with localcontext() as ctx:
        ctx.prec = 60
        if budget_mode == "job":
            return credits_to_units(credits_per_job)
        if budget_mode == "usd":
            return _ceil(Decimal(cost_nanos) * credits_per_dollar * CREDIT_UNITS / NANOS_PER_USD)
        if budget_mode == "tokens":
            return _ceil(Decimal(total_tokens) * CREDIT_UNITS / Decimal(tokens_per_credit))
    raise ValueError(f"unknown budget mode {budget_mode!r}")


def reservation_units(*, budget_mode: str, credits_per_job: Decimal, min_reservation: Decimal) -> int:
    """What creating a job reserves: the per-job price, or the minimum reservation in usage modes."""
    return credits_to_units(credits_per_job if budget_mode == "job" else min_reservation)
