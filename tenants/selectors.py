import re

from django.db.models import QuerySet

from saas_llm.slugs import SLUG_PATTERN
from tenants.errors import KeyNotFound, OrganizationNotFound, TeamNotFound
from tenants.models import ApiKey, Organization, Team

# Ids are slugs: anything else cannot exist, and must not reach the database (Postgres rejects
# a NUL byte in a query parameter with an error, which would be a 500 for bad input).
_is_slug = re.compile(SLUG_PATTERN).fullmatch


def get_organization(organization_id: str) -> Organization:
    organization = Organization.objects.filter(id=organization_id).first() if _is_slug(organization_id) else None
    if organization is None:
        raise OrganizationNotFound(organization_id)
    return organization


def get_team(team_id: str) -> Team:
    team = (
        Team.objects.select_related("organization", "default_model").filter(id=team_id).first()
        if _is_slug(team_id)
        else None
    )
    if team is None:
        raise TeamNotFound(team_id)
    return team


def list_teams(*, organization: Organization) -> QuerySet[Team]:
    return Team.objects.filter(organization=organization).order_by("id")


def list_keys(*, team: Team) -> QuerySet[ApiKey]:
    return ApiKey.objects.filter(team=team).order_by("created_at", "id")


def get_key(*, team: Team, key_id: str) -> ApiKey:
    key = ApiKey.objects.filter(team=team, id=key_id).first()
    if key is None:
        raise KeyNotFound()
    return key
