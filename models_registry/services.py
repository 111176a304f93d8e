"""Registry writes: aliases with their deployments, access groups. Each write bumps the registry
version in the same transaction, so every worker's Router is rebuilt within a second."""

from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from models_registry.errors import AccessGroupExists, AliasExists
from models_registry.models import AccessGroup, Deployment, ModelAlias, RegistryVersion
from models_registry.selectors import get_access_groups, get_aliases

ALIAS_FIELDS = ("display_name", "description", "status")
GROUP_FIELDS = ("display_name", "description", "status")


def bump_registry_version() -> None:
    """Inside the caller's transaction: the new version becomes visible with the change itself."""
    updated = RegistryVersion.objects.filter(pk=1).update(version=F("version") + 1)
    if not updated:
        RegistryVersion.objects.get_or_create(pk=1, defaults={"version": 1})


DEPLOYMENT_FIELDS = (
    "api_base",
    "api_key",
    "priority",
    "weight",
    "timeout_s",
    "input_cost_per_token",
    "output_cost_per_token",
)


def _set_deployments(alias: ModelAlias, specs: list[dict[str, Any]]) -> None:
    """Make the alias's live deployments be `specs`, in order, updating in place.

    A spec takes over the first unmatched live deployment with the same `litellm_model` and
    `api_base` (its id, the calls it served and its routing state stay); the others are created.
    Live deployments no spec took over are retired, never deleted: calls keep their deployment.
    """
    unmatched = list(alias.deployments.order_by("position", "id"))
    now = timezone.now()
    for position, spec in enumerate(specs):
        key = (spec["litellm_model"], spec.get("api_base") or "")
        deployment = next((d for d in unmatched if (d.litellm_model, d.api_base) == key), None)
        if deployment is None:
            Deployment.objects.create(alias=alias, position=position, **spec)
            continue
        unmatched.remove(deployment)
        deployment.position = position
        for name in DEPLOYMENT_FIELDS:  # a field the spec leaves out goes back to its default
            setattr(deployment, name, spec[name] if name in spec else Deployment._meta.get_field(name).get_default())
        deployment.save()
    Deployment.objects.filter(pk__in=[deployment.pk for deployment in unmatched]).update(retired_at=now)


def create_alias(
    *, alias_name: str, deployments: list[dict[str, Any]], access_groups: list[str] | None = None, **fields: Any
) -> ModelAlias:
    """Create an alias with its ordered deployments. Raises AliasExists (409), AccessGroupNotFound (404)."""
    groups = get_access_groups(access_groups or [])
    try:
        with transaction.atomic():
            alias = ModelAlias.objects.create(name=alias_name, **fields)
            _set_deployments(alias, deployments)
            for group in groups:
                group.aliases.add(alias)
            bump_registry_version()
    except IntegrityError:
        raise AliasExists(alias_name) from None
    return alias


def update_alias(
    *,
    alias: ModelAlias,
    deployments: list[dict[str, Any]] | None = None,
    access_groups: list[str] | None = None,
    **fields: Any,
) -> ModelAlias:
    """Replace the given fields; `deployments` and `access_groups` replace the whole list when given
    (deployments are updated in place where they match, see `_set_deployments`)."""
    groups = get_access_groups(access_groups) if access_groups is not None else None
    with transaction.atomic():
        for field, value in fields.items():
            setattr(alias, field, value)
        alias.save()
        if deployments is not None:
            _set_deployments(alias, deployments)
        if groups is not None:
            alias.access_groups.set(groups)
        bump_registry_version()
    return alias


def create_access_group(*, group_name: str, model_aliases: list[str] | None = None, **fields: Any) -> AccessGroup:
    """Create a group of aliases. Raises AccessGroupExists (409), AliasNotFound (404)."""
    aliases = get_aliases(model_aliases or [])
    try:
        with transaction.atomic():
            group = AccessGroup.objects.create(name=group_name, **fields)
            group.aliases.set(aliases)
            bump_registry_version()
    except IntegrityError:
        raise AccessGroupExists(group_name) from None
    return group


def update_access_group(*, group: AccessGroup, model_aliases: list[str] | None = None, **fields: Any) -> AccessGroup:
    aliases = get_aliases(model_aliases) if model_aliases is not None else None
    with transaction.atomic():
        for field, value in fields.items():
            setattr(group, field, value)
        group.save()
        if aliases is not None:
            group.aliases.set(aliases)
        bump_registry_version()
    return group
