"""Which appointments get a timer, and what a timer does when it comes up (no Kafka)."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.models import DayBeforeAt, HoursBefore, QuietHours
from services.reminder_scheduler.due_time import DEFAULT_POLICY, Policy, compute_due
from services.reminder_scheduler.planner import Planner
from services.reminder_scheduler.records import AppointmentState, MarkerState, to_ms, to_us
from services.reminder_scheduler.timers import PartitionTimers, Timer

AMS = ZoneInfo("Europe/Amsterdam")
NOW = datetime(2026, 6, 1, 10, 0, tzinfo=UTC)
KEY = b"01234567/A1"


def appointment(start: datetime, **changes: object) -> AppointmentState:
    """A booked appointment; ``booked_at``/``updated_at`` may be given as datetimes."""
    times = {
        "start_us": to_us(start),
        "end_us": to_us(start + timedelta(minutes=10)),
        "booked_us": to_us(NOW - timedelta(days=10)),
        "updated_us": to_us(NOW - timedelta(days=10)),
    }
    for name in ("booked_at", "updated_at"):
        moment = changes.pop(name, None)
        if isinstance(moment, datetime):
            times[name.replace("_at", "_us")] = to_us(moment)
    base = AppointmentState(
        practice_id="01234567",
        appointment_id="A1",
        patient_id="pat-1",
        status="booked",
        sequence=1,
        **times,
    )
    return base._replace(**changes)  # type: ignore[arg-type]


class Policies:
    def __init__(self) -> None:
        self.by_practice: dict[str, Policy] = {}

    def __call__(self, practice_id: str) -> Policy:
        return self.by_practice.get(practice_id, DEFAULT_POLICY)


def planner() -> tuple[Planner, Policies]:
    policies = Policies()
    return Planner(PartitionTimers(), policies), policies


def only_timer(p: Planner) -> Timer:
    (timer,) = list(p.timers.pending_timers())
    return timer


def test_a_booked_appointment_is_planned_24_hours_ahead() -> None:
    p, _ = planner()
    start = datetime(2026, 6, 3, 9, 0, tzinfo=UTC)
    assert p.appointment(KEY, appointment(start), NOW) == "planned"
    timer = only_timer(p)
    assert timer.due_ms == to_ms(start - timedelta(hours=24))
    assert timer.reason is None
    assert p.appointment(KEY, appointment(start), NOW) is None  # same state again


def test_reschedule_cancel_and_other_statuses() -> None:
    p, _ = planner()
    start = datetime(2026, 6, 3, 9, 0, tzinfo=UTC)
    p.appointment(KEY, appointment(start), NOW)
    moved = start + timedelta(days=1)
    assert p.appointment(KEY, appointment(moved, sequence=2), NOW) == "rescheduled"
    assert only_timer(p).due_ms == to_ms(moved - timedelta(hours=24))
    for status in ("cancelled", "noshow", "entered-in-error", "fulfilled", "pending"):
        p.appointment(KEY, appointment(moved), NOW)
        assert p.appointment(KEY, appointment(moved, status=status), NOW) == "cancelled"
        assert p.timers.pending == 0


def test_a_move_into_the_past_removes_the_timer() -> None:
    p, _ = planner()
    p.appointment(KEY, appointment(NOW + timedelta(days=2)), NOW)
    past = appointment(NOW - timedelta(hours=1), updated_at=NOW)
    assert p.appointment(KEY, past, NOW) == "cancelled"
    assert p.timers.pending == 0


def test_an_appointment_missed_while_down_fires_at_once_too_late() -> None:
    p, _ = planner()
    start = NOW - timedelta(hours=1)  # known for days, never reminded, already begun
    assert p.appointment(KEY, appointment(start), NOW) == "planned"
    timer = only_timer(p)
    assert timer.reason == "too_late"
    fire = p.at_fire(timer, NOW)
    assert fire is not None and fire.reason == "too_late" and fire.missed


def test_a_fired_start_is_not_planned_again_but_a_new_start_is() -> None:
    p, _ = planner()
    start = datetime(2026, 6, 3, 9, 0, tzinfo=UTC)
    p.marker(KEY, MarkerState("01234567", "A1", start, start + timedelta(minutes=10)))
    assert p.appointment(KEY, appointment(start), NOW) is None
    assert p.timers.pending == 0
    moved = start + timedelta(hours=3)
    assert p.appointment(KEY, appointment(moved), NOW) == "planned"
    assert only_timer(p).start_us // 1_000_000 == int(moved.timestamp())


def test_marker_and_appointment_in_either_order() -> None:
    start = datetime(2026, 6, 3, 9, 0, tzinfo=UTC)
    marker = MarkerState("01234567", "A1", start, start + timedelta(minutes=10))
    first, _ = planner()
    first.marker(KEY, marker)
    first.appointment(KEY, appointment(start), NOW)
    second, _ = planner()
    second.appointment(KEY, appointment(start), NOW)
    second.marker(KEY, marker)
    assert first.timers.pending == second.timers.pending == 0


def test_tombstone_forgets_and_asks_for_the_marker_tombstone() -> None:
    p, _ = planner()
    start = datetime(2026, 6, 3, 9, 0, tzinfo=UTC)
    p.appointment(KEY, appointment(start), NOW)
    assert p.removed(KEY) == ("cancelled", False)
    p.marker(KEY, MarkerState("01234567", "A1", start, start + timedelta(minutes=10)))
    assert p.removed(KEY) == (None, True)


def test_policy_change_plans_the_practice_again() -> None:
    p, policies = planner()
    start = datetime(2026, 6, 3, 9, 0, tzinfo=UTC)  # 11:00 in Amsterdam
    p.appointment(KEY, appointment(start), NOW)
    p.appointment(b"99999999/B1", appointment(start, practice_id="99999999"), NOW)
    policies.by_practice["01234567"] = replace(
        DEFAULT_POLICY, send=DayBeforeAt(policy="day_before_at", time=dt.time(18, 0))
    )
    assert p.replan_practice("01234567", NOW) == 1
    due = {t.key: t.due_ms for t in p.timers.pending_timers()}
    assert due[KEY] == to_ms(datetime(2026, 6, 2, 18, 0, tzinfo=AMS))
    assert due[b"99999999/B1"] == to_ms(start - timedelta(hours=24))
    assert p.replan_practice("01234567", NOW) == 0


def test_at_fire_on_time_and_too_late() -> None:
    p, _ = planner()
    start = datetime(2026, 6, 3, 9, 0, tzinfo=UTC)
    p.appointment(KEY, appointment(start), NOW)
    timer = only_timer(p)
    due_at = start - timedelta(hours=24)
    fire = p.at_fire(timer, due_at + timedelta(seconds=0.3))
    assert fire is not None and fire.reason is None and not fire.missed
    assert fire.due_at == due_at
    fire = p.at_fire(timer, start - timedelta(minutes=59))
    assert fire is not None and fire.reason == "too_late" and fire.missed


def test_a_late_timer_in_quiet_hours_moves_to_their_end() -> None:
    p, policies = planner()
    policies.by_practice["01234567"] = replace(
        DEFAULT_POLICY,
        send=HoursBefore(hours=24),
        quiet_hours=QuietHours(start=dt.time(21, 0), end=dt.time(8, 0)),
    )
    start = datetime(2026, 6, 3, 14, 0, tzinfo=AMS)
    p.appointment(KEY, appointment(start), NOW)
    timer = only_timer(p)
    down_until = datetime(2026, 6, 2, 23, 0, tzinfo=AMS)  # down from before 14:00 to 23:00
    assert p.at_fire(timer, down_until) is None
    moved = only_timer(p)
    assert moved.due_ms == to_ms(datetime(2026, 6, 3, 8, 0, tzinfo=AMS))
    # late but not in quiet hours: fires at once, counted as missed
    fire = p.at_fire(timer, datetime(2026, 6, 2, 16, 0, tzinfo=AMS))
    assert fire is not None and fire.reason is None and fire.missed


def test_booked_recently_keeps_its_reason() -> None:
    p, _ = planner()
    start = NOW + timedelta(hours=3)
    p.appointment(KEY, appointment(start, booked_at=NOW, updated_at=NOW), NOW)
    timer = only_timer(p)
    assert timer.reason == "booked_recently"
    assert timer.due_ms == to_ms(NOW)
    fire = p.at_fire(timer, NOW + timedelta(seconds=1))
    assert fire is not None and fire.reason == "booked_recently"


@settings(max_examples=500, deadline=None)
@given(
    start_minutes=st.integers(0, 60 * 24 * 400),
    booked_before_s=st.integers(0, 30 * 24 * 3600),
    hours=st.sampled_from([0.5, 1, 2, 24, 48, 25.5]),
    time_of_day=st.sampled_from([None, dt.time(18), dt.time(2, 30), dt.time(23, 59)]),
    quiet=st.sampled_from([None, QuietHours(start=dt.time(21), end=dt.time(8))]),
    min_lead=st.sampled_from([0, 60, 600]),
)
def test_the_cached_plan_agrees_with_compute_due(
    start_minutes: int,
    booked_before_s: int,
    hours: float,
    time_of_day: dt.time | None,
    quiet: QuietHours | None,
    min_lead: int,
) -> None:
    send: HoursBefore | DayBeforeAt = (
        HoursBefore(hours=hours)
        if time_of_day is None
        else DayBeforeAt(policy="day_before_at", time=time_of_day)
    )
    policy = replace(
        DEFAULT_POLICY, send=send, quiet_hours=quiet, min_lead=timedelta(minutes=min_lead)
    )
    p = Planner(PartitionTimers(), lambda _: policy)
    start = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=start_minutes)
    booked_s = to_us(start) // 1_000_000 - booked_before_s
    expected = compute_due(start, datetime.fromtimestamp(booked_s, UTC), policy)
    for _ in range(2):  # computed, then from the cache
        assert p._due(to_us(start), booked_s, policy) == (to_ms(expected.at), expected.reason)


def test_a_full_moment_cache_starts_again_and_plans_right(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The planned moments are cached per policy and start, up to a bound: past it the
    cache starts again, and every appointment still gets its own policy's moment."""
    monkeypatch.setattr("services.reminder_scheduler.planner._PLANNED_CACHE_SIZE", 3)
    p, policies = planner()
    policies.by_practice["07654321"] = replace(
        DEFAULT_POLICY, send=DayBeforeAt(policy="day_before_at", time=dt.time(18))
    )
    for n in range(12):
        start = datetime(2026, 6, 3, 9, 0, tzinfo=UTC) + timedelta(hours=n // 2)  # shared
        practice = ("01234567", "07654321")[n % 2]
        state = appointment(start, practice_id=practice, appointment_id=f"A{n}")
        assert p.appointment(f"{practice}/A{n}".encode(), state, NOW) == "planned"
    assert p._planned_count <= 3
    for timer in p.timers.pending_timers():
        practice = timer.key.split(b"/")[0].decode()
        start = datetime.fromtimestamp(timer.start_us / 1e6, UTC)
        expected = compute_due(start, NOW - timedelta(days=10), policies(practice))
        assert timer.due_ms == to_ms(expected.at), timer.key
