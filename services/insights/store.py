"""Writing the projection: rows and consumer positions in one database transaction.

Idempotent on both backends (``INSERT ... ON CONFLICT``): an appointment row is replaced
only by an equal or higher ``sequence``, an outcome is kept as first written, and a
position only moves forward. So replaying any batch, after a kill -9 or by a slow former
owner of a partition, changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection

from services.common.followup import FollowupAppointment, FollowupOutcome, FollowupPosition
from services.insights.projection import Row

__all__ = ["load_positions", "write_batch"]

# Rows per INSERT statement: PostgreSQL allows 32767 bind parameters, SQLite 32766.
_CHUNK = 1_000


def _insert(connection: AsyncConnection, table: Any) -> Any:
    if connection.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def _chunks(rows: Sequence[Row]) -> Iterable[Sequence[Row]]:
    for i in range(0, len(rows), _CHUNK):
        yield rows[i : i + _CHUNK]


async def _upsert_appointments(connection: AsyncConnection, rows: Sequence[Row]) -> None:
    table = FollowupAppointment.__table__
    stmt = _insert(connection, table)
    keys = {"practice_id", "appointment_id"}
    stmt = stmt.on_conflict_do_update(
        index_elements=["practice_id", "appointment_id"],
        set_={c.name: stmt.excluded[c.name] for c in table.columns if c.name not in keys},
        where=stmt.excluded.sequence >= table.c.sequence,
    )
    for chunk in _chunks(rows):
        await connection.execute(stmt, list(chunk))


async def _insert_outcomes(connection: AsyncConnection, rows: Sequence[Row]) -> None:
    stmt = _insert(connection, FollowupOutcome.__table__).on_conflict_do_nothing(
        index_elements=["reminder_id"]
    )
    for chunk in _chunks(rows):
        await connection.execute(stmt, list(chunk))


async def _advance_positions(
    connection: AsyncConnection, positions: Mapping[tuple[str, int], int]
) -> None:
    table = FollowupPosition.__table__
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
    """Within the caller's transaction: the rows, then the positions that cover them."""
    if appointments:
        await _upsert_appointments(connection, appointments)
    if outcomes:
        await _insert_outcomes(connection, outcomes)
    if positions:
        await _advance_positions(connection, positions)


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
