"""What was sent, per practice: the verzendlog and the overview's figures.

Pages ask an :class:`OutcomeSource`; today's source is :class:`KafkaOutcomeWindow`, which
tails ``notifications.outcomes.v1`` (read_committed: only the notifier's committed
ledger) and ``appointments.v1`` from their beginning and keeps a bounded recent window
per practice in memory. When the insights projection is in the database, a source that
queries it replaces this one behind the same protocol.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from aiokafka import ConsumerRecord
from pydantic import ValidationError

from schemas.models import Appointment, Outcome
from services.common.codec import DecodeError, decode
from services.common.settings import KafkaSettings
from services.common.table import TopicFollower
from services.common.topics import Topics

__all__ = [
    "KafkaOutcomeWindow",
    "LogRow",
    "OutcomeSource",
    "Scheduled",
    "WeekFigures",
    "summarise",
]

log = logging.getLogger(__name__)


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
    def outcomes(self, practice_id: str, labels: dict[str, str] | None = None) -> list[LogRow]:
        """Newest first; ``labels`` names the appointment types."""
        ...

    def upcoming(self, practice_id: str, now: datetime, hours: float) -> list[Scheduled]: ...

    def ready(self) -> bool: ...


def summarise(rows: Iterable[LogRow], since: datetime) -> WeekFigures:
    figures = WeekFigures()
    for row in rows:
        if row.at < since:
            continue
        if row.status == "sent":
            figures.sent += 1
        elif row.status == "failed":
            figures.failed += 1
        else:
            figures.suppressed[row.reason or "unknown"] += 1
    return figures


@dataclass(frozen=True)
class _Appt:
    start: datetime
    status: str
    is_meeting: bool
    type_code: str
    patient_id: str


def _start_of(reminder_id: str) -> datetime | None:
    # {practice_id}/{appointment_id}/{start in UTC}
    try:
        return datetime.fromisoformat(reminder_id.rsplit("/", 1)[1].replace("Z", "+00:00"))
    except (IndexError, ValueError):
        return None


class KafkaOutcomeWindow:
    """The last ``per_practice`` outcomes of every practice, and appointments' near state."""

    def __init__(
        self,
        settings: KafkaSettings,
        *,
        per_practice: int = 2000,
        keep_appointments: timedelta = timedelta(days=8),
    ) -> None:
        topics = Topics(settings.topic_prefix)
        self._outcomes: dict[str, deque[Outcome]] = {}
        self._appointments: dict[str, dict[str, _Appt]] = {}
        self._per_practice = per_practice
        self._keep = keep_appointments
        self._followers = [
            TopicFollower(settings, topics.outcomes, self._on_outcome, name="admin-outcomes"),
            TopicFollower(
                settings, topics.appointments, self._on_appointment, name="admin-appointments"
            ),
        ]
        self._loaded = False

    async def start(self) -> None:
        for follower in self._followers:
            await follower.start()
            await follower.add(range(await follower.partition_count()))
        for follower in self._followers:
            await follower.wait_loaded()
        self._loaded = True

    async def stop(self) -> None:
        for follower in self._followers:
            await follower.stop()

    def ready(self) -> bool:
        return self._loaded

    # ------------------------------------------------------------------ applying
    def _on_outcome(
        self, partition: int, key: str, value: bytes | None, record: ConsumerRecord[bytes, bytes]
    ) -> None:
        if value is None:
            return
        try:
            outcome = decode(Outcome, value)
        except (DecodeError, ValidationError):
            return
        window = self._outcomes.get(outcome.practice_id)
        if window is None:
            window = self._outcomes[outcome.practice_id] = deque(maxlen=self._per_practice)
        window.append(outcome)

    def _on_appointment(
        self, partition: int, key: str, value: bytes | None, record: ConsumerRecord[bytes, bytes]
    ) -> None:
        practice_id, _, appointment_id = key.partition("/")
        rows = self._appointments.setdefault(practice_id, {})
        if value is None:
            rows.pop(appointment_id, None)
            return
        try:
            appt = decode(Appointment, value)
        except (DecodeError, ValidationError):
            return
        rows[appointment_id] = _Appt(
            start=appt.start,
            status=appt.status,
            is_meeting=appt.meeting.is_meeting,
            type_code=appt.appointment_type.code,
            patient_id=appt.patient.id,
        )

    # ------------------------------------------------------------------ reading
    def outcomes(self, practice_id: str, labels: dict[str, str] | None = None) -> list[LogRow]:
        appointments = self._appointments.get(practice_id, {})
        rows: list[LogRow] = []
        for outcome in self._outcomes.get(practice_id, ()):
            appt = appointments.get(outcome.appointment_id)
            code = appt.type_code if appt is not None else ""
            rows.append(
                LogRow(
                    at=outcome.at,
                    start=_start_of(outcome.reminder_id),
                    appointment_id=outcome.appointment_id,
                    type_label=(labels or {}).get(code, code),
                    patient_id=appt.patient_id if appt is not None else "",
                    status=outcome.status,
                    reason=outcome.reason,
                    channel=outcome.channel,
                )
            )
        rows.sort(key=lambda r: r.at, reverse=True)
        return rows

    def upcoming(self, practice_id: str, now: datetime, hours: float) -> list[Scheduled]:
        until = now + timedelta(hours=hours)
        rows = self._appointments.get(practice_id, {})
        found = [
            Scheduled(start=a.start, appointment_id=appointment_id, type_label=a.type_code)
            for appointment_id, a in rows.items()
            if a.status == "booked" and not a.is_meeting and now <= a.start < until
        ]
        # Keep the window bounded: appointments long past are forgotten.
        horizon = now - self._keep
        for appointment_id in [k for k, a in rows.items() if a.start < horizon]:
            del rows[appointment_id]
        return sorted(found, key=lambda s: s.start)
