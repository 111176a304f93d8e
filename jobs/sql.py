"""The LLM-call path's statements on jobs' tables (see saas_llm/sql.py for why they are raw)."""

import uuid
from datetime import datetime

from django.db import connection

from jobs.models import Job, LLMCall
from saas_llm import sql
from tenants.models import Team

# What a call or a finish changes on a job (its identity and creation never change).
JOB_STATE = (
    "status",
    "metadata",
    "error_message",
    "started_at",
    "completed_at",
    "total_calls",
    "successful_calls",
    "failed_calls",
    "cancelled_calls",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cost_nanos",
    "provider_cost_nanos",
    "total_latency_ms",
    "billable_calls",
    "billable_tokens",
    "billable_cost_nanos",
    "credits_charged_units",
)


def job_with_team(job_id: uuid.UUID, team_id: str | None) -> Job | None:
    """The job (of `team_id` unless None) with its team, in one statement."""
    query = (
        f"SELECT {sql.select_list(Job, 'j')}, {sql.select_list(Team, 't')} FROM {sql.table(Job)} j "
        f"JOIN {sql.table(Team)} t ON t.{sql.column(Team, 'id')} = j.{sql.column(Job, 'team')} "
        f"WHERE j.{sql.column(Job, 'id')} = %s"
    )
    params = [sql.adapt(Job, "id", job_id)]
    if team_id is not None:
        query += f" AND j.{sql.column(Job, 'team')} = %s"
        params.append(team_id)
    with connection.cursor() as cursor:
        cursor.execute(query, params)
        row = cursor.fetchone()
    if row is None:
        return None
    width = sql.width(Job)
    job = sql.from_row(Job, row[:width])
    job.team = sql.from_row(Team, row[width:])
    return job


def lock_job(job_id: uuid.UUID) -> Job | None:
    """The job, locked for the rest of the transaction (the first lock of every job change)."""
    query = (
        f"SELECT {sql.select_list(Job, 'j')} FROM {sql.table(Job)} j "
        f"WHERE j.{sql.column(Job, 'id')} = %s{sql.for_update()}"
    )
    with connection.cursor() as cursor:
        cursor.execute(query, [sql.adapt(Job, "id", job_id)])
        row = cursor.fetchone()
    return sql.from_row(Job, row) if row is not None else None


def save_job_state(job: Job) -> None:
    with connection.cursor() as cursor:
        sql.update(cursor, Job, job.pk, {name: getattr(job, name) for name in JOB_STATE})


def insert_job(values: dict, *, now: datetime) -> Job:
    with connection.cursor() as cursor:
        return sql.insert(cursor, Job, values, now=now)


def insert_call(values: dict, *, now: datetime) -> LLMCall:
    with connection.cursor() as cursor:
        return sql.insert(cursor, LLMCall, values, now=now)


def delete_job(job_id: uuid.UUID) -> None:
    with connection.cursor() as cursor:
        sql.delete(cursor, Job, job_id)
