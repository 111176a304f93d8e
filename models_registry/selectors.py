import re

from django.db.models import QuerySet

from models_registry.errors import AccessGroupNotFound, AliasNotFound
from models_registry.models import AccessGroup, ModelAlias, Status
from saas_llm.slugs import SLUG_PATTERN

# Names are slugs: anything else cannot exist and must not reach the database (Postgres rejects a
# NUL byte in a query parameter with an error, a 500 for bad input).
_is_slug = re.compile(SLUG_PATTERN).fullmatch


def get_alias(name: str) -> ModelAlias:
    alias = ModelAlias.objects.filter(name=name).first() if _is_slug(name) else None
    if alias is None:
        raise AliasNotFound(name)
    return alias


def get_access_groups(names: list[str]) -> list[AccessGroup]:
    """The groups named, in the order given; raises AccessGroupNotFound for the first unknown one."""
    found = {group.name: group for group in AccessGroup.objects.filter(name__in=names)}
    for name in names:
        if name not in found:
            raise AccessGroupNotFound(name)
    return [found[name] for name in dict.fromkeys(names)]


def get_aliases(names: list[str]) -> list[ModelAlias]:
    found = {alias.name: alias for alias in ModelAlias.objects.filter(name__in=names)}
    for name in names:
        if name not in found:
            raise AliasNotFound(name)
    return [found[name] for name in dict.fromkeys(names)]


def get_access_group(name: str) -> AccessGroup:
    group = AccessGroup.objects.prefetch_related("aliases").filter(name=name).first() if _is_slug(name) else None
    if group is None:
        raise AccessGroupNotFound(name)
    return group


def get_alias_with_deployments(name: str) -> ModelAlias:
    alias = (
        ModelAlias.objects.prefetch_related("deployments", "access_groups").filter(name=name).first()
        if _is_slug(name)
        else None
    )
    if alias is None:
        raise AliasNotFound(name)
    return alias


def list_aliases() -> QuerySet[ModelAlias]:
    return ModelAlias.objects.prefetch_related("deployments", "access_groups").order_by("name")


def list_allowed_aliases(team_id: str) -> QuerySet[ModelAlias]:
    return (
        ModelAlias.objects.filter(
            status=Status.ACTIVE, access_groups__status=Status.ACTIVE, access_groups__teams__id=team_id
        )
        .distinct()
        .order_by("name")
    )
