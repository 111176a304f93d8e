"""The LLM-call path's statements on the registry's tables (see saas_llm/sql.py for why they are raw)."""

from django.db import connection

from models_registry.models import AccessGroup, ModelAlias, Status
from saas_llm import sql


def _may_use_query() -> str:
    aliases = AccessGroup.aliases.through  # access group ↔ alias
    teams = AccessGroup.teams.through  # access group ↔ team (declared on Team)
    group_of_alias = sql.qn(aliases._meta.get_field("accessgroup").column)
    alias_of_group = sql.qn(aliases._meta.get_field("modelalias").column)
    group_of_team = sql.qn(teams._meta.get_field("accessgroup").column)
    team_of_group = sql.qn(teams._meta.get_field("team").column)
    return (
        f"SELECT 1 FROM {sql.table(ModelAlias)} a "
        f"JOIN {sql.table(aliases)} ga ON ga.{alias_of_group} = a.{sql.column(ModelAlias, 'name')} "
        f"JOIN {sql.table(AccessGroup)} g ON g.{sql.column(AccessGroup, 'name')} = ga.{group_of_alias} "
        f"JOIN {sql.table(teams)} tg ON tg.{group_of_team} = g.{sql.column(AccessGroup, 'name')} "
        f"WHERE a.{sql.column(ModelAlias, 'name')} = %s AND a.{sql.column(ModelAlias, 'status')} = %s "
        f"AND g.{sql.column(AccessGroup, 'status')} = %s AND tg.{team_of_group} = %s LIMIT 1"
    )


def team_may_use(team_id: str, alias_name: str) -> bool:
    """A team may call an alias only through one of its active groups containing that active alias."""
    with connection.cursor() as cursor:
        cursor.execute(_may_use_query(), [alias_name, Status.ACTIVE, Status.ACTIVE, team_id])
        return cursor.fetchone() is not None
