"""The follow-up projection's tables (migration ``insights_0001``).

Written by the insights service, read by ``reminders report`` and practice-admin. An
appointment's row keeps its last state: a tombstone on ``appointments.v1`` (bounded
state upstream) never removes it, so the final status stays countable. Only the
pseudonymous patient id is stored; never a name, e-mail address or BSN.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, DateTime, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from services.common.db import Base

__all__ = ["FollowupAppointment", "FollowupOutcome", "FollowupPosition", "FollowupReminded"]


class FollowupAppointment(Base):
    """The latest state of one appointment (highest ``sequence`` wins)."""

    __tablename__ = "insights_appointments"

    practice_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    appointment_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    sequence: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(32))
    start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # ISO week of the start in the practice's zone (Europe/Amsterdam), e.g. "2026-W49":
    # text that sorts in time order, so a range of weeks is a range of strings.
    week: Mapped[str] = mapped_column(String(8))
    booked_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # Calendar days between booking and start, in the practice's zone.
    lead_days: Mapped[int] = mapped_column(Integer)
    type_code: Mapped[str] = mapped_column(String(64))
    type_display: Mapped[str] = mapped_column(String(200))
    patient_id: Mapped[str] = mapped_column(String(64))
    is_meeting: Mapped[bool] = mapped_column(Boolean)
    # When the state became cancelled (the cancelling version's updated_at) and the
    # booked_via that version carries (portal|phone|desk|other, as the HIS sent it); null
    # while not cancelled. The records name no "cancelled by": see docs/insights.md.
    cancelled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    cancelled_via: Mapped[str | None] = mapped_column(String(16))
    # Seconds from the cancellation to the start (was the slot freed in time?).
    cancelled_before_s: Mapped[int | None] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    # Covering the report: one practice's weeks are read from the index alone, not from
    # table pages scattered over a file that holds every practice.
    __table_args__ = (
        Index(
            "ix_insights_appointments_report",
            "practice_id",
            "week",
            "status",
            "type_code",
            "lead_days",
            "is_meeting",
            "cancelled_before_s",
            "cancelled_via",
            "cancelled_at",
            "appointment_id",
        ),
    )


class FollowupOutcome(Base):
    """One Outcome per reminder id; a repeat of the same reminder id changes nothing."""

    __tablename__ = "insights_outcomes"

    reminder_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    practice_id: Mapped[str] = mapped_column(String(64))
    appointment_id: Mapped[str] = mapped_column(String(64))
    # The appointment time the reminder was for (from the reminder id) and its week.
    start: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    week: Mapped[str] = mapped_column(String(8))
    status: Mapped[str] = mapped_column(String(16))
    channel: Mapped[str | None] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))

    # One index beside the key, covering the report's counts: every read (weeks, send log)
    # is a range of appointment times of one practice.
    __table_args__ = (
        Index(
            "ix_insights_outcomes_report",
            "practice_id",
            "start",
            "week",
            "status",
            "channel",
            "reason",
        ),
    )


class FollowupReminded(Base):
    """When an appointment's first reminder was sent (the earliest sent outcome's ``at``).

    Kept beside the outcomes so the report joins appointments by key instead of grouping
    every outcome of a practice: a rebuild of ``MIN(at)`` that the writer keeps current.
    """

    __tablename__ = "insights_reminded"

    practice_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    appointment_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    first_sent_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class FollowupPosition(Base):
    """The next offset to read per topic partition, committed with the rows it covers."""

    __tablename__ = "insights_positions"

    topic: Mapped[str] = mapped_column(String(255), primary_key=True)
    partition: Mapped[int] = mapped_column(Integer, primary_key=True)
    next_offset: Mapped[int] = mapped_column(BigInteger)
