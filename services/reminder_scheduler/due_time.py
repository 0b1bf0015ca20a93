"""When a reminder is due: the rule of DESIGN.md as a pure function.

1. The planned moment: ``start - hours`` (``hours_before``, real elapsed hours), or the
   previous local calendar day at ``time`` (``day_before_at``), in the practice's time
   zone.
2. If that moment is inside quiet hours it moves **earlier**, to the start of the quiet
   window (never later).
3. If the appointment was booked after the planned moment: booked less than
   ``skip_if_booked_within_hours`` before the start gives ``booked_recently``;
   otherwise the reminder is due at once, or at the end of the quiet window when the
   booking came in during quiet hours.
4. A reminder must go out at least ``min_lead_minutes`` before the start; when the rule
   finds no moment that early it gives ``too_late``.

A reason means "no good moment": the reminder is due at once (at ``booked_at``, or at
``now`` when given) so that the notifier records why nothing was sent.

Local times that do not exist or occur twice (the DST changes) take the earliest
reading: 02:30 on the spring-forward night of Europe/Amsterdam (clocks jump from 02:00
to 03:00) is read with the summer offset, 00:30 UTC (01:30 local winter time, before the
jump); 02:30 on the fall-back night is its first occurrence (summer time). So a reminder
is never later than the wall-clock time asked for.

Quiet hours are the open interval between ``start`` and ``end`` in local wall time,
wrapping midnight when ``start > end``: a reminder at exactly 21:00 or exactly 08:00 is
allowed. Everything here is pure: no clock is read, ``now`` is an argument.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from schemas.models import DayBeforeAt, HoursBefore, PracticeConfig, QuietHours

__all__ = [
    "Due",
    "Policy",
    "Reason",
    "compute_due",
    "earliest_instant",
    "first_outside_quiet",
    "in_quiet_hours",
    "last_outside_quiet",
    "planned_moment",
]

Reason = Literal["booked_recently", "too_late"]

# A quiet-window boundary is searched for on at most this many neighbouring local
# dates; one of the first two always has a usable one, the third covers a DST gap.
_SEARCH_DAYS = 3


@dataclass(frozen=True, slots=True)
class Policy:
    """The part of a practice's config that decides when its reminders are due."""

    timezone: ZoneInfo
    send: HoursBefore | DayBeforeAt
    quiet_hours: QuietHours | None
    min_lead: timedelta
    skip_if_booked_within: timedelta

    @classmethod
    def from_config(cls, config: PracticeConfig | None) -> Policy:
        """The config's policy; no config (never sent, or a tombstone) means the defaults."""
        if config is None:
            return DEFAULT_POLICY
        return cls(
            timezone=ZoneInfo(config.timezone),
            send=config.send,
            quiet_hours=config.quiet_hours,
            min_lead=timedelta(minutes=config.min_lead_minutes),
            skip_if_booked_within=timedelta(hours=config.skip_if_booked_within_hours),
        )


def _default_policy() -> Policy:
    fields = PracticeConfig.model_fields
    return Policy(
        timezone=ZoneInfo(fields["timezone"].default),
        send=fields["send"].default,
        quiet_hours=fields["quiet_hours"].default,
        min_lead=timedelta(minutes=fields["min_lead_minutes"].default),
        skip_if_booked_within=timedelta(hours=fields["skip_if_booked_within_hours"].default),
    )


DEFAULT_POLICY = _default_policy()


@dataclass(frozen=True, slots=True)
class Due:
    """When a reminder is due, and why it is due at once when there is no good moment."""

    at: datetime
    reason: Reason | None = None


# --------------------------------------------------------------------------- local time


def _reading(day: dt.date, time: dt.time, tz: ZoneInfo, fold: int) -> datetime:
    return datetime.combine(day, time, tzinfo=tz).replace(fold=fold).astimezone(UTC)


def earliest_instant(day: dt.date, time: dt.time, tz: ZoneInfo) -> datetime:
    """The instant of a local wall-clock time; the earlier reading in a DST gap or overlap."""
    return min(_reading(day, time, tz, 0), _reading(day, time, tz, 1))


def in_quiet_hours(moment: datetime, policy: Policy) -> bool:
    """Whether the local wall time is strictly inside the quiet window."""
    quiet = policy.quiet_hours
    if quiet is None:
        return False
    wall = moment.astimezone(policy.timezone).time()
    if quiet.start < quiet.end:
        return quiet.start < wall < quiet.end
    return wall > quiet.start or wall < quiet.end


def _boundary(moment: datetime, policy: Policy, *, later: bool) -> datetime:
    """The nearest quiet-window boundary before (or after) ``moment`` that is not quiet.

    Readings of one local date lie at least 22 hours from those of the next, so the
    first date that yields a reading is the nearest.
    """
    quiet = policy.quiet_hours
    assert quiet is not None
    tz = policy.timezone
    today = moment.astimezone(tz).date()
    step, time, pick = (1, quiet.end, min) if later else (-1, quiet.start, max)
    for days in range(_SEARCH_DAYS):
        day = today + timedelta(days=step * days)
        readings = []
        for fold in (0, 1):
            reading = _reading(day, time, tz, fold)
            on_side = reading >= moment if later else reading <= moment
            if on_side and not in_quiet_hours(reading, policy):
                readings.append(reading)
        if readings:
            return pick(readings)
    raise ValueError("no moment outside the quiet window found")  # pragma: no cover


def last_outside_quiet(moment: datetime, policy: Policy) -> datetime:
    """``moment`` itself, or the start of the quiet window it falls in (earlier)."""
    if not in_quiet_hours(moment, policy):
        return moment
    return _boundary(moment, policy, later=False)


def first_outside_quiet(moment: datetime, policy: Policy) -> datetime:
    """``moment`` itself, or the end of the quiet window it falls in (later)."""
    if not in_quiet_hours(moment, policy):
        return moment
    return _boundary(moment, policy, later=True)


# --------------------------------------------------------------------------- the rule


def planned_moment(start: datetime, policy: Policy) -> datetime:
    """Steps 1 and 2: the send policy's moment, moved earlier out of quiet hours."""
    send = policy.send
    if isinstance(send, HoursBefore):
        base = start.astimezone(UTC) - timedelta(hours=send.hours)
    else:
        local_day = start.astimezone(policy.timezone).date()
        base = earliest_instant(local_day - timedelta(days=1), send.time, policy.timezone)
    return last_outside_quiet(base, policy)


def compute_due(
    start: datetime,
    booked_at: datetime,
    policy: Policy,
    now: datetime | None = None,
    *,
    planned: datetime | None = None,
) -> Due:
    """When the reminder of an appointment at ``start`` is due (steps 1-4).

    Without ``now`` the answer depends only on the appointment and the policy, so a
    reload plans the same moment again. With ``now`` (a timer that fires late, e.g.
    after the service was down) the moment is re-decided as if the appointment became
    known at ``now``: at once, after the quiet window, or ``too_late``. ``planned`` is
    ``planned_moment(start, policy)`` when the caller has it already (it caches them:
    many appointments share a start).
    """
    # Aware datetimes that share a tzinfo subtract as wall clocks: work in UTC.
    start = start.astimezone(UTC)
    booked_at = booked_at.astimezone(UTC)
    if now is not None:
        now = now.astimezone(UTC)
    if planned is None:
        planned = planned_moment(start, policy)
    if booked_at > planned and start - booked_at < policy.skip_if_booked_within:
        return Due(booked_at, "booked_recently")
    known = booked_at if now is None else max(booked_at, now)
    due = planned if known <= planned else first_outside_quiet(known, policy)
    if due > start - policy.min_lead:
        return Due(known, "too_late")
    return Due(due)
