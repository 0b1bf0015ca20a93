"""Records of ``appointments.v1`` and ``notifications.outcomes.v1`` to projection rows.

Pure functions: bytes in, row dicts out (or a :class:`DecodeError` with a reason). The
records were validated by the services that wrote them, so only the fields the follow-up
needs are read, with msgspec (times parsed in C, unknown fields skipped): that keeps a
catch-up over a million records fast. A tombstone (no value) yields no row, so the last
state stays.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Literal

import msgspec

from services.common.followup import as_utc, iso_week, lead_days, start_of_reminder
from services.domain.codec import DecodeError

__all__ = ["Row", "appointment_row", "dedupe_appointments", "dedupe_outcomes", "outcome_row"]

Row = dict[str, Any]


class _Type(msgspec.Struct):
    code: str
    display: str = ""


class _Patient(msgspec.Struct):
    id: str


class _Meeting(msgspec.Struct):
    is_meeting: bool = False


class _Appointment(msgspec.Struct):
    practice_id: str
    appointment_id: str
    sequence: int
    status: str
    start: datetime
    booked_at: datetime
    updated_at: datetime
    appointment_type: _Type
    patient: _Patient
    meeting: _Meeting | None = None
    booked_via: str | None = None


class _Outcome(msgspec.Struct):
    reminder_id: str
    practice_id: str
    appointment_id: str
    status: Literal["sent", "suppressed", "failed"]
    at: datetime
    channel: str | None = None
    reason: str | None = None


_appointments = msgspec.json.Decoder(_Appointment)
_outcomes = msgspec.json.Decoder(_Outcome)

# Many appointments share a time slot (and a booking day): the calendar is asked once.
_week = lru_cache(maxsize=65_536)(iso_week)
_lead = lru_cache(maxsize=65_536)(lead_days)


# The store's INTEGER columns are 32 bits (PostgreSQL refuses more): seconds before a
# start can reach 100 years between two accepted times (INSTANT_RANGE), 68 fit.
_INT32 = (-(2**31), 2**31 - 1)


def _int32(value: int) -> int:
    low, high = _INT32
    return low if value < low else high if value > high else value


# Characters a text column may not hold (PostgreSQL refuses NUL) or that make a shown
# code lie (line breaks, bidi overrides): records written before the edges refused them
# are still on the topic, so the projection stores a visible replacement instead.
_UNSHOWN = re.compile(r"[\x00-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")


def _shown(text: str, limit: int) -> str:
    return _UNSHOWN.sub("\ufffd", text[:limit])


def _aware(moment: datetime, name: str) -> datetime:
    zone = moment.tzinfo
    if zone is UTC:  # what the services write ("...Z"): nothing to convert
        return moment
    if zone is None:
        raise DecodeError("invalid", f"{name}: time without offset")
    return as_utc(moment)


def _decode(decoder: msgspec.json.Decoder[Any], value: bytes, what: str) -> Any:
    try:
        return decoder.decode(value)
    except msgspec.DecodeError as exc:
        kind = "not_json" if "malformed" in str(exc).lower() else "invalid"
        raise DecodeError(kind, f"{what}: {exc}") from exc


def appointment_row(value: bytes) -> Row:
    """The row of an Appointment (current state)."""
    a: _Appointment = _decode(_appointments, value, "appointment")
    start = _aware(a.start, "start")
    booked_at = _aware(a.booked_at, "booked_at")
    updated_at = _aware(a.updated_at, "updated_at")
    cancelled = a.status == "cancelled"
    return {
        "practice_id": a.practice_id,
        "appointment_id": a.appointment_id,
        "sequence": a.sequence,
        "status": a.status,
        "start": start,
        "week": _week(start),
        "booked_at": booked_at,
        "lead_days": _int32(_lead(booked_at, start)),
        "type_code": _shown(a.appointment_type.code, 64),
        "type_display": _shown(a.appointment_type.display, 200),
        "patient_id": a.patient.id,
        "is_meeting": a.meeting is not None and a.meeting.is_meeting,
        "cancelled_at": updated_at if cancelled else None,
        "cancelled_via": (a.booked_via or "other")[:16] if cancelled else None,
        "cancelled_before_s": (
            _int32(int((start - updated_at).total_seconds())) if cancelled else None
        ),
        "updated_at": updated_at,
    }


def outcome_row(value: bytes) -> Row:
    """The row of an Outcome; the appointment time comes from the reminder id."""
    o: _Outcome = _decode(_outcomes, value, "outcome")
    try:
        start = start_of_reminder(o.reminder_id)
    except ValueError as exc:
        raise DecodeError("invalid", "outcome: reminder_id names no start time") from exc
    return {
        "reminder_id": o.reminder_id[:200],
        "practice_id": o.practice_id,
        "appointment_id": o.appointment_id,
        "start": start,
        "week": _week(start),
        "status": o.status,
        "channel": o.channel[:16] if o.channel else None,
        "reason": o.reason[:64] if o.reason else None,
        "at": _aware(o.at, "at"),
    }


def dedupe_appointments(rows: Iterable[Row]) -> list[Row]:
    """One row per appointment, the highest sequence (the latest read wins a tie):
    a multi-row upsert may not touch the same row twice."""
    latest: dict[tuple[str, str], Row] = {}
    for row in rows:
        key = (row["practice_id"], row["appointment_id"])
        held = latest.get(key)
        if held is None or row["sequence"] >= held["sequence"]:
            latest[key] = row
    return list(latest.values())


def dedupe_outcomes(rows: Iterable[Row]) -> list[Row]:
    """One row per reminder id, the first read (as the database keeps the first)."""
    first: dict[str, Row] = {}
    for row in rows:
        first.setdefault(row["reminder_id"], row)
    return list(first.values())
