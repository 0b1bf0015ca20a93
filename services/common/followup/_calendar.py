"""Weeks and lead times in the practice's zone: the calendar both sides of the projection use."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

__all__ = [
    "LEAD_BUCKETS",
    "ZONE",
    "as_utc",
    "iso_week",
    "lead_bucket",
    "lead_days",
    "start_of_reminder",
    "week_monday",
    "weeks_back",
]

# Dutch practices; the follow-up counts weeks as the practice's calendar does.
ZONE = ZoneInfo("Europe/Amsterdam")

# How far ahead an appointment was booked, in calendar days of the practice's zone.
LEAD_BUCKETS: tuple[str, ...] = ("same_day", "1_day", "2_7_days", "over_a_week")


def as_utc(moment: datetime) -> datetime:
    """Aware and in UTC; a naive value (SQLite gives these back) is read as UTC."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def iso_week(moment: datetime) -> str:
    """``2026-W49``: ISO year and week of the moment in Europe/Amsterdam."""
    year, week, _ = as_utc(moment).astimezone(ZONE).isocalendar()
    return f"{year:04d}-W{week:02d}"


def week_monday(week: str) -> date:
    year, number = week.split("-W")
    return date.fromisocalendar(int(year), int(number), 1)


def weeks_back(until: datetime, count: int) -> list[str]:
    """The ``count`` ISO weeks ending with the one holding ``until``, oldest first."""
    monday = week_monday(iso_week(until))
    return [
        f"{d.isocalendar()[0]:04d}-W{d.isocalendar()[1]:02d}"
        for d in (monday - timedelta(weeks=n) for n in range(count - 1, -1, -1))
    ]


def lead_days(booked_at: datetime, start: datetime) -> int:
    booked = as_utc(booked_at).astimezone(ZONE).date()
    day = as_utc(start).astimezone(ZONE).date()
    return max(0, (day - booked).days)


def lead_bucket(days: int) -> str:
    if days <= 0:
        return "same_day"
    if days == 1:
        return "1_day"
    if days <= 7:
        return "2_7_days"
    return "over_a_week"


def start_of_reminder(reminder_id: str) -> datetime:
    """The appointment time a reminder id names (``{practice}/{appointment}/{start UTC}``)."""
    text = reminder_id.rsplit("/", 1)[-1]
    # fromisoformat, not strptime: this runs for every outcome of a catch-up.
    if len(text) != 20 or not text.endswith("Z"):
        raise ValueError(f"not a reminder id's start time: {text!r}")
    return datetime.fromisoformat(text).astimezone(UTC)
