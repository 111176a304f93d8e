"""The litellm Router built from the registry, shared by every request of this process.

Each alias is one litellm model group; a deployment's priority is litellm's `order` (lowest tier
first, same tier load-balanced by weight), so the Router does all retries, fallbacks to the next
tier and cooldowns. Registry writes bump RegistryVersion; each process checks it at most once per
REGISTRY_CHECK_INTERVAL_S, builds a new Router for a new version and swaps it in whole. A call for
an alias the current Router does not know (created a moment ago) checks the version at once
instead of failing: a registry change never fails a call.
"""

import logging
import threading
import time
from dataclasses import dataclass, field

from django.conf import settings
from django.core.exceptions import ValidationError

from models_registry.credentials import validate_api_key_reference
from models_registry.models import Deployment, RegistryVersion, Status
from models_registry.pricing import Prices, resolve_prices
from saas_llm.db import db_sync_to_async

logger = logging.getLogger(__name__)

REGISTRY_CHECK_INTERVAL_S = 1.0


@dataclass(frozen=True)
class DeploymentInfo:
    deployment_id: int
    alias: str
    litellm_model: str
    priority: int
    prices: Prices | None


class NoDeployment(Exception):
    """The alias has no deployment this process can route to (inactive, or none routable)."""


@dataclass
class RegistryRouter:
    version: int
    router: object  # litellm.Router (imported lazily: litellm is slow to import)
    deployments: dict[str, DeploymentInfo] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.aliases = frozenset(info.alias for info in self.deployments.values())

    def deployment(self, model_id: str | None) -> DeploymentInfo | None:
        return self.deployments.get(model_id or "")

    def check_routable(self, alias: str) -> None:
        if alias not in self.aliases:
            raise NoDeployment(alias)


def is_routable(litellm_model: str) -> bool:
    """Whether litellm knows which provider serves this model string ("openai/x", "gpt-4o", …)."""
    import litellm

    if not litellm_model or not litellm_model.isprintable() or litellm_model.endswith("/"):
        return False
    try:
        litellm.get_llm_provider(litellm_model)
    except Exception:  # litellm raises BadRequestError for a model it cannot route
        return False
    return True


def registry_model_list() -> tuple[list[dict], dict[str, DeploymentInfo]]:
    """litellm model_list entries for every deployment of an active alias (sync: DB reads)."""
    deployments = Deployment.objects.filter(alias__status=Status.ACTIVE).order_by(
        "alias_id", "priority", "position", "id"
    )
    model_list, infos = [], {}
    for item in deployments:
        if not is_routable(item.litellm_model):
            # One bad row (e.g. written through the admin) must not take down every alias.
            logger.error(
                "deployment %s of %s skipped: litellm cannot route %r", item.id, item.alias_id, item.litellm_model
            )
            continue
        try:
            # Again here: a row written before the allowlist (or by hand) must not send a server
            # setting, or a literal secret, to a provider.
            validate_api_key_reference(item.api_key)
        except ValidationError as exc:
            logger.error("deployment %s of %s skipped: api_key %s", item.id, item.alias_id, exc.messages[0])
            continue
        # Stable ids (the row's pk): litellm keys its per-deployment state and price map on them.
        model_id = str(item.id)
        params: dict = {
            "model": item.litellm_model,
            "order": item.priority,
            "weight": item.weight,
            "timeout": item.timeout_s,
            "stream_timeout": item.timeout_s,
        }
        if item.api_base:
            params["api_base"] = item.api_base
        if item.api_key:
            params["api_key"] = item.api_key  # `os.environ/NAME`: litellm resolves the reference itself
        elif item.api_base:
            params["api_key"] = "sk-no-key-required"  # OpenAI-compatible servers that need none
        prices = resolve_prices(item.litellm_model, item.input_cost_per_token, item.output_cost_per_token)
        if prices is not None:
            # The gateway prices calls itself (exact Decimal); litellm is told the same rates so its
            # own per-call cost bookkeeping finds them at once instead of searching its price map.
            params["input_cost_per_token"] = float(prices.input_cost_per_token)
            params["output_cost_per_token"] = float(prices.output_cost_per_token)
        model_list.append({"model_name": item.alias_id, "litellm_params": params, "model_info": {"id": model_id}})
        infos[model_id] = DeploymentInfo(
            deployment_id=item.id,
            alias=item.alias_id,
            litellm_model=item.litellm_model,
            priority=item.priority,
            prices=prices,
        )
    return model_list, infos


def build_router(version: int) -> RegistryRouter:
    """A new Router for the registry at `version` (sync: call it off the event loop).

    Always a new instance, swapped in whole: updating a Router in place (`set_model_list`) while
    other requests are routing through it makes some of them fail.
    """
    import litellm
    from litellm import Router
    from litellm.types.router import RetryPolicy

    model_list, infos = registry_model_list()
    litellm.suppress_debug_info = True
    router = Router(
        model_list=model_list,
        num_retries=settings.SAAS_LLM_NUM_RETRIES,
        retry_after=0,
        allowed_fails=settings.SAAS_LLM_ALLOWED_FAILS,
        cooldown_time=settings.SAAS_LLM_COOLDOWN_S,
        # A provider's 400 (bad parameters) goes back to the client: no retry, no fallback.
        fallback_on_unsupported_params=False,
        # A timed-out attempt is not retried on its tier (the next tier still is tried): litellm
        # sleeps an exponential backoff (~0.5 s·2ⁿ + jitter) between retries of a lone deployment,
        # which would push a timeout past the (retries + 1) × timeout_s + 1 s of SPEC §5.2.
        retry_policy=RetryPolicy(TimeoutErrorRetries=0),
    )
    return RegistryRouter(version=version, router=router, deployments=infos)


def current_version() -> int:
    return RegistryVersion.objects.filter(pk=1).values_list("version", flat=True).first() or 0


class RouterHolder:
    """Per-process cache of the RegistryRouter, rebuilt when the registry version changes."""

    def __init__(self) -> None:
        self._current: RegistryRouter | None = None
        self._checked_at = 0.0
        self._refreshing = False
        self._lock = threading.Lock()

    async def get(self, alias: str | None = None) -> RegistryRouter:
        """The current Router; checked against the registry version at most once per interval, and
        at once when it does not know `alias`."""
        current = self._current
        if current is not None and (alias is None or alias in current.aliases):
            if time.monotonic() - self._checked_at < REGISTRY_CHECK_INTERVAL_S or self._refreshing:
                return current  # fresh, or another request of this process is checking right now
        self._refreshing = True
        try:
            return await db_sync_to_async(self._refresh)()
        finally:
            self._refreshing = False

    def check_due(self) -> bool:
        return time.monotonic() - self._checked_at >= REGISTRY_CHECK_INTERVAL_S

    def observe(self, version: int) -> None:
        """The registry version, read by a caller in its own database step (an LLM call's admission):
        the check `get` would otherwise make in a step of its own. A new version is built by `get`."""
        if self._current is not None and self._current.version == version:
            self._checked_at = time.monotonic()

    def _refresh(self) -> RegistryRouter:
        """Read the version and build a Router for it if it is new (sync, off the event loop). One
        build at a time: concurrent callers wait for it and then find it current."""
        version = current_version()
        with self._lock:
            if self._current is None or self._current.version != version:
                # Built completely before it is swapped in; in-flight calls finish on the old one.
                self._current = build_router(version)
                logger.info("litellm Router built for registry version %s", version)
            self._checked_at = time.monotonic()
            return self._current

    def reset(self) -> None:
        self._current = None
        self._checked_at = 0.0
        self._refreshing = False


router_holder = RouterHolder()
