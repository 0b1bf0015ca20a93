"""The send log (practice-admin's ``verzendlog``): one row per reminder, newest first."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from sqlalchemy import and_, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from services.common.followup._calendar import ZONE, as_utc
from services.common.followup._tables import FollowupAppointment, FollowupOutcome

__all__ = ["SendLogEntry", "recent_outcomes"]


@dataclass(frozen=True)
class SendLogEntry:
    reminder_id: str
    appointment_id: str
    # The appointment time the reminder was for (UTC; show it in the practice's zone).
    appointment_start: datetime
    type_code: str | None
    type_display: str | None
    status: str
    reason: str | None
    channel: str | None
    # Pseudonymous portal id, never a name or e-mail address.
    patient_id: str | None
    at: datetime


def _day_range(day: date) -> tuple[datetime, datetime]:
    first = datetime.combine(day, time.min, tzinfo=ZONE).astimezone(UTC)
    last = datetime.combine(day + timedelta(days=1), time.min, tzinfo=ZONE).astimezone(UTC)
    return first, last


async def recent_outcomes(
    session: AsyncSession | AsyncConnection,
    practice_id: str,
    *,
    day: date | None,
    status: str | None,
    limit: int,
) -> list[SendLogEntry]:
    """Outcomes of one practice, newest appointment time first; ``day`` is a calendar day
    in Europe/Amsterdam of the appointment time, ``status`` sent|suppressed|failed."""
    o = FollowupOutcome.__table__
    a = FollowupAppointment.__table__
    query = (
        select(
            o.c.reminder_id,
            o.c.appointment_id,
            o.c.start,
            o.c.status,
            o.c.reason,
            o.c.channel,
            o.c.at,
            a.c.type_code,
            a.c.type_display,
            a.c.patient_id,
        )
        .select_from(
            o.outerjoin(
                a,
                and_(a.c.practice_id == o.c.practice_id, a.c.appointment_id == o.c.appointment_id),
            )
        )
        .where(o.c.practice_id == practice_id)
    )
    if day is not None:
        first, last = _day_range(day)
        query = query.where(o.c.start >= first, o.c.start < last)
    if status is not None:
        query = query.where(o.c.status == status)
    query = query.order_by(o.c.start.desc(), o.c.reminder_id).limit(max(0, limit))
    rows = await session.execute(query)
    return [
        SendLogEntry(
            reminder_id=r.reminder_id,
            appointment_id=r.appointment_id,
            appointment_start=as_utc(r.start),
            type_code=r.type_code,
            type_display=r.type_display,
            status=r.status,
            reason=r.reason,
            channel=r.channel,
            patient_id=r.patient_id,
            at=as_utc(r.at),
        )
        for r in rows
    ]
