"""The litellm Router built from the registry, shared by every request of this process.

Priority tiers become model groups: the lowest priority of an alias is the group named after the
alias, higher tiers are `<alias>@p<N>` groups wired as litellm fallbacks, so the Router does all
retries, load balancing (by weight within a tier), fallbacks and cooldowns. Registry writes bump
RegistryVersion; each process checks it at most once per REGISTRY_CHECK_INTERVAL_S and rebuilds.
"""

import logging
import time
from dataclasses import dataclass, field

from asgiref.sync import sync_to_async
from django.conf import settings

from models_registry.models import Deployment, RegistryVersion, Status
from models_registry.pricing import Prices, resolve_prices

logger = logging.getLogger(__name__)

REGISTRY_CHECK_INTERVAL_S = 1.0


@dataclass(frozen=True)
class DeploymentInfo:
    deployment_id: int
    alias: str
    litellm_model: str
    priority: int
    prices: Prices | None


@dataclass
class RegistryRouter:
    version: int
    router: object  # litellm.Router (imported lazily: litellm is slow to import)
    deployments: dict[str, DeploymentInfo] = field(default_factory=dict)
    tiers: dict[str, list[str]] = field(default_factory=dict)

    def deployment(self, model_id: str | None) -> DeploymentInfo | None:
        return self.deployments.get(model_id or "")


def tier_group(alias: str, priority: int, lowest: int) -> str:
    return alias if priority == lowest else f"{alias}@p{priority}"


def build_router(version: int) -> RegistryRouter:
    """Read the active registry and build a Router (sync: call it off the event loop)."""
    import litellm
    from litellm import Router

    deployments = list(
        Deployment.objects.filter(alias__status=Status.ACTIVE)
        .select_related("alias")
        .order_by("alias_id", "priority", "position", "id")
    )
    model_list, infos, tiers = [], {}, {}
    by_alias: dict[str, list[Deployment]] = {}
    for deployment in deployments:
        by_alias.setdefault(deployment.alias_id, []).append(deployment)
    for alias, items in by_alias.items():
        lowest = min(item.priority for item in items)
        groups = sorted({item.priority for item in items})
        tiers[alias] = [tier_group(alias, priority, lowest) for priority in groups]
        for item in items:
            model_id = str(item.id)
            params: dict = {
                "model": item.litellm_model,
                "timeout": item.timeout_s,
                "stream_timeout": item.timeout_s,
                "weight": item.weight,
            }
            if item.api_base:
                params["api_base"] = item.api_base
            if item.api_key:
                params["api_key"] = item.api_key  # `os.environ/NAME`: litellm resolves the reference itself
            elif item.api_base:
                params["api_key"] = "sk-no-key-required"  # OpenAI-compatible servers that need none
            model_list.append(
                {
                    "model_name": tier_group(alias, item.priority, lowest),
                    "litellm_params": params,
                    "model_info": {"id": model_id},
                }
            )
            infos[model_id] = DeploymentInfo(
                deployment_id=item.id,
                alias=alias,
                litellm_model=item.litellm_model,
                priority=item.priority,
                prices=resolve_prices(item.litellm_model, item.input_cost_per_token, item.output_cost_per_token),
            )
    fallbacks = [{tiers_[0]: tiers_[1:]} for tiers_ in tiers.values() if len(tiers_) > 1]
    litellm.suppress_debug_info = True
    router = Router(
        model_list=model_list,
        fallbacks=fallbacks,
        num_retries=settings.SAAS_LLM_NUM_RETRIES,
        retry_after=0,
        allowed_fails=settings.SAAS_LLM_ALLOWED_FAILS,
        cooldown_time=settings.SAAS_LLM_COOLDOWN_S,
    )
    return RegistryRouter(version=version, router=router, deployments=infos, tiers=tiers)


def current_version() -> int:
    return RegistryVersion.objects.filter(pk=1).values_list("version", flat=True).first() or 0


class RouterHolder:
    """Per-process cache of the RegistryRouter, rebuilt when the registry version changes."""

    def __init__(self) -> None:
        self._current: RegistryRouter | None = None
        self._checked_at = 0.0

    async def get(self) -> RegistryRouter:
        # No lock: two concurrent rebuilds after a registry change are harmless (same result).
        if self._current is not None and time.monotonic() - self._checked_at < REGISTRY_CHECK_INTERVAL_S:
            return self._current
        version = await sync_to_async(current_version, thread_sensitive=False)()
        if self._current is None or self._current.version != version:
            self._current = await sync_to_async(build_router, thread_sensitive=False)(version)
            logger.info("litellm Router built for registry version %s", version)
        self._checked_at = time.monotonic()
        return self._current

    def reset(self) -> None:
        self._current = None
        self._checked_at = 0.0


router_holder = RouterHolder()
