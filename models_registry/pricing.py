"""Per-token prices: the deployment's own override, else litellm's bundled price map. Exact Decimals.

A model without a known price is reported as unpriced (cost 0, flagged), never given an invented price.
"""

import functools
import json
import logging
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from billing import money

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prices:
    input_cost_per_token: Decimal
    output_cost_per_token: Decimal
    source: str  # "deployment" or "litellm"

    def snapshot(self) -> dict:
        return {
            "input_cost_per_token": str(self.input_cost_per_token),
            "output_cost_per_token": str(self.output_cost_per_token),
            "source": self.source,
        }


@functools.cache
def bundled_price_keys() -> frozenset[str]:
    """The models litellm ships prices for. Read from its bundled file, because a Router registers
    price-less entries for every deployment in `litellm.model_cost` (an unknown model would then look
    free instead of unpriced)."""
    import litellm

    path = Path(litellm.__file__).parent / "model_prices_and_context_window_backup.json"
    return frozenset(json.loads(path.read_text()))


@functools.lru_cache(maxsize=1024)
def price_map_prices(litellm_model: str) -> Prices | None:
    """litellm's bundled price for a model string, or None when it has none."""
    import litellm

    try:
        info = litellm.get_model_info(litellm_model)
    except Exception:  # litellm raises ModelNotMappedError for models it does not know
        return None
    if info.get("key") not in bundled_price_keys():
        return None
    prompt, completion = info.get("input_cost_per_token"), info.get("output_cost_per_token")
    if prompt is None or completion is None:
        return None
    # str() first: the map holds floats; Decimal(float) would carry binary noise into the price.
    return Prices(Decimal(str(prompt)), Decimal(str(completion)), "litellm")


def resolve_prices(
    litellm_model: str, input_cost_per_token: Decimal | None, output_cost_per_token: Decimal | None
) -> Prices | None:
    if input_cost_per_token is not None and output_cost_per_token is not None:
        return Prices(input_cost_per_token, output_cost_per_token, "deployment")
    base = price_map_prices(litellm_model)
    if base is None:
        if input_cost_per_token is None and output_cost_per_token is None:
            return None
        return Prices(input_cost_per_token or Decimal(0), output_cost_per_token or Decimal(0), "deployment")
    return Prices(
        input_cost_per_token if input_cost_per_token is not None else base.input_cost_per_token,
        output_cost_per_token if output_cost_per_token is not None else base.output_cost_per_token,
        "deployment" if input_cost_per_token is not None or output_cost_per_token is not None else "litellm",
    )


@dataclass(frozen=True)
class CallCost:
    provider_cost_nanos: int
    cost_nanos: int
    unpriced: bool
    snapshot: dict


def price_call(
    *, prices: Prices | None, prompt_tokens: int, completion_tokens: int, markup_percent: Decimal, model: str
) -> CallCost:
    """Provider cost and client cost (with the team's markup) of one call, in nanos."""
    if prices is None:
        if prompt_tokens or completion_tokens:
            logger.warning("no price known for model %s: call recorded with cost 0 and unpriced=true", model)
        return CallCost(0, 0, True, {"source": "unpriced", "markup_percent": str(markup_percent)})
    provider = money.token_cost_nanos(
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        input_cost_per_token=prices.input_cost_per_token,
        output_cost_per_token=prices.output_cost_per_token,
    )
    return CallCost(
        provider,
        money.apply_markup(provider, markup_percent),
        False,
        {**prices.snapshot(), "markup_percent": str(markup_percent)},
    )
