"""Writing the projection: rows and consumer positions in one database transaction.

Idempotent on both backends (``INSERT ... ON CONFLICT``): an appointment row is replaced
only by an equal or higher ``sequence``, an outcome is kept as first written, and a
position only moves forward. So replaying any batch, after a kill -9 or by a slow former
owner of a partition, changes nothing.

Rows go to the driver directly, on the transaction's own connection. On PostgreSQL each
table's rows are copied (binary ``COPY``) into a temporary table of the same columns that
every commit empties, and one ``INSERT ... SELECT ... ON CONFLICT`` per table moves them
over: asyncpg's COPY encodes tuples column by column, where array parameters (unnest)
cost an abstract-base-class check per element, about three times the client CPU. On
SQLite one ``executemany`` per table. Positions go through SQLAlchemy first, which also
opens the transaction the raw statements then join; everything is one transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

import asyncpg
from sqlalchemy import exc as sa_exc
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from services.common.followup import FollowupPosition
from services.insights.projection import Row

__all__ = [
    "APPOINTMENT_COLUMNS",
    "OUTCOME_COLUMNS",
    "is_data_error",
    "load_positions",
    "write_batch",
    "write_batch_isolating",
]

# (column, PostgreSQL array type), in the order of the tables in insights_0001.
APPOINTMENT_COLUMNS: tuple[tuple[str, str], ...] = (
    ("practice_id", "text"),
    ("appointment_id", "text"),
    ("sequence", "bigint"),
    ("status", "text"),
    ("start", "timestamptz"),
    ("week", "text"),
    ("booked_at", "timestamptz"),
    ("lead_days", "integer"),
    ("type_code", "text"),
    ("type_display", "text"),
    ("patient_id", "text"),
    ("is_meeting", "boolean"),
    ("cancelled_at", "timestamptz"),
    ("cancelled_via", "text"),
    ("cancelled_before_s", "integer"),
    ("updated_at", "timestamptz"),
)
OUTCOME_COLUMNS: tuple[tuple[str, str], ...] = (
    ("reminder_id", "text"),
    ("practice_id", "text"),
    ("appointment_id", "text"),
    ("start", "timestamptz"),
    ("week", "text"),
    ("status", "text"),
    ("channel", "text"),
    ("reason", "text"),
    ("at", "timestamptz"),
)
_APPOINTMENT_KEY = ("practice_id", "appointment_id")
REMINDED_COLUMNS: tuple[tuple[str, str], ...] = (
    ("practice_id", "text"),
    ("appointment_id", "text"),
    ("first_sent_at", "timestamptz"),
)


def _names(columns: Sequence[tuple[str, str]]) -> str:
    return ", ".join(f'"{name}"' for name, _ in columns)


def _appointment_conflict() -> str:
    updates = ", ".join(
        f'"{name}" = excluded."{name}"'
        for name, _ in APPOINTMENT_COLUMNS
        if name not in _APPOINTMENT_KEY
    )
    return (
        'ON CONFLICT ("practice_id", "appointment_id") DO UPDATE SET '
        f"{updates} WHERE excluded.sequence >= insights_appointments.sequence"
    )


def _stage(table: str) -> str:
    return f"insights_stage_{table.removeprefix('insights_')}"


def _pg_insert(table: str, columns: Sequence[tuple[str, str]], conflict: str) -> str:
    # Table and column names are this module's constants; the values come by COPY.
    names = _names(columns)
    return f"INSERT INTO {table} ({names}) SELECT {names} FROM {_stage(table)} {conflict}"  # noqa: S608


def _pg_stage(table: str) -> str:
    """A temporary table of the same columns, emptied at every commit: the batch is
    copied in (binary COPY, one message stream) and upserted from there in one statement.
    Created inside each transaction (IF NOT EXISTS), so it is there on any connection."""
    return (
        f"CREATE TEMPORARY TABLE IF NOT EXISTS {_stage(table)} (LIKE {table}) ON COMMIT DELETE ROWS"
    )


def _sqlite_insert(table: str, columns: Sequence[tuple[str, str]], conflict: str) -> str:
    marks = ", ".join("?" for _ in columns)
    return f"INSERT INTO {table} ({_names(columns)}) VALUES ({marks}) {conflict}"  # noqa: S608


_PG_APPOINTMENTS = _pg_insert("insights_appointments", APPOINTMENT_COLUMNS, _appointment_conflict())
_PG_OUTCOMES = _pg_insert(
    "insights_outcomes", OUTCOME_COLUMNS, 'ON CONFLICT ("reminder_id") DO NOTHING'
)
_PG_REMINDED = _pg_insert(
    "insights_reminded",
    REMINDED_COLUMNS,
    'ON CONFLICT ("practice_id", "appointment_id") DO UPDATE SET '
    '"first_sent_at" = LEAST(insights_reminded.first_sent_at, excluded.first_sent_at)',
)
_PG_STAGES = "; ".join(
    _pg_stage(t) for t in ("insights_appointments", "insights_outcomes", "insights_reminded")
)
_PG_TABLES: tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...] = (
    ("insights_appointments", _PG_APPOINTMENTS, APPOINTMENT_COLUMNS),
    ("insights_outcomes", _PG_OUTCOMES, OUTCOME_COLUMNS),
    ("insights_reminded", _PG_REMINDED, REMINDED_COLUMNS),
)
_SQLITE_REMINDED = _sqlite_insert(
    "insights_reminded",
    REMINDED_COLUMNS,
    'ON CONFLICT ("practice_id", "appointment_id") DO UPDATE SET '
    '"first_sent_at" = MIN(insights_reminded.first_sent_at, excluded.first_sent_at)',
)
_SQLITE_APPOINTMENTS = _sqlite_insert(
    "insights_appointments", APPOINTMENT_COLUMNS, _appointment_conflict()
)
_SQLITE_OUTCOMES = _sqlite_insert(
    "insights_outcomes", OUTCOME_COLUMNS, 'ON CONFLICT ("reminder_id") DO NOTHING'
)


def _sqlite_time(value: datetime) -> str:
    # SQLAlchemy's SQLite DateTime format ("%Y-%m-%d %H:%M:%S.%f", UTC), so reads through
    # the ORM parse it back; isoformat is done in C, strftime parses its format each time.
    if value.tzinfo is not None and value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.replace(tzinfo=None).isoformat(" ", "microseconds")


def _sqlite_rows(columns: Sequence[tuple[str, str]], rows: Sequence[Row]) -> list[list[Any]]:
    """Parameter rows for ``executemany``: times as text, everything else as it is (the
    sqlite3 module binds a bool as 0 or 1)."""
    values = itemgetter(*(name for name, _ in columns))
    times = [i for i, (_, kind) in enumerate(columns) if kind == "timestamptz"]
    out = []
    for row in rows:
        params = list(values(row))
        for i in times:
            moment = params[i]
            if moment is not None:
                params[i] = _sqlite_time(moment)
        out.append(params)
    return out


def _reminded(outcomes: Sequence[Row]) -> list[Row]:
    """The earliest sent reminder per appointment in this batch."""
    first: dict[tuple[str, str], Row] = {}
    for o in outcomes:
        if o["status"] != "sent":
            continue
        key = (o["practice_id"], o["appointment_id"])
        held = first.get(key)
        if held is None or o["at"] < held["first_sent_at"]:
            first[key] = {"practice_id": key[0], "appointment_id": key[1], "first_sent_at": o["at"]}
    return list(first.values())


async def _write_rows(
    connection: AsyncConnection, appointments: Sequence[Row], outcomes: Sequence[Row]
) -> None:
    raw = await connection.get_raw_connection()
    driver: Any = raw.driver_connection
    reminded = _reminded(outcomes)
    if connection.dialect.name == "postgresql":
        await driver.execute(_PG_STAGES)
        upserts = []
        for (table, sql, columns), rows in zip(
            _PG_TABLES, (appointments, outcomes, reminded), strict=True
        ):
            if rows:
                values = itemgetter(*(name for name, _ in columns))
                await driver.copy_records_to_table(
                    _stage(table), records=map(values, rows), columns=[n for n, _ in columns]
                )
                upserts.append(sql)
        await driver.execute("; ".join(upserts))
        return
    for sql, columns, rows in (
        (_SQLITE_APPOINTMENTS, APPOINTMENT_COLUMNS, appointments),
        (_SQLITE_OUTCOMES, OUTCOME_COLUMNS, outcomes),
        (_SQLITE_REMINDED, REMINDED_COLUMNS, reminded),
    ):
        if rows:
            await driver.executemany(sql, _sqlite_rows(columns, rows))


def _insert(connection: AsyncConnection, table: Any) -> Any:
    if connection.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


async def _advance_positions(
    connection: AsyncConnection, positions: Mapping[tuple[str, int], int]
) -> None:
    table = FollowupPosition.__table__
    if not positions:
        await connection.execute(select(1))  # opens the transaction all the same
        return
    stmt = _insert(connection, table)
    stmt = stmt.on_conflict_do_update(
        index_elements=["topic", "partition"],
        set_={"next_offset": stmt.excluded.next_offset},
        where=stmt.excluded.next_offset > table.c.next_offset,
    )
    await connection.execute(
        stmt,
        [{"topic": t, "partition": p, "next_offset": o} for (t, p), o in positions.items()],
    )


async def write_batch(
    connection: AsyncConnection,
    *,
    appointments: Sequence[Row],
    outcomes: Sequence[Row],
    positions: Mapping[tuple[str, int], int],
) -> None:
    """Within the caller's transaction: the positions and the rows they cover. Rows must
    be unique per key (``dedupe_*``): one statement may not touch a row twice."""
    await _advance_positions(connection, positions)
    if appointments or outcomes:
        await _write_rows(connection, appointments, outcomes)


# What a row's values cause (the database refuses them, or the driver cannot encode
# them), as against a connection, a timeout or a server going away: only these are
# skipped row by row; anything else is retried, so nothing is dropped for an outage.
_DATA_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
    sqlite3.DataError,
    sqlite3.IntegrityError,
    sa_exc.DataError,
    sa_exc.IntegrityError,
    OverflowError,
    UnicodeError,
    ValueError,
    TypeError,
)


def is_data_error(error: BaseException) -> bool:
    """Whether ``error`` came from the values written rather than from the database."""
    return isinstance(error, _DATA_ERRORS)


_PG_EMPTY_STAGES = "; ".join(
    f"DELETE FROM {_stage(t)}"  # noqa: S608 (this module's table names)
    for t in ("insights_appointments", "insights_outcomes", "insights_reminded")
)


async def write_batch_isolating(
    connection: AsyncConnection,
    *,
    appointments: Sequence[Row],
    outcomes: Sequence[Row],
    positions: Mapping[tuple[str, int], int],
) -> list[tuple[str, BaseException]]:
    """:func:`write_batch` for a batch that failed on its values: each row in a savepoint
    of its own, so a row the database refuses is left out, with its table and the error
    returned, and the rest and the positions commit. Slow (a statement or three per row);
    only for the batch that failed."""
    await _advance_positions(connection, positions)
    skipped: list[tuple[str, BaseException]] = []
    pg = connection.dialect.name == "postgresql"
    rows: list[tuple[str, list[Row], list[Row]]]
    rows = [("insights_appointments", [a], []) for a in appointments]
    rows += [("insights_outcomes", [], [o]) for o in outcomes]
    for table, appointment, outcome in rows:
        try:
            async with connection.begin_nested():
                await _write_rows(connection, appointment, outcome)
                if pg:  # the staged row would be upserted again with the next one
                    driver: Any = (await connection.get_raw_connection()).driver_connection
                    await driver.execute(_PG_EMPTY_STAGES)
        except Exception as error:
            if not is_data_error(error):
                raise
            skipped.append((table, error))
    return skipped


async def load_positions(
    connection: AsyncConnection, topics: Iterable[str]
) -> dict[tuple[str, int], int]:
    table = FollowupPosition.__table__
    result = await connection.execute(
        select(table.c.topic, table.c.partition, table.c.next_offset).where(
            table.c.topic.in_(list(topics))
        )
    )
    return {(row.topic, row.partition): row.next_offset for row in result}
