"""Bearer-key authentication and team scoping (SPEC §3).

Keys are looked up by SHA-256 hash on every request — no cache, so a revocation is seen by
every worker on the very next request. `last_used_at` is written at most once per
SAAS_LLM_KEY_TOUCH_INTERVAL_S per key, never on every request.
"""

from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db.models import Q
from django.utils import timezone
from rest_framework.authentication import BaseAuthentication
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from saas_llm.errors import AdminKeyRequired, RequestValidationError, TeamMismatch, Unauthorized
from tenants.models import KEY_PREFIX, ApiKey, Team, hash_key
from tenants.selectors import get_team
from tenants.sql import key_with_team


@dataclass(frozen=True)
class Principal:
    """Who is calling: an admin key, or a key bound to one team."""

    key: ApiKey

    is_authenticated = True

    @property
    def is_admin(self) -> bool:
        return self.key.is_admin

    @property
    def team(self) -> Team | None:
        return self.key.team


def parse_bearer(header: str | None) -> str:
    if not header:
        raise Unauthorized("Missing API key: send 'Authorization: Bearer sk-…'")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token.startswith(KEY_PREFIX) or len(token) > 256:
        raise Unauthorized("Malformed Authorization header: expected 'Bearer sk-…'")
    return token


def resolve_api_key(raw_key: str) -> Principal:
    """Return the principal for a raw key; raises Unauthorized if unknown, expired or revoked."""
    now = timezone.now()
    key = key_with_team(hash_key(raw_key))
    if key is None:
        raise Unauthorized("Invalid API key")
    if key.revoked_at is not None:
        raise Unauthorized("API key has been revoked")
    if key.expires_at is not None and key.expires_at <= now:
        raise Unauthorized("API key has expired")
    _touch(key, now)
    return Principal(key)


def _touch(key: ApiKey, now) -> None:
    interval = timedelta(seconds=settings.SAAS_LLM_KEY_TOUCH_INTERVAL_S)
    if key.last_used_at is not None and now - key.last_used_at < interval:
        return
    # Conditional update: concurrent requests of the same key write at most once per interval.
    ApiKey.objects.filter(pk=key.pk).filter(Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - interval)).update(
        last_used_at=now
    )
    key.last_used_at = now


class ApiKeyAuthentication(BaseAuthentication):
    def authenticate(self, request: Request):
        principal = resolve_api_key(parse_bearer(request.headers.get("Authorization")))
        return principal, principal

    def authenticate_header(self, request: Request) -> str:
        return "Bearer"


class IsApiKey(BasePermission):
    def has_permission(self, request, view) -> bool:
        return isinstance(request.auth, Principal)


class IsAdminKey(BasePermission):
    def has_permission(self, request, view) -> bool:
        if not isinstance(request.auth, Principal):
            return False
        if not request.auth.is_admin:
            raise AdminKeyRequired()
        return True


def acting_team(principal: Principal, team_id: str | None, *, location: str = "body") -> Team:
    """The team a request acts on: the key's own team, or `team_id` for admin keys.

    Raises 422 when an admin key omits team_id, 403 when a team key names another team,
    404 when an admin key names an unknown team.
    """
    if principal.is_admin:
        if not team_id:
            raise RequestValidationError.single([location, "team_id"], "field required", "value_error.missing")
        return get_team(team_id)
    assert principal.team is not None
    if team_id and team_id != principal.team.id:
        raise TeamMismatch(team_id)
    return principal.team


def team_filter(principal: Principal, team_id: str | None) -> str | None:
    """For list endpoints: admin keys see every team (or the one asked for); team keys their own."""
    if principal.is_admin:
        return team_id or None
    assert principal.team is not None
    if team_id and team_id != principal.team.id:
        raise TeamMismatch(team_id)
    return principal.team.id
