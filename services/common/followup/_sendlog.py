"""The send log (practice-admin's ``verzendlog`` and overview), read from the projection.

One row per reminder; the patient only by their pseudonymous id. Also the overview's two
small reads: what was decided since a moment (per status and reason) and the booked
appointments of the next hours, both from the rows insights keeps.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from sqlalchemy import and_, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from schemas.models import INSTANT_RANGE
from services.common.followup._calendar import ZONE, as_utc
from services.common.followup._tables import FollowupAppointment, FollowupOutcome

__all__ = [
    "DecidedCount",
    "SendLogEntry",
    "UpcomingAppointment",
    "count_outcomes",
    "decided_since",
    "recent_outcomes",
    "upcoming_appointments",
]

Executor = AsyncSession | AsyncConnection
# Which time a day filter and the order go by: the appointment time the reminder was
# for, or the moment the notifier decided (sent, suppressed or failed).
By = Literal["appointment", "decided"]


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


@dataclass(frozen=True)
class DecidedCount:
    status: str
    reason: str | None
    n: int


@dataclass(frozen=True)
class UpcomingAppointment:
    start: datetime
    appointment_id: str
    type_code: str


# Every time in the projection lies in INSTANT_RANGE; a day further off than a day of
# it holds none, and computing its bounds could overflow (year 1 in a zone ahead of UTC,
# the day after 9999-12-31).
_FIRST_DAY = INSTANT_RANGE[0].date() - timedelta(days=1)
_LAST_DAY = INSTANT_RANGE[1].date()


def _day_range(day: date, zone: ZoneInfo) -> tuple[datetime, datetime]:
    if not _FIRST_DAY <= day <= _LAST_DAY:
        nothing = INSTANT_RANGE[0]
        return nothing, nothing  # an empty range: moment >= x and moment < x
    first = datetime.combine(day, time.min, tzinfo=zone).astimezone(UTC)
    last = datetime.combine(day + timedelta(days=1), time.min, tzinfo=zone).astimezone(UTC)
    return first, last


def _filtered(
    query: Any, practice_id: str, day: date | None, status: str | None, by: By, zone: ZoneInfo
) -> Any:
    o = FollowupOutcome.__table__
    query = query.where(o.c.practice_id == practice_id)
    if day is not None:
        first, last = _day_range(day, zone)
        moment = o.c.start if by == "appointment" else o.c.at
        query = query.where(moment >= first, moment < last)
    if status is not None:
        query = query.where(o.c.status == status)
    return query


async def recent_outcomes(
    session: Executor,
    practice_id: str,
    *,
    day: date | None,
    status: str | None,
    limit: int,
    by: By = "appointment",
    zone: ZoneInfo = ZONE,
) -> list[SendLogEntry]:
    """Outcomes of one practice, newest first by ``by`` (the appointment time, or when it
    was decided); ``day`` is a calendar day in ``zone`` of that same time, ``status``
    sent|suppressed|failed."""
    o = FollowupOutcome.__table__
    a = FollowupAppointment.__table__
    query = select(
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
    ).select_from(
        o.outerjoin(
            a,
            and_(a.c.practice_id == o.c.practice_id, a.c.appointment_id == o.c.appointment_id),
        )
    )
    query = _filtered(query, practice_id, day, status, by, zone)
    newest = o.c.start.desc() if by == "appointment" else o.c.at.desc()
    query = query.order_by(newest, o.c.reminder_id).limit(max(0, limit))
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


async def count_outcomes(
    session: Executor,
    practice_id: str,
    *,
    day: date | None,
    status: str | None,
    by: By = "appointment",
    zone: ZoneInfo = ZONE,
) -> int:
    """How many outcomes :func:`recent_outcomes` would give without a limit."""
    o = FollowupOutcome.__table__
    query = _filtered(select(func.count()).select_from(o), practice_id, day, status, by, zone)
    return int(await session.scalar(query) or 0)


async def decided_since(session: Executor, practice_id: str, since: datetime) -> list[DecidedCount]:
    """Outcomes decided from ``since`` on, counted per status and reason."""
    o = FollowupOutcome.__table__
    rows = await session.execute(
        select(o.c.status, o.c.reason, func.count().label("n"))
        .where(o.c.practice_id == practice_id, o.c.at >= as_utc(since))
        .group_by(o.c.status, o.c.reason)
    )
    return [DecidedCount(r.status, r.reason, int(r.n)) for r in rows]


async def upcoming_appointments(
    session: Executor, practice_id: str, start: datetime, until: datetime
) -> list[UpcomingAppointment]:
    """Booked appointments (not meetings about patients) starting in [start, until)."""
    a = FollowupAppointment.__table__
    rows = await session.execute(
        select(a.c.start, a.c.appointment_id, a.c.type_code)
        .where(
            a.c.practice_id == practice_id,
            a.c.status == "booked",
            a.c.is_meeting.is_(False),
            a.c.start >= as_utc(start),
            a.c.start < as_utc(until),
        )
        .order_by(a.c.start, a.c.appointment_id)
    )
    return [UpcomingAppointment(as_utc(r.start), r.appointment_id, r.type_code) for r in rows]
