"""Tenant use cases: organizations, teams, keys. Every writer of these rows lives here."""

from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db import IntegrityError, transaction
from django.utils import timezone

from billing import services as billing_services
from models_registry import selectors as registry_selectors
from tenants.errors import OrganizationExists, TeamExists
from tenants.models import ApiKey, Organization, Team, TeamStatus, generate_raw_key, hash_key
from tenants.selectors import get_organization

TEAM_CONFIG_FIELDS = (
    "team_alias",
    "budget_mode",
    "credits_per_job",
    "credits_per_dollar",
    "tokens_per_credit",
    "min_reservation",
    "markup_percent",
    "rpm_limit",
    "tpm_limit",
    "max_parallel_requests",
    "low_balance_threshold",
    "store_prompts",
    "expose_models",
    "charge_failed_jobs",
    "metadata",
)


def create_organization(*, organization_id: str, name: str, metadata: dict | None = None) -> Organization:
    """Create an organization. Raises OrganizationExists (409)."""
    try:
        with transaction.atomic():
            return Organization.objects.create(id=organization_id, name=name, metadata=metadata or {})
    except IntegrityError:
        raise OrganizationExists(organization_id) from None


def create_team(
    *,
    team_id: str,
    organization_id: str,
    access_groups: list[str] | None = None,
    default_model: str | None = None,
    credits_allocated: Decimal = Decimal(0),
    actor: str = "system",
    key_name: str = "default",
    **config: Any,
) -> tuple[Team, str]:
    """Create a team with its first virtual key and its initial credit grant (one transaction).

    Returns (team, raw_key); the raw key is never stored. Raises 404 for an unknown
    organization, access group or default alias, TeamExists (409) for a duplicate id.
    """
    organization = get_organization(organization_id)
    groups = registry_selectors.get_access_groups(access_groups or [])
    alias = registry_selectors.get_alias(default_model) if default_model else None
    unknown = set(config) - set(TEAM_CONFIG_FIELDS)
    if unknown:
        raise TypeError(f"unknown team fields: {sorted(unknown)}")
    try:
        with transaction.atomic():
            team = Team.objects.create(id=team_id, organization=organization, default_model=alias, **config)
            team.access_groups.set(groups)
            _, raw_key = issue_key(team=team, name=key_name)
            billing_services.open_account(team=team)
            if credits_allocated:
                billing_services.grant_credits(
                    team=team,
                    amount=credits_allocated,
                    kind="grant",
                    reason="initial allocation",
                    actor=actor,
                    reference=f"team-create:{team.id}",
                )
    except IntegrityError:
        if Team.objects.filter(id=team_id).exists():
            raise TeamExists(team_id) from None
        raise
    return team, raw_key


def update_team(
    *,
    team: Team,
    access_groups: list[str] | None = None,
    default_model: str | None | type[Ellipsis] = ...,
    **config: Any,
) -> Team:
    """Partial update of a team's configuration (credits change only through the ledger)."""
    unknown = set(config) - set(TEAM_CONFIG_FIELDS)
    if unknown:
        raise TypeError(f"unknown team fields: {sorted(unknown)}")
    groups = registry_selectors.get_access_groups(access_groups) if access_groups is not None else None
    with transaction.atomic():
        for field, value in config.items():
            setattr(team, field, value)
        if default_model is not ...:
            team.default_model = registry_selectors.get_alias(default_model) if default_model else None
        team.save()
        if groups is not None:
            team.access_groups.set(groups)
    return team


def set_team_status(*, team: Team, status: TeamStatus) -> Team:
    """Suspend or resume a team. Idempotent."""
    Team.objects.filter(pk=team.pk).exclude(status=status).update(status=status, updated_at=timezone.now())
    team.refresh_from_db(fields=["status", "updated_at"])
    return team


def issue_key(*, team: Team | None, name: str = "default", expires_at: datetime | None = None) -> tuple[ApiKey, str]:
    """Create a key (team-bound, or admin when team is None). Returns (row, raw key shown once)."""
    raw_key = generate_raw_key()
    key = ApiKey.objects.create(
        team=team, name=name, key_hash=hash_key(raw_key), prefix=ApiKey.display_prefix(raw_key), expires_at=expires_at
    )
    return key, raw_key


def revoke_key(*, key: ApiKey) -> ApiKey:
    """Revoke a key; effective on the next request everywhere (keys are not cached). Idempotent."""
    ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    key.refresh_from_db(fields=["revoked_at"])
    return key
