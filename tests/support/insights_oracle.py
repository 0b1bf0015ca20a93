"""The follow-up figures counted straight from a synthetic workload's ground truth.

Written apart from ``services.common.followup`` on purpose (its own calendar arithmetic,
its own counting), so a test that compares the two checks the projection, not itself.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from devkit.insights_samples import FollowupWorkload

AMS = ZoneInfo("Europe/Amsterdam")

Figures = dict[tuple[str, str, str], tuple[int, int | None]]


def week_of(moment: datetime) -> str:
    local = moment.astimezone(AMS).date()
    iso = local.isocalendar()
    return f"{iso.year}-W{iso.week:02d}"


def last_weeks(now: datetime, count: int) -> list[str]:
    today: date = now.astimezone(AMS).date()
    monday = today - timedelta(days=today.weekday())
    return sorted(
        {
            week_of(datetime(d.year, d.month, d.day, 12, tzinfo=AMS))
            for d in (monday - timedelta(days=7 * i) for i in range(count))
        }
    )


def lead_key(booked_at: datetime, start: datetime) -> str:
    days = (start.astimezone(AMS).date() - booked_at.astimezone(AMS).date()).days
    if days <= 0:
        return "lead:same_day"
    if days == 1:
        return "lead:1_day"
    if days <= 7:
        return "lead:2_7_days"
    return "lead:over_a_week"


def oracle(workload: FollowupWorkload, practice_id: str, weeks: list[str]) -> Figures:
    wanted = set(weeks)
    counts: dict[tuple[str, str, str], int] = defaultdict(int)
    bases: dict[tuple[str, str, str], int] = defaultdict(int)
    for week in weeks:
        counts[(week, "appointments", "")] += 0
        bases[(week, "reach", "")] += 0

    first_sent: dict[str, datetime] = {}
    for o in workload.outcomes.values():
        if o.practice_id != practice_id:
            continue
        if o.status == "sent":
            held = first_sent.get(o.appointment_id)
            first_sent[o.appointment_id] = o.at if held is None else min(held, o.at)
        week = week_of(o.start)
        if week not in wanted:
            continue
        key = o.channel if o.status == "sent" else o.reason
        counts[(week, o.status, key or "unknown")] += 1

    for a in workload.appointments.values():
        if a.practice_id != practice_id or a.is_meeting:
            continue
        week = week_of(a.start)
        if week not in wanted:
            continue
        counts[(week, "appointments", "")] += 1
        sent_at = first_sent.get(a.appointment_id)
        if not (a.status == "cancelled" and sent_at is None):
            bases[(week, "reach", "")] += 1
            if sent_at is not None:
                counts[(week, "reach", "")] += 1
        if a.status in ("noshow", "fulfilled"):
            group = "noshow_reminded" if sent_at is not None else "noshow_not_reminded"
            for key in ("all", f"type:{a.type_code}", lead_key(a.booked_at, a.start)):
                bases[(week, group, key)] += 1
                counts[(week, group, key)] += a.status == "noshow"
        if a.status == "cancelled" and sent_at is not None and a.cancelled_at is not None:
            if a.cancelled_at <= sent_at:
                continue
            hours = (a.start - a.cancelled_at).total_seconds() / 3600
            bucket = "under_2h" if hours < 2 else "2_to_12h" if hours < 12 else "12h_or_more"
            for key in ("all", bucket, f"via:{a.cancelled_via}"):
                counts[(week, "cancelled_after_reminder", key)] += 1
            if hours >= 2:
                counts[(week, "cancelled_after_reminder", "in_time")] += 1

    figures: Figures = {k: (counts[k], b) for k, b in bases.items()}
    for k, n in counts.items():
        if k not in bases and (n or k[1] == "appointments"):
            figures[k] = (n, None)
    return figures
