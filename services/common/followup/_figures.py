"""The follow-up figures per practice and ISO week, read from the projection.

The definitions (docs/insights.md says the same in words):

- *appointments*: not a meeting about a patient, not entered in error; the week is the
  week of the appointment's (last) start in Europe/Amsterdam.
- *sent / suppressed / failed*: outcomes by channel or reason, in the week of the
  appointment time the reminder was for.
- *reminded*: at least one reminder of the appointment was sent.
- *reach*: reminded appointments among the remindable ones (all appointments but those
  cancelled without a reminder sent).
- *no-show rate*: noshow among appointments that ended fulfilled or noshow, reminded
  beside not reminded; overall, by appointment type and by booking lead time.
- *cancelled after a reminder*: cancelled later than the first sent reminder, by how long
  before the start (in time: 2 hours or more) and by the door the cancellation came
  through (portal: the patient).

Patients choose reminders themselves, so reminded beside not reminded is a comparison,
not a trial; every rate carries its base so a reader sees when it rests on few cases.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta

from sqlalchemy import and_, case, func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from services.common.followup._calendar import ZONE, week_monday, weeks_back
from services.common.followup._tables import (
    FollowupAppointment,
    FollowupOutcome,
    FollowupReminded,
)

__all__ = [
    "CANCEL_BUCKETS",
    "CAUTION",
    "AppointmentFact",
    "Figure",
    "OutcomeCount",
    "Report",
    "build_report",
    "figures_from_facts",
]

CAUTION = (
    "Patients choose reminders themselves, so the comparison between reminded and not "
    "reminded patients is not a trial: the groups differ in more than the reminder."
)
CANCEL_BUCKETS: tuple[str, ...] = ("under_2h", "2_to_12h", "12h_or_more")
_IN_TIME_SECONDS = 2 * 3600

Executor = AsyncSession | AsyncConnection


@dataclass(frozen=True, order=True)
class Figure:
    """One number of the report; a rate has a ``base`` (its denominator)."""

    week: str
    measure: str
    key: str
    count: int
    base: int | None = None

    @property
    def rate(self) -> float | None:
        if self.base is None or self.base == 0:
            return None
        return self.count / self.base


@dataclass(frozen=True)
class AppointmentFact:
    """Appointments alike in all the figures look at, and how many (``n``)."""

    week: str
    type_code: str
    status: str
    lead: str
    reminded: bool
    # Cancelled later than the first sent reminder; then how long before the start.
    cancelled_after_reminder: bool
    cancel_bucket: str | None
    cancelled_via: str | None
    n: int = 1


@dataclass(frozen=True)
class OutcomeCount:
    week: str
    status: str
    channel: str | None
    reason: str | None
    count: int


@dataclass(frozen=True)
class Report:
    practice_id: str
    weeks: list[str]
    figures: list[Figure]

    def value(self, week: str, measure: str, key: str = "") -> Figure | None:
        for figure in self.figures:
            if (figure.week, figure.measure, figure.key) == (week, measure, key):
                return figure
        return None

    def by_measure(self, measure: str) -> list[Figure]:
        return [f for f in self.figures if f.measure == measure]


def figures_from_facts(
    weeks: list[str], appointments: list[AppointmentFact], outcomes: list[OutcomeCount]
) -> list[Figure]:
    """The figures, from facts: the one place that counts (SQL only selects)."""
    wanted = set(weeks)
    counts: Counter[tuple[str, str, str]] = Counter()
    bases: Counter[tuple[str, str, str]] = Counter()
    for week in weeks:
        counts[(week, "appointments", "")] += 0
        bases[(week, "reach", "")] += 0
    for o in outcomes:
        if o.week not in wanted:
            continue
        if o.status == "sent":
            counts[(o.week, "sent", o.channel or "unknown")] += o.count
        else:
            counts[(o.week, o.status, o.reason or "unknown")] += o.count
    for a in appointments:
        if a.week not in wanted:
            continue
        w, n = a.week, a.n
        counts[(w, "appointments", "")] += n
        if a.status != "cancelled" or a.reminded:
            bases[(w, "reach", "")] += n
            if a.reminded:
                counts[(w, "reach", "")] += n
        if a.status in ("fulfilled", "noshow"):
            measure = "noshow_reminded" if a.reminded else "noshow_not_reminded"
            noshows = n if a.status == "noshow" else 0
            for key in ("all", f"type:{a.type_code}", f"lead:{a.lead}"):
                bases[(w, measure, key)] += n
                counts[(w, measure, key)] += noshows
        if a.status == "cancelled" and a.cancelled_after_reminder:
            bucket = a.cancel_bucket or "12h_or_more"
            counts[(w, "cancelled_after_reminder", "all")] += n
            counts[(w, "cancelled_after_reminder", bucket)] += n
            if bucket != "under_2h":
                counts[(w, "cancelled_after_reminder", "in_time")] += n
            counts[(w, "cancelled_after_reminder", f"via:{a.cancelled_via or 'other'}")] += n
    figures = [Figure(w, m, k, counts.get((w, m, k), 0), base) for (w, m, k), base in bases.items()]
    figures += [Figure(w, m, k, n) for (w, m, k), n in counts.items() if (w, m, k) not in bases]
    return sorted(figures)


async def build_report(
    executor: Executor, practice_id: str, *, until: datetime, weeks: int = 12
) -> Report:
    """The figures of the ``weeks`` ISO weeks up to the one holding ``until``."""
    names = weeks_back(until, weeks)
    a = FollowupAppointment.__table__
    o = FollowupOutcome.__table__
    r = FollowupReminded.__table__
    first = datetime.combine(week_monday(names[0]), time.min, tzinfo=ZONE).astimezone(UTC)
    last = datetime.combine(
        week_monday(names[-1]) + timedelta(days=7), time.min, tzinfo=ZONE
    ).astimezone(UTC)
    sent_at = r.c.first_sent_at
    lead = case(
        (a.c.lead_days <= 0, "same_day"),
        (a.c.lead_days == 1, "1_day"),
        (a.c.lead_days <= 7, "2_7_days"),
        else_="over_a_week",
    ).label("lead")
    reminded = case((sent_at.is_(None), 0), else_=1).label("reminded")
    after = case(
        (and_(a.c.status == "cancelled", sent_at.is_not(None), a.c.cancelled_at > sent_at), 1),
        else_=0,
    ).label("after")
    bucket = case(
        (a.c.cancelled_before_s.is_(None), None),
        (a.c.cancelled_before_s < _IN_TIME_SECONDS, "under_2h"),
        (a.c.cancelled_before_s < 12 * 3600, "2_to_12h"),
        else_="12h_or_more",
    ).label("bucket")
    columns = (
        a.c.week,
        a.c.type_code,
        a.c.status,
        lead,
        reminded,
        after,
        bucket,
        a.c.cancelled_via,
    )
    rows = await executor.execute(
        select(*columns, func.count().label("n"))
        .select_from(
            a.outerjoin(
                r,
                and_(r.c.practice_id == a.c.practice_id, r.c.appointment_id == a.c.appointment_id),
            )
        )
        .where(
            a.c.practice_id == practice_id,
            a.c.week.in_(names),
            a.c.is_meeting.is_(False),
            a.c.status != "entered-in-error",
        )
        .group_by(*columns)
    )
    facts = [
        AppointmentFact(
            week=r.week,
            type_code=r.type_code,
            status=r.status,
            lead=r.lead,
            reminded=bool(r.reminded),
            cancelled_after_reminder=bool(r.after),
            cancel_bucket=r.bucket,
            cancelled_via=r.cancelled_via,
            n=r.n,
        )
        for r in rows
    ]
    grouped = await executor.execute(
        select(o.c.week, o.c.status, o.c.channel, o.c.reason, func.count().label("n"))
        .where(o.c.practice_id == practice_id, o.c.start >= first, o.c.start < last)
        .group_by(o.c.week, o.c.status, o.c.channel, o.c.reason)
    )
    counts = [OutcomeCount(r.week, r.status, r.channel, r.reason, r.n) for r in grouped]
    return Report(practice_id, names, figures_from_facts(names, facts, counts))
