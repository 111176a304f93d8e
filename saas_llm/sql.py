"""Raw SQL for the LLM-call path, portable between Postgres and SQLite through Django's own adapters.

On that path the ORM costs ~0.8 ms of CPU per statement (compiling the query, building model
instances) — several times the round trip itself, and a call makes a dozen. Its statements are
written out instead, in one module per app that owns the tables (tenants/sql.py, billing/sql.py,
jobs/sql.py, models_registry/sql.py); the models stay the schema and the migrations. This module is
what they share: names taken from the models, values adapted as the ORM adapts them
(`get_db_prep_save`), rows turned back into model instances with the ORM's converters.
"""

from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any, TypeVar

from django.db import connection, models
from django.db.models.expressions import Col
from django.db.models.fields import AutoFieldMixin

M = TypeVar("M", bound=models.Model)


# Names and statements are built once per process (one database vendor): assembling them on every
# call cost more than running them.


@lru_cache
def qn(name: str) -> str:
    return connection.ops.quote_name(name)


@lru_cache
def table(model: type[models.Model]) -> str:
    return qn(model._meta.db_table)


@lru_cache
def column(model: type[models.Model], name: str) -> str:
    return qn(model._meta.get_field(name).column)


@lru_cache
def for_update() -> str:
    """` FOR UPDATE` where the database locks rows (SQLite serialises writers instead)."""
    return " FOR UPDATE" if connection.features.has_select_for_update else ""


# Field types whose values the LLM-call path already holds in the database's form: adapting them
# through the field (about 10 µs each, ~100 per call) changes nothing.
_PLAIN = (models.IntegerField, models.BooleanField, models.CharField, models.TextField)


@lru_cache
def _is_plain(field: models.Field) -> bool:
    return isinstance(field, _PLAIN) and not field.is_relation


def adapt(model: type[models.Model], name: str, value: Any) -> Any:
    """A value as the ORM would send it for `model.name` (UUIDs, datetimes, JSON, decimals, …)."""
    field = model._meta.get_field(name)
    return value if _is_plain(field) else field.get_db_prep_save(value, connection)


@lru_cache
def _insert_plan(model: type[models.Model], given: frozenset[str]) -> tuple[str, tuple, dict[str, Any]]:
    """The statement, the fields it writes (with whether each needs adapting), and the constant
    defaults of the fields not given."""
    fields = tuple(
        field
        for field in model._meta.concrete_fields
        if field.attname in given or not isinstance(field, AutoFieldMixin)
    )
    columns = ", ".join(qn(field.column) for field in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    constants = {}
    for field in fields:
        timestamped = getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False)
        computed = field.has_default() and callable(field.default)  # uuid4, dict, …: one per row
        if field.attname not in given and not timestamped and not computed:
            constants[field.attname] = field.get_default()
    plan = tuple((field, _is_plain(field)) for field in fields)
    return f"INSERT INTO {table(model)} ({columns}) VALUES ({placeholders})", plan, constants


def insert(cursor, model: type[M], values: dict[str, Any], *, now: datetime) -> M:
    """INSERT one row as `Model.objects.create(**values)` would — every concrete field not given at
    its default, auto_now/auto_now_add at `now`, an auto-increment key from the database — and
    return it as an instance."""
    sql, plan, constants = _insert_plan(model, frozenset(values))
    row = {}
    params = []
    for field, plain in plan:
        name = field.attname
        if name in values:
            value = values[name]
        elif name in constants:
            value = constants[name]
        elif getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False):
            value = now
        else:
            value = field.get_default()
        row[name] = value
        params.append(value if plain else field.get_db_prep_save(value, connection))
    pk = model._meta.pk
    if pk.attname not in row:
        cursor.execute(f"{sql} RETURNING {qn(pk.column)}", params)
        row[pk.attname] = cursor.fetchone()[0]
    else:
        cursor.execute(sql, params)
    return model.from_db(connection.alias, None, [row[field.attname] for field in model._meta.concrete_fields])


def update(cursor, model: type[models.Model], pk: Any, values: dict[str, Any]) -> None:
    """UPDATE the row `pk` of `model` to `values` (attnames), adapted as the ORM adapts them."""
    names = sorted(values)
    assignments = ", ".join(f"{column(model, name)} = %s" for name in names)
    params = [adapt(model, name, values[name]) for name in names]
    params.append(adapt(model, model._meta.pk.attname, pk))
    cursor.execute(f"UPDATE {table(model)} SET {assignments} WHERE {qn(model._meta.pk.column)} = %s", params)


def delete(cursor, model: type[models.Model], pk: Any) -> None:
    cursor.execute(
        f"DELETE FROM {table(model)} WHERE {qn(model._meta.pk.column)} = %s", [adapt(model, model._meta.pk.attname, pk)]
    )


@lru_cache
def select_list(model: type[models.Model], alias: str) -> str:
    """Every concrete column of `model`, qualified by `alias`, in `from_row`'s order."""
    return ", ".join(f"{qn(alias)}.{qn(field.column)}" for field in model._meta.concrete_fields)


@lru_cache
def _converters(model: type[models.Model]) -> tuple[tuple[Col, tuple], ...]:
    """Per column of `select_list(model)`: its expression and the ORM's converters for it."""
    plans = []
    for field in model._meta.concrete_fields:
        expression = Col(model._meta.db_table, field)
        converters = tuple(connection.ops.get_db_converters(expression)) + tuple(
            expression.get_db_converters(connection)
        )
        plans.append((expression, converters))
    return tuple(plans)


def from_row(model: type[M], row: Sequence[Any]) -> M:
    """A model instance from `select_list(model)`'s columns, converted as the ORM converts them."""
    values = []
    for (expression, converters), value in zip(_converters(model), row, strict=False):
        for converter in converters:
            value = converter(value, expression, connection)
        values.append(value)
    return model.from_db(connection.alias, None, values)


def width(model: type[models.Model]) -> int:
    return len(model._meta.concrete_fields)
