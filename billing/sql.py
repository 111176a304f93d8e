"""The LLM-call path's statements on billing's tables (see saas_llm/sql.py for why they are raw).

Row locks are taken in the order billing/services.py documents: the account, then a reservation.
"""

import uuid
from datetime import datetime

from django.db import connection

from billing.models import CreditAccount, Reservation
from saas_llm import sql

ACCOUNT_BALANCES = ("allocated_units", "used_units", "balance_units", "reserved_units", "low_balance_armed")


def lock_account(team_id: str) -> CreditAccount | None:
    """The team's credit account, locked for the rest of the transaction (None when it has none)."""
    query = (
        f"SELECT {sql.select_list(CreditAccount, 'a')} FROM {sql.table(CreditAccount)} a "
        f"WHERE a.{sql.column(CreditAccount, 'team')} = %s{sql.for_update()}"
    )
    with connection.cursor() as cursor:
        cursor.execute(query, [team_id])
        row = cursor.fetchone()
    return sql.from_row(CreditAccount, row) if row is not None else None


def save_account(account: CreditAccount, *, now: datetime) -> None:
    """Write a locked account's balances back (absolute values: the row is locked)."""
    account.updated_at = now
    with connection.cursor() as cursor:
        sql.update(
            cursor,
            CreditAccount,
            account.team_id,
            {**{name: getattr(account, name) for name in ACCOUNT_BALANCES}, "updated_at": now},
        )


def lock_reservation(job_id: uuid.UUID, *, open_only: bool) -> Reservation | None:
    """A job's reservation (only an open one with `open_only`), locked."""
    query = (
        f"SELECT {sql.select_list(Reservation, 'r')} FROM {sql.table(Reservation)} r "
        f"WHERE r.{sql.column(Reservation, 'job_id')} = %s"
    )
    params = [sql.adapt(Reservation, "job_id", job_id)]
    if open_only:
        query += f" AND r.{sql.column(Reservation, 'status')} = %s"
        params.append("open")
    with connection.cursor() as cursor:
        cursor.execute(query + sql.for_update(), params)
        row = cursor.fetchone()
    return sql.from_row(Reservation, row) if row is not None else None


def save_reservation(reservation: Reservation, *fields: str) -> None:
    with connection.cursor() as cursor:
        sql.update(cursor, Reservation, reservation.pk, {name: getattr(reservation, name) for name in fields})


def insert(model, values: dict, *, now: datetime):
    with connection.cursor() as cursor:
        return sql.insert(cursor, model, values, now=now)
