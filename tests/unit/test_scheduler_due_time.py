"""The due-time rule (DESIGN.md, "When a reminder is due"), by example and by property.

The properties walk the DST changes of 2026 and 2027 in Europe/Amsterdam and local
midnight, with random send policies, quiet windows (also ones that wrap midnight or
start inside the DST gap), minimum leads and booking moments.
"""

from __future__ import annotations

import datetime as dt
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from hypothesis import example, given, settings
from hypothesis import strategies as st

from schemas.models import DayBeforeAt, HoursBefore, PracticeConfig, QuietHours
from services.reminder_scheduler.due_time import (
    DEFAULT_POLICY,
    Due,
    Policy,
    compute_due,
    earliest_instant,
    first_outside_quiet,
    in_quiet_hours,
    last_outside_quiet,
    planned_moment,
)

AMS = ZoneInfo("Europe/Amsterdam")
QUIET = QuietHours(start=dt.time(21, 0), end=dt.time(8, 0))


def policy(
    send: HoursBefore | DayBeforeAt | None = None,
    quiet: QuietHours | None = QUIET,
    min_lead_minutes: int = 60,
    skip_hours: float = 12,
    tz: ZoneInfo = AMS,
) -> Policy:
    return Policy(
        timezone=tz,
        send=send or HoursBefore(hours=24),
        quiet_hours=quiet,
        min_lead=timedelta(minutes=min_lead_minutes),
        skip_if_booked_within=timedelta(hours=skip_hours),
    )


def local(*args: int) -> datetime:
    """A local Amsterdam wall time (first reading when ambiguous)."""
    return datetime(*args, tzinfo=AMS)  # type: ignore[arg-type,misc]


LONG_AGO = timedelta(days=20)

# --------------------------------------------------------------------------- examples


def test_hours_before_counts_real_hours_across_spring_forward() -> None:
    start = local(2026, 3, 29, 9, 0)  # 07:00 UTC, summer time since 01:00 UTC
    due = compute_due(start, start - LONG_AGO, policy())
    assert due == Due(datetime(2026, 3, 28, 7, 0, tzinfo=UTC))
    assert due.at.astimezone(AMS).hour == 8  # 24 real hours: 08:00 winter time


def test_hours_before_counts_real_hours_across_fall_back() -> None:
    start = local(2026, 10, 25, 9, 0)  # winter time (UTC+1) since 01:00 UTC
    due = compute_due(start, start - LONG_AGO, policy())
    assert due.at == datetime(2026, 10, 24, 8, 0, tzinfo=UTC)
    assert due.at.astimezone(AMS).hour == 10


def test_day_before_at_is_the_previous_local_date() -> None:
    send = DayBeforeAt(policy="day_before_at", time=dt.time(18, 0))
    start = local(2026, 3, 30, 0, 15)  # just after midnight, the day after the change
    due = compute_due(start, start - LONG_AGO, policy(send))
    assert due.at == local(2026, 3, 29, 18, 0)


def test_day_before_at_in_the_spring_gap_takes_the_earlier_reading() -> None:
    send = DayBeforeAt(policy="day_before_at", time=dt.time(2, 30))
    start = local(2026, 3, 30, 10, 0)
    due = compute_due(start, start - LONG_AGO, policy(send, quiet=None))
    # 02:30 does not exist on 29 March 2026; read with the summer offset it is 00:30
    # UTC, i.e. 01:30 winter time, before the jump: never later than asked.
    assert due.at == datetime(2026, 3, 29, 0, 30, tzinfo=UTC)
    assert earliest_instant(dt.date(2026, 3, 29), dt.time(2, 30), AMS) == due.at


def test_day_before_at_in_the_autumn_overlap_takes_the_first_occurrence() -> None:
    send = DayBeforeAt(policy="day_before_at", time=dt.time(2, 30))
    start = local(2026, 10, 26, 10, 0)
    due = compute_due(start, start - LONG_AGO, policy(send, quiet=None))
    assert due.at == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)  # 02:30 summer time


def test_quiet_hours_move_the_moment_earlier() -> None:
    start = local(2026, 6, 10, 7, 30)  # 24 h before is 07:30, inside 21:00-08:00
    due = compute_due(start, start - LONG_AGO, policy())
    assert due.at == local(2026, 6, 8, 21, 0)


def test_quiet_hours_that_do_not_wrap_midnight() -> None:
    quiet = QuietHours(start=dt.time(12, 0), end=dt.time(14, 0))
    start = local(2026, 6, 10, 13, 0)
    due = compute_due(start, start - LONG_AGO, policy(quiet=quiet))
    assert due.at == local(2026, 6, 9, 12, 0)


def test_the_window_edges_are_not_quiet() -> None:
    p = policy()
    assert not in_quiet_hours(local(2026, 6, 10, 21, 0), p)
    assert not in_quiet_hours(local(2026, 6, 10, 8, 0), p)
    assert in_quiet_hours(local(2026, 6, 10, 21, 0, 1), p)
    assert in_quiet_hours(local(2026, 6, 10, 0, 0), p)
    assert last_outside_quiet(local(2026, 6, 10, 3, 0), p) == local(2026, 6, 9, 21, 0)
    assert first_outside_quiet(local(2026, 6, 10, 3, 0), p) == local(2026, 6, 10, 8, 0)


def test_booked_recently() -> None:
    start = local(2026, 6, 10, 10, 0)
    booked = start - timedelta(hours=5)
    assert compute_due(start, booked, policy()) == Due(booked.astimezone(UTC), "booked_recently")


def test_booked_after_the_moment_but_long_enough_before_is_due_at_once() -> None:
    start = local(2026, 6, 10, 10, 0)
    booked = start - timedelta(hours=20)  # 14:00 the day before, not quiet
    assert compute_due(start, booked, policy()) == Due(booked.astimezone(UTC))


def test_booked_during_quiet_hours_is_due_when_they_end() -> None:
    start = local(2026, 6, 11, 10, 0)
    booked = local(2026, 6, 9, 23, 30)  # after the 24 h moment? no: 34.5 h before
    assert compute_due(start, booked, policy()).at == local(2026, 6, 10, 10, 0)
    start = local(2026, 6, 10, 20, 0)
    booked = local(2026, 6, 9, 23, 30)  # 20.5 h before, after the moment, in quiet
    assert compute_due(start, booked, policy()) == Due(local(2026, 6, 10, 8, 0))


def test_too_late_when_no_moment_respects_the_minimum_lead() -> None:
    start = local(2026, 6, 10, 10, 0)
    booked = start - LONG_AGO
    p = policy(HoursBefore(hours=0.5), min_lead_minutes=60)
    assert compute_due(start, booked, p) == Due(booked.astimezone(UTC), "too_late")
    # booked in quiet hours, and the window ends too close to the start
    start = local(2026, 6, 10, 8, 30)
    booked = local(2026, 6, 10, 2, 0)
    assert compute_due(start, booked, policy(skip_hours=0)).reason == "too_late"


def test_a_late_timer_is_decided_again_at_now() -> None:
    start = local(2026, 6, 10, 10, 0)
    booked = start - LONG_AGO
    p = policy()
    assert compute_due(start, booked, p, now=local(2026, 6, 9, 15, 0)) == Due(
        local(2026, 6, 9, 15, 0).astimezone(UTC)
    )
    assert compute_due(start, booked, p, now=local(2026, 6, 9, 22, 0)) == Due(
        local(2026, 6, 10, 8, 0)
    )
    late = local(2026, 6, 10, 9, 30)
    assert compute_due(start, booked, p, now=late) == Due(late.astimezone(UTC), "too_late")


def test_no_config_means_the_defaults() -> None:
    assert Policy.from_config(None) == DEFAULT_POLICY
    assert DEFAULT_POLICY.send == HoursBefore(hours=24)
    assert DEFAULT_POLICY.min_lead == timedelta(minutes=60)
    config = PracticeConfig(practice_id="01234567", name="Huisartsen Centrum")
    assert Policy.from_config(config) == DEFAULT_POLICY


# --------------------------------------------------------------------------- properties

DST_CHANGES = [
    datetime(2026, 3, 29, 1, 0, tzinfo=UTC),
    datetime(2026, 10, 25, 1, 0, tzinfo=UTC),
    datetime(2027, 3, 28, 1, 0, tzinfo=UTC),
    datetime(2027, 10, 31, 1, 0, tzinfo=UTC),
]
FOUR_DAYS = 4 * 24 * 3600

minutes_of_day = st.integers(0, 24 * 60 - 1).map(lambda m: dt.time(m // 60, m % 60))
interesting_times = st.sampled_from(
    [dt.time(2, 0), dt.time(2, 30), dt.time(3, 0), dt.time(0, 0), dt.time(23, 59), dt.time(18)]
)
times = st.one_of(minutes_of_day, interesting_times)

sends = st.one_of(
    st.builds(HoursBefore, hours=st.one_of(st.integers(1, 168), st.floats(0.25, 168))),
    st.builds(DayBeforeAt, policy=st.just("day_before_at"), time=times),
)
quiets = st.one_of(
    st.none(),
    st.just(QUIET),
    st.tuples(times, times)
    .filter(lambda t: t[0] != t[1])
    .map(lambda t: QuietHours(start=t[0], end=t[1])),
)
policies = st.builds(
    policy,
    send=sends,
    quiet=quiets,
    min_lead_minutes=st.integers(0, 24 * 60),
    skip_hours=st.one_of(st.just(12.0), st.floats(0, 168)),
    tz=st.sampled_from([AMS, AMS, AMS, ZoneInfo("UTC"), ZoneInfo("Australia/Lord_Howe")]),
)


@st.composite
def starts(draw: st.DrawFn) -> datetime:
    """Around the DST changes, or at a local midnight near them."""
    anchor = draw(st.sampled_from(DST_CHANGES))
    if draw(st.booleans()):
        return anchor + timedelta(seconds=draw(st.integers(-FOUR_DAYS, FOUR_DAYS)))
    day = anchor.astimezone(AMS).date() + timedelta(days=draw(st.integers(-3, 3)))
    minute = draw(st.integers(-90, 90))
    return earliest_instant(day, dt.time(0, 0), AMS) + timedelta(minutes=minute)


@st.composite
def cases(draw: st.DrawFn) -> tuple[datetime, datetime, Policy, datetime | None]:
    start = draw(starts())
    booked = start - timedelta(seconds=draw(st.integers(0, 30 * 24 * 3600)))
    now = None
    if draw(st.booleans()):
        now = booked + timedelta(seconds=draw(st.integers(0, 30 * 24 * 3600)))
    return start, booked, draw(policies), now


PROPERTY = settings(max_examples=1500, deadline=None)


@PROPERTY
@given(cases())
@example(
    (
        local(2026, 3, 30, 10, 0),
        local(2026, 3, 1, 10, 0),
        policy(DayBeforeAt(policy="day_before_at", time=dt.time(2, 30)), quiet=None),
        None,
    )
)
def test_never_later_than_the_minimum_lead_and_never_in_quiet_hours(
    case: tuple[datetime, datetime, Policy, datetime | None],
) -> None:
    start, booked, p, now = case
    due = compute_due(start, booked, p, now)
    if due.reason is None:
        assert due.at <= start - p.min_lead
        assert not in_quiet_hours(due.at, p)
        assert due.at >= (booked if now is None else max(booked, now))
    else:
        # no good moment: due at once, when it became known
        assert due.at == (booked if now is None or due.reason == "booked_recently" else now)


@PROPERTY
@given(cases())
def test_day_before_at_is_on_the_previous_local_date(
    case: tuple[datetime, datetime, Policy, datetime | None],
) -> None:
    start, _, p, _ = case
    send = (
        DayBeforeAt(policy="day_before_at", time=case[2].send.time)
        if isinstance(case[2].send, DayBeforeAt)
        else DayBeforeAt(policy="day_before_at")
    )
    p = policy(send, p.quiet_hours, 0, 0, p.timezone)
    booked = start - timedelta(days=10)
    due = compute_due(start, booked, p)
    assert due.reason is None
    start_day = start.astimezone(p.timezone).date()
    due_day = due.at.astimezone(p.timezone).date()
    raw = earliest_instant(start_day - timedelta(days=1), send.time, p.timezone)
    if in_quiet_hours(raw, p):
        assert due.at <= raw  # moved earlier, so never on the appointment's date
        assert due_day < start_day
    else:
        assert due.at == raw
        assert due_day == start_day - timedelta(days=1)


@PROPERTY
@given(cases())
def test_quiet_hours_only_move_the_moment_earlier(
    case: tuple[datetime, datetime, Policy, datetime | None],
) -> None:
    start, _, p, _ = case
    planned = planned_moment(start, p)
    without_quiet = planned_moment(start, policy(p.send, None, 0, 0, p.timezone))
    assert planned <= without_quiet
    assert not in_quiet_hours(planned, p)
    if not in_quiet_hours(without_quiet, p):
        assert planned == without_quiet


@PROPERTY
@given(cases())
def test_deterministic_and_independent_of_the_input_offset(
    case: tuple[datetime, datetime, Policy, datetime | None],
) -> None:
    start, booked, p, now = case
    first = compute_due(start, booked, p, now)
    again = compute_due(
        start.astimezone(AMS),
        booked.astimezone(ZoneInfo("America/New_York")),
        p,
        None if now is None else now.astimezone(p.timezone),
    )
    assert first == again
    assert first.at.utcoffset() == timedelta(0)
