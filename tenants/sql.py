"""The LLM-call path's statements on tenants' tables (see saas_llm/sql.py for why they are raw)."""

from datetime import datetime
from typing import Any

from django.db import connection

from saas_llm import sql
from tenants.models import ApiKey, Event, Team, WebhookEndpoint


def key_with_team(key_hash: str) -> ApiKey | None:
    """The key with this hash and its team (None for an admin key), in one statement."""
    query = (
        f"SELECT {sql.select_list(ApiKey, 'k')}, {sql.select_list(Team, 't')} "
        f"FROM {sql.table(ApiKey)} k LEFT JOIN {sql.table(Team)} t ON t.{sql.column(Team, 'id')} = k.{sql.column(ApiKey, 'team')} "
        f"WHERE k.{sql.column(ApiKey, 'key_hash')} = %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(query, [key_hash])
        row = cursor.fetchone()
    if row is None:
        return None
    width = sql.width(ApiKey)
    key = sql.from_row(ApiKey, row[:width])
    key.team = sql.from_row(Team, row[width:]) if key.team_id is not None else None
    return key


def insert_event(*, event_id, team_id: str, event_type: str, payload: dict[str, Any], now: datetime) -> None:
    with connection.cursor() as cursor:
        sql.insert(cursor, Event, {"id": event_id, "team_id": team_id, "type": event_type, "payload": payload}, now=now)


def live_endpoints(team_id: str) -> list[WebhookEndpoint]:
    """The team's webhook endpoints that are not deleted."""
    query = (
        f"SELECT {sql.select_list(WebhookEndpoint, 'e')} FROM {sql.table(WebhookEndpoint)} e "
        f"WHERE e.{sql.column(WebhookEndpoint, 'team')} = %s AND e.{sql.column(WebhookEndpoint, 'deleted_at')} IS NULL"
    )
    with connection.cursor() as cursor:
        cursor.execute(query, [team_id])
        return [sql.from_row(WebhookEndpoint, row) for row in cursor.fetchall()]
