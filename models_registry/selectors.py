from models_registry.errors import AccessGroupNotFound, AliasNotFound
from models_registry.models import AccessGroup, ModelAlias


def get_alias(name: str) -> ModelAlias:
    alias = ModelAlias.objects.filter(name=name).first()
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
