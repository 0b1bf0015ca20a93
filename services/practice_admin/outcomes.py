"""What was sent, per practice: the verzendlog and the overview's figures.

Read from the follow-up projection that ``reminders run insights`` keeps in the same
database (``REMINDERS_DATABASE__*``; ``services.common.followup``): one row per reminder
id from ``notifications.outcomes.v1`` (read_committed: only the notifier's committed
ledger) beside the appointment's last state from ``appointments.v1`` (its type and the
pseudonymous patient id). practice-admin reads no Kafka for it and keeps nothing in
memory; the pages are as current as the projection (insights' lag,
``reminders_consumer_lag_records{group="...insights"}``).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.common.followup import (
    ZONE,
    count_outcomes,
    decided_since,
    recent_outcomes,
    upcoming_appointments,
)

__all__ = [
    "LogPage",
    "LogRow",
    "OutcomeSource",
    "ProjectionOutcomes",
    "Scheduled",
    "WeekFigures",
]


@dataclass(frozen=True)
class LogRow:
    """One reminder's outcome; the patient only by their pseudonymous id."""

    at: datetime
    start: datetime | None
    appointment_id: str
    type_label: str
    patient_id: str
    status: str
    reason: str | None
    channel: str | None


@dataclass(frozen=True)
class LogPage:
    """The newest rows that match, and how many match in all."""

    rows: list[LogRow]
    total: int


@dataclass(frozen=True)
class Scheduled:
    start: datetime
    appointment_id: str
    type_label: str


@dataclass
class WeekFigures:
    sent: int = 0
    failed: int = 0
    suppressed: Counter[str] = field(default_factory=Counter)


class OutcomeSource(Protocol):
    async def log(
        self,
        practice_id: str,
        *,
        day: date | None = None,
        status: str | None = None,
        limit: int = 500,
        labels: dict[str, str] | None = None,
        zone: ZoneInfo = ZONE,
    ) -> LogPage:
        """Newest decided first; ``day`` is the day it was decided in ``zone``;
        ``labels`` names the appointment types."""
        ...

    async def week(self, practice_id: str, since: datetime) -> WeekFigures:
        """What was decided from ``since`` on."""
        ...

    async def upcoming(self, practice_id: str, now: datetime, hours: float) -> list[Scheduled]: ...

    def ready(self) -> bool: ...


class ProjectionOutcomes:
    """:class:`OutcomeSource` on the insights projection (same database as the accounts)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    def ready(self) -> bool:
        # The schema (insights_* included) was checked at start; how far the projection
        # is behind is insights' own readiness and lag, not practice-admin's.
        return True

    async def log(
        self,
        practice_id: str,
        *,
        day: date | None = None,
        status: str | None = None,
        limit: int = 500,
        labels: dict[str, str] | None = None,
        zone: ZoneInfo = ZONE,
    ) -> LogPage:
        labels = labels or {}
        async with self._sessions() as session:
            entries = await recent_outcomes(
                session, practice_id, day=day, status=status, limit=limit, by="decided", zone=zone
            )
            total = await count_outcomes(
                session, practice_id, day=day, status=status, by="decided", zone=zone
            )
        rows = [
            LogRow(
                at=e.at,
                start=e.appointment_start,
                appointment_id=e.appointment_id,
                type_label=labels.get(e.type_code or "", e.type_display or e.type_code or ""),
                patient_id=e.patient_id or "",
                status=e.status,
                reason=e.reason,
                channel=e.channel,
            )
            for e in entries
        ]
        return LogPage(rows, max(total, len(rows)))

    async def week(self, practice_id: str, since: datetime) -> WeekFigures:
        async with self._sessions() as session:
            counts = await decided_since(session, practice_id, since)
        figures = WeekFigures()
        for c in counts:
            if c.status == "sent":
                figures.sent += c.n
            elif c.status == "failed":
                figures.failed += c.n
            else:
                figures.suppressed[c.reason or "unknown"] += c.n
        return figures

    async def upcoming(self, practice_id: str, now: datetime, hours: float) -> list[Scheduled]:
        async with self._sessions() as session:
            found = await upcoming_appointments(
                session, practice_id, now, now + timedelta(hours=hours)
            )
        return [Scheduled(u.start, u.appointment_id, u.type_code) for u in found]
