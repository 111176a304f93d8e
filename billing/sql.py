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


def lock_open_reservation(job_id: uuid.UUID) -> Reservation | None:
    """A job's open reservation, locked."""
    query = (
        f"SELECT {sql.select_list(Reservation, 'r')} FROM {sql.table(Reservation)} r "
        f"WHERE r.{sql.column(Reservation, 'job_id')} = %s AND r.{sql.column(Reservation, 'status')} = %s"
    )
    with connection.cursor() as cursor:
        cursor.execute(query + sql.for_update(), [sql.adapt(Reservation, "job_id", job_id), "open"])
        row = cursor.fetchone()
    return sql.from_row(Reservation, row) if row is not None else None


def save_reservation(reservation: Reservation, *fields: str) -> None:
    with connection.cursor() as cursor:
        sql.update(cursor, Reservation, reservation.pk, {name: getattr(reservation, name) for name in fields})


def insert(model, values: dict, *, now: datetime):
    with connection.cursor() as cursor:
        return sql.insert(cursor, model, values, now=now)


def hold(team_id: str, units: int, *, now: datetime) -> CreditAccount | None:
    """Reserve `units` on the team's account if its remaining credits cover them, in one statement
    that takes the account's lock (held to the commit); the account as updated, or None."""
    balances = sql.column(CreditAccount, "balance_units")
    reserved = sql.column(CreditAccount, "reserved_units")
    columns = ", ".join(sql.qn(field.column) for field in CreditAccount._meta.concrete_fields)
    query = (
        f"UPDATE {sql.table(CreditAccount)} SET {reserved} = {reserved} + %s, "
        f"{sql.column(CreditAccount, 'updated_at')} = %s "
        f"WHERE {sql.column(CreditAccount, 'team')} = %s AND {balances} - {reserved} >= %s RETURNING {columns}"
    )
    with connection.cursor() as cursor:
        cursor.execute(query, [units, sql.adapt(CreditAccount, "updated_at", now), team_id, units])
        row = cursor.fetchone()
    return sql.from_row(CreditAccount, row) if row is not None else None


def close_open_reservation(job_id: uuid.UUID, status: str, *, now: datetime) -> int | None:
    """Settle or release a job's open reservation (locking it); its amount, or None if none was open."""
    query = (
        f"UPDATE {sql.table(Reservation)} SET {sql.column(Reservation, 'status')} = %s, "
        f"{sql.column(Reservation, 'closed_at')} = %s "
        f"WHERE {sql.column(Reservation, 'job_id')} = %s AND {sql.column(Reservation, 'status')} = %s "
        f"RETURNING {sql.column(Reservation, 'amount_units')}"
    )
    params = [status, sql.adapt(Reservation, "closed_at", now), sql.adapt(Reservation, "job_id", job_id), "open"]
    with connection.cursor() as cursor:
        cursor.execute(query, params)
        row = cursor.fetchone()
    return row[0] if row is not None else None


def delete_reservation(pk: int) -> None:
    with connection.cursor() as cursor:
        sql.delete(cursor, Reservation, pk)
