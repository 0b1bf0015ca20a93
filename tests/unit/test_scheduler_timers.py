"""The compact timer store of one partition, against a plain-dict model of it."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from services.reminder_scheduler.timers import Change, PartitionTimers, Timer, TimerFields

MINUTE_MS = 60_000
T0 = 1_790_000_000_000  # ms


def fields(start_s: int, due_ms: int, patient: str = "p-1", sequence: int = 1) -> TimerFields:
    return TimerFields(
        start_us=start_s * 1_000_000,
        end_s=start_s + 600,
        booked_s=1_780_000_000,
        sequence=sequence,
        due_ms=due_ms,
        reason=None,
        patient_id=patient.encode(),
    )


def keys_of(timers: list[Timer]) -> list[bytes]:
    return [t.key for t in timers]


def test_timers_come_out_in_due_order_and_only_when_due() -> None:
    timers = PartitionTimers()
    for i, due in enumerate([T0 + 5 * MINUTE_MS, T0 + 1000, T0 + 3 * MINUTE_MS + 7, T0]):
        assert timers.upsert(f"01234567/a{i}".encode(), fields(2_000_000_000, due)) is (
            Change.PLANNED
        )
    assert timers.pending == 4
    assert timers.next_due_ms() == T0
    assert keys_of(timers.pop_due(T0 + 999, 10)) == [b"01234567/a3"]
    # still pending until the marker says it fired
    assert keys_of(timers.pop_due(T0 + 10 * MINUTE_MS, 10)) == [
        b"01234567/a1",
        b"01234567/a2",
        b"01234567/a0",
    ]
    assert timers.pending == 4


def test_pop_due_respects_the_limit() -> None:
    timers = PartitionTimers()
    for i in range(10):
        timers.upsert(f"p/a{i}".encode(), fields(2_000_000_000, T0 + i))
    first = timers.pop_due(T0 + 100, 4)
    assert len(first) == 4
    # popped entries are gone from the heap; the firing loop marks them fired
    for t in first:
        timers.set_marker(t.key, t.start_s, t.end_s)
    rest = timers.pop_due(T0 + 100, 100)
    assert len(rest) == 6
    assert timers.pending == 6


def test_reschedule_moves_the_timer_and_the_old_entry_is_skipped() -> None:
    timers = PartitionTimers()
    key = b"01234567/a1"
    timers.upsert(key, fields(2_000_000_000, T0))
    assert timers.upsert(key, fields(2_000_000_000, T0 + 10 * MINUTE_MS)) is Change.RESCHEDULED
    assert timers.pop_due(T0 + MINUTE_MS, 10) == []
    assert timers.next_due_ms() == T0 + 10 * MINUTE_MS
    assert keys_of(timers.pop_due(T0 + 10 * MINUTE_MS, 10)) == [key]
    # back to an earlier moment, after its minute has been drained
    assert timers.upsert(key, fields(2_000_000_100, T0 + 5)) is Change.RESCHEDULED
    assert keys_of(timers.pop_due(T0 + 10 * MINUTE_MS, 10)) == [key]


def test_update_without_a_new_moment() -> None:
    timers = PartitionTimers()
    key = b"01234567/a1"
    timers.upsert(key, fields(2_000_000_000, T0))
    assert timers.upsert(key, fields(2_000_000_000, T0)) is Change.UNCHANGED
    assert timers.upsert(key, fields(2_000_000_000, T0, sequence=2)) is Change.UPDATED
    timer = timers.get(key)
    assert timer is not None and timer.sequence == 2


def test_cancel_keeps_the_marker() -> None:
    timers = PartitionTimers()
    key = b"01234567/a1"
    timers.set_marker(key, 1_999_000_000, 1_999_000_600)
    timers.upsert(key, fields(2_000_000_000, T0))
    assert timers.cancel(key)
    assert not timers.cancel(key)
    assert timers.pending == 0
    assert timers.marker(key) == (1_999_000_000, 1_999_000_600)
    assert timers.pop_due(T0 + MINUTE_MS, 10) == []


def test_a_fired_start_gets_no_second_timer() -> None:
    timers = PartitionTimers()
    key = b"01234567/a1"
    timers.upsert(key, fields(2_000_000_000, T0))
    (timer,) = timers.pop_due(T0, 10)
    assert timers.set_marker(key, timer.start_s, timer.end_s)
    assert timers.pending == 0
    assert timers.upsert(key, fields(2_000_000_000, T0 + 5)) is Change.ALREADY_FIRED
    assert timers.pending == 0
    # a reschedule is a new reminder
    assert timers.upsert(key, fields(2_000_086_400, T0 + 86_400_000)) is Change.PLANNED
    assert timers.marker(key) == (2_000_000_000, 2_000_000_600)


def test_a_marker_for_an_older_start_leaves_the_new_timer() -> None:
    timers = PartitionTimers()
    key = b"01234567/a1"
    timers.upsert(key, fields(2_000_086_400, T0))
    assert not timers.set_marker(key, 2_000_000_000, 2_000_000_600)
    assert timers.pending == 1
    assert keys_of(timers.pop_due(T0, 10)) == [key]


def test_forget_and_expired_markers() -> None:
    timers = PartitionTimers()
    timers.set_marker(b"p/old", 1_000, 2_000)
    timers.set_marker(b"p/new", 5_000, 6_000)
    timers.upsert(b"p/new", fields(7_000, T0))
    assert timers.expired_markers(3_000, 10) == [b"p/old"]
    assert timers.drop_marker(b"p/old")
    assert len(timers) == 1
    assert timers.forget(b"p/new") == (True, True)
    assert len(timers) == 0 and timers.pending == 0 and timers.markers == 0
    assert timers.forget(b"p/new") == (False, False)


def test_pending_timers_by_practice_prefix() -> None:
    timers = PartitionTimers()
    timers.upsert(b"0001/a", fields(7_000, T0))
    timers.upsert(b"00011/a", fields(7_000, T0))
    timers.upsert(b"0001/b", fields(7_000, T0))
    assert sorted(keys_of(list(timers.pending_timers(b"0001/")))) == [b"0001/a", b"0001/b"]


# --------------------------------------------------------------------------- model check


@dataclass
class Model:
    start_s: int
    due_ms: int
    pending: bool
    marker: tuple[int, int] | None


ops = st.lists(
    st.tuples(
        st.sampled_from(["upsert", "cancel", "marker", "drop_marker", "forget", "pop"]),
        st.integers(0, 40),  # key
        st.integers(0, 5),  # start choice
        st.integers(0, 30),  # due minute
    ),
    max_size=300,
)


@settings(max_examples=300, deadline=None)
@given(ops)
def test_behaves_like_a_dict(operations: list[tuple[str, int, int, int]]) -> None:
    timers = PartitionTimers(bucket_ms=MINUTE_MS)
    model: dict[bytes, Model] = {}
    now = T0
    for op, k, start_choice, due_minute in operations:
        key = f"0123/appointment-{k}".encode()
        start_s = 2_000_000_000 + start_choice * 3600
        due = T0 + due_minute * MINUTE_MS + k
        entry = model.get(key)
        if op == "upsert":
            timers.upsert(key, fields(start_s, due))
            marker = entry.marker if entry else None
            fired = marker is not None and marker[0] == start_s
            model[key] = Model(start_s, due, not fired, marker)
        elif op == "cancel":
            timers.cancel(key)
            if entry:
                entry.pending = False
        elif op == "marker":
            timers.set_marker(key, start_s, start_s + 600)
            if entry is None:
                model[key] = Model(0, 0, False, (start_s, start_s + 600))
            else:
                if entry.pending and entry.start_s == start_s:
                    entry.pending = False
                entry.marker = (start_s, start_s + 600)
        elif op == "drop_marker":
            timers.drop_marker(key)
            if entry:
                entry.marker = None
        elif op == "forget":
            timers.forget(key)
            model.pop(key, None)
        elif op == "pop":
            now = max(now, T0 + due_minute * MINUTE_MS)
            expected = sorted(
                (m.due_ms, key) for key, m in model.items() if m.pending and m.due_ms <= now
            )
            got = timers.pop_due(now, 1000)
            assert [(t.due_ms, t.key) for t in got] == expected
            for t in got:  # fire them all
                timers.set_marker(t.key, t.start_s, t.end_s)
                model[t.key].pending = False
                model[t.key].marker = (t.start_s, t.end_s)
        for key in [key for key, m in model.items() if not m.pending and m.marker is None]:
            del model[key]
        assert timers.pending == sum(m.pending for m in model.values())
        assert timers.markers == sum(m.marker is not None for m in model.values())
        assert len(timers) == len(model)
    for key, m in model.items():
        timer = timers.get(key)
        assert (timer is not None) == m.pending
        if timer is not None:
            assert (timer.start_s, timer.due_ms) == (m.start_s, m.due_ms)
        assert timers.marker(key) == m.marker


def test_pop_due_skips_stale_entries_and_keeps_order_and_limit() -> None:
    timers = PartitionTimers()
    for i in range(20):
        timers.upsert(f"p/a{i:02d}".encode(), fields(2_000_000_000, T0 + i))
    timers.upsert(b"p/a03", fields(2_000_000_000, T0 + 10 * MINUTE_MS))  # moved later
    timers.cancel(b"p/a05")
    timers.upsert(b"p/a07", fields(2_000_000_000, T0 + 7))  # the same moment again
    assert keys_of(timers.pop_due(T0 + 100, 5)) == [
        b"p/a00",
        b"p/a01",
        b"p/a02",
        b"p/a04",
        b"p/a06",
    ]
    assert keys_of(timers.pop_due(T0 + 9, 100)) == [b"p/a07", b"p/a08", b"p/a09"]
    assert len(timers.pop_due(T0 + 100, 100)) == 10  # a10..a19; a03 is not due yet
    assert keys_of(timers.pop_due(T0 + 10 * MINUTE_MS, 100)) == [b"p/a03"]


def test_a_marker_after_a_pop_lands_on_its_key_when_the_record_moved_meanwhile() -> None:
    timers = PartitionTimers()
    timers.upsert(b"p/a", fields(2_000_000_000, T0))
    (popped,) = timers.pop_due(T0, 10)
    # while its transaction commits, the appointment is deleted and another one planned
    # (which may take the freed record)
    timers.forget(b"p/a")
    timers.upsert(b"p/b", fields(2_000_000_100, T0 + 5))
    assert timers.set_marker(popped.key, popped.start_s, popped.end_s) is False
    assert timers.marker(b"p/a") == (2_000_000_000, 2_000_000_600)
    assert timers.marker(b"p/b") is None
    assert timers.get(b"p/b") is not None and timers.pending == 1


def test_a_table_reserved_for_a_load_holds_and_finds_every_key_in_due_order() -> None:
    timers = PartitionTimers(bucket_ms=MINUTE_MS)
    timers.reserve(3000)
    keys = [f"0123/appointment-{n}".encode() for n in range(3000)]
    for n, key in enumerate(keys):
        assert timers.upsert(key, fields(2_000_000_000, T0 + (n * 7919) % 3000)) is Change.PLANNED
    for n, key in enumerate(keys):
        again = fields(2_000_000_000, T0 + (n * 7919) % 3000)
        assert timers.upsert(key, again) is Change.UNCHANGED
    assert len(timers) == timers.pending == 3000
    got = timers.pop_due(T0 + 3000, 10_000)
    assert [t.due_ms for t in got] == sorted(t.due_ms for t in got)
    assert sorted(t.key for t in got) == sorted(keys)
