"""Records of ``appointments.v1`` and ``notifications.outcomes.v1`` to projection rows.

Pure functions: bytes in, row dicts out (or a :class:`DecodeError` with a reason). The
records were validated by the services that wrote them, so only the fields the follow-up
needs are read (orjson, no model validation): that keeps a catch-up over a million
records fast. A tombstone (no value) yields no row, so the last state stays.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import orjson

from services.common.codec import DecodeError
from services.common.followup import as_utc, iso_week, lead_days, start_of_reminder

__all__ = ["Row", "appointment_row", "dedupe_appointments", "dedupe_outcomes", "outcome_row"]

Row = dict[str, Any]

_STATUSES = frozenset({"sent", "suppressed", "failed"})


def _time(value: object, name: str) -> datetime:
    if not isinstance(value, str):
        raise DecodeError("invalid", f"{name}: not a time")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise DecodeError("invalid", f"{name}: not an RFC 3339 time") from exc
    if moment.tzinfo is None:
        raise DecodeError("invalid", f"{name}: time without offset")
    return as_utc(moment)


def _object(value: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise DecodeError("not_json", "the value is not JSON") from exc
    if not isinstance(data, dict):
        raise DecodeError("invalid", "the value is not a JSON object")
    return data


def appointment_row(value: bytes) -> Row:
    """The row of an Appointment (current state)."""
    data = _object(value)
    try:
        start = _time(data["start"], "start")
        booked_at = _time(data["booked_at"], "booked_at")
        updated_at = _time(data["updated_at"], "updated_at")
        status = str(data["status"])
        kind = data.get("appointment_type") or {}
        cancelled = status == "cancelled"
        return {
            "practice_id": str(data["practice_id"]),
            "appointment_id": str(data["appointment_id"]),
            "sequence": int(data["sequence"]),
            "status": status,
            "start": start,
            "week": iso_week(start),
            "booked_at": booked_at,
            "lead_days": lead_days(booked_at, start),
            "type_code": str(kind["code"])[:64],
            "type_display": str(kind.get("display") or "")[:200],
            "patient_id": str(data["patient"]["id"]),
            "is_meeting": bool((data.get("meeting") or {}).get("is_meeting", False)),
            "cancelled_at": updated_at if cancelled else None,
            "cancelled_via": str(data.get("booked_via") or "other")[:16] if cancelled else None,
            "cancelled_before_s": (
                int((start - updated_at).total_seconds()) if cancelled else None
            ),
            "updated_at": updated_at,
        }
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, DecodeError):
            raise
        raise DecodeError("invalid", f"appointment: missing or bad field {exc}") from exc


def outcome_row(value: bytes) -> Row:
    """The row of an Outcome; the appointment time comes from the reminder id."""
    data = _object(value)
    try:
        reminder_id = str(data["reminder_id"])
        start = start_of_reminder(reminder_id)
        status = str(data["status"])
        if status not in _STATUSES:
            raise DecodeError("invalid", f"outcome: unknown status {status!r}")
        channel = data.get("channel")
        reason = data.get("reason")
        return {
            "reminder_id": reminder_id[:200],
            "practice_id": str(data["practice_id"]),
            "appointment_id": str(data["appointment_id"]),
            "start": start,
            "week": iso_week(start),
            "status": status,
            "channel": str(channel)[:16] if channel else None,
            "reason": str(reason)[:64] if reason else None,
            "at": _time(data["at"], "at"),
        }
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, DecodeError):
            raise
        raise DecodeError("invalid", f"outcome: missing or bad field {exc}") from exc


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
