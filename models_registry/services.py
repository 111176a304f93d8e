"""Registry writes: aliases with their deployments, access groups. Each write bumps the registry
version in the same transaction, so every worker's Router is rebuilt within a second."""

from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F

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


def _replace_deployments(alias: ModelAlias, deployments: list[dict[str, Any]]) -> None:
    alias.deployments.all().delete()
    Deployment.objects.bulk_create(
        [Deployment(alias=alias, position=index, **spec) for index, spec in enumerate(deployments)]
    )


def create_alias(
    *, alias_name: str, deployments: list[dict[str, Any]], access_groups: list[str] | None = None, **fields: Any
) -> ModelAlias:
    """Create an alias with its ordered deployments. Raises AliasExists (409), AccessGroupNotFound (404)."""
    groups = get_access_groups(access_groups or [])
    try:
        with transaction.atomic():
            alias = ModelAlias.objects.create(name=alias_name, **fields)
            _replace_deployments(alias, deployments)
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
    """Replace the given fields; `deployments` and `access_groups` replace the whole list when given."""
    groups = get_access_groups(access_groups) if access_groups is not None else None
    with transaction.atomic():
        for field, value in fields.items():
            setattr(alias, field, value)
        alias.save()
        if deployments is not None:
            _replace_deployments(alias, deployments)
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
