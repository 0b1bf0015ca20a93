"""A fetched batch of appointments.v1 through PartitionWorker.apply_many: the fast path
plans what is on its practice's partition under its own key, everything else is
dead-lettered with the reason, however often a practice comes up in the batch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

from aiokafka import ConsumerRecord
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.topics import Topics
from services.common.clock import SystemClock
from services.common.settings import KafkaSettings, MetricsSettings, SchedulerSettings, Settings
from services.domain.partition import partition_for
from services.reminder_scheduler import metrics
from services.reminder_scheduler.due_time import DEFAULT_POLICY
from services.reminder_scheduler.firing import PartitionWorker, SchedulerContext
from services.reminder_scheduler.samples import appointment_value

NOW = datetime(2026, 12, 1, 9, tzinfo=UTC)
PARTITIONS = 12


def practices_on(partition: int, count: int, *, on: bool) -> list[str]:
    found: list[str] = []
    n = 0
    while len(found) < count:
        practice_id = f"0{1_000_000 + n:07d}"
        if (partition_for(practice_id, PARTITIONS) == partition) == on:
            found.append(practice_id)
        n += 1
    return found


def record(offset: int, key: str, value: bytes | None) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic="appointments.v1",
        partition=0,
        offset=offset,
        timestamp=0,
        timestamp_type=0,
        key=key.encode(),
        value=value,
        checksum=None,
        serialized_key_size=len(key),
        serialized_value_size=len(value or b""),
        headers=(),
    )


def worker() -> PartitionWorker:
    settings = Settings(
        kafka=KafkaSettings(bootstrap_servers="127.0.0.1:9", partitions=PARTITIONS),
        metrics=MetricsSettings(port=0),
        scheduler=SchedulerSettings(),
        log_format="text",
    )
    ctx = SchedulerContext(
        settings=settings,
        topics=Topics(""),
        clock=SystemClock(),
        partitions=PARTITIONS,
        consumer=cast(Any, None),  # apply_many does not read
        policy_of=lambda _: DEFAULT_POLICY,
    )
    return PartitionWorker(0, ctx)


def test_a_batch_plans_its_own_practices_and_dead_letters_the_others() -> None:
    ours = practices_on(0, 2, on=True)
    theirs = practices_on(0, 2, on=False)
    start = NOW + timedelta(days=3)
    batch: list[ConsumerRecord[bytes, bytes]] = []
    for n in range(3):  # each practice several times in one batch
        for practice_id in ours + theirs:
            key = f"{practice_id}/a-{n}"
            batch.append(
                record(len(batch), key, appointment_value(practice_id, f"a-{n}", start=start))
            )
    batch.append(
        record(len(batch), f"{ours[0]}/other", appointment_value(ours[0], "x", start=start))
    )
    subject = worker()
    letters = subject.apply_many(batch, NOW)
    assert subject.planner.timers.pending == 3 * len(ours)
    assert [letter.reason for letter in letters] == ["wrong_partition"] * (3 * len(theirs)) + [
        "key_mismatch"
    ]
    assert {letter.key.decode().partition("/")[0] for letter in letters if letter.key} == {
        *theirs,
        ours[0],
    }
    # a second batch (the set of this partition's practices is filled now) decides the same
    again = worker()
    again._our_practices.update(ours)
    assert [x.reason for x in again.apply_many(batch, NOW)] == [x.reason for x in letters]
    assert again.planner.timers.pending == 3 * len(ours)


# What a batch may hold: plain appointments (half of them) and each way out of
# plan_fetched's plain case (one or two per record: status, a start behind NOW, a recent
# booking, odd, long or BSN-like ids, a sequence out of range, an empty slot, a mismatched
# key, another partition's practice, a tombstone, a value that is not an appointment),
# under a few keys, so that the same key comes again in a batch.
_OURS = practices_on(0, 2, on=True)
_THEIRS = practices_on(0, 1, on=False)
_START = NOW + timedelta(days=3)
_ODD: dict[str, list[Any]] = {
    "practice_id": _THEIRS,
    "appointment_id": ["a.3:x_y", "0" * 64, "0" * 65, "é4", "", "a/b"],
    "patient_id": ["pt:9.x", "12345678", "123456789", "p" * 65, "", "p 1"],
    "status": ["cancelled", "pending", "done"],
    "start": [_START - timedelta(days=4), _START + timedelta(minutes=30)],
    "booked_hours": [30, 5, 1],
    "updated_days": [5],
    "sequence": [0, 2**64 - 1, 2**64, -1],
    "minutes": [0],
    "key": ["mismatch"],
    "shape": ["tombstone", "not json", "no patient"],
}


@st.composite
def _records(draw: st.DrawFn) -> tuple[str, bytes | None]:
    fields: dict[str, Any] = {
        "practice_id": draw(st.sampled_from(_OURS)),
        "appointment_id": draw(st.sampled_from(["a-1", "A2"])),
        "patient_id": "p-1",
        "status": "booked",
        "start": draw(st.sampled_from([_START, _START + timedelta(minutes=10)])),
        "booked_hours": 24 * 7,
        "updated_days": 0,
        "sequence": draw(st.sampled_from([1, 2])),
        "minutes": 10,
        "key": "own",
        "shape": "plain",
    }
    for _ in range(draw(st.sampled_from([0, 0, 1, 2]))):
        field = draw(st.sampled_from(sorted(_ODD)))
        fields[field] = draw(st.sampled_from(_ODD[field]))
    practice_id, appointment_id = fields["practice_id"], fields["appointment_id"]
    key = f"{practice_id}/{appointment_id if fields['key'] == 'own' else 'other'}"
    if fields["shape"] == "tombstone":
        return key, None
    if fields["shape"] == "not json":
        return key, b'{"practice_id": '
    booked = fields["start"] - timedelta(hours=fields["booked_hours"])
    value = appointment_value(
        practice_id,
        appointment_id,
        start=fields["start"],
        patient_id=fields["patient_id"],
        status=fields["status"],
        sequence=fields["sequence"],
        booked_at=booked,
        updated_at=booked + timedelta(days=fields["updated_days"]),
        minutes=fields["minutes"],
    )
    if fields["shape"] == "no patient":
        value = value.replace(b'"patient":{', b'"patients":{')
    return key, value


def _state(subject: PartitionWorker) -> tuple[object, ...]:
    timers = subject.planner.timers
    return (
        sorted(timers.pending_timers()),
        sorted((key, timers.marker(key)) for key in {t.key for t in timers.pending_timers()}),
        timers.pending,
        timers.markers,
    )


@settings(max_examples=400, deadline=None)
@given(st.lists(_records(), max_size=40), st.booleans())
def test_plan_fetched_decides_each_record_as_apply_does(
    batch: list[tuple[str, bytes | None]], loaded: bool
) -> None:
    records = [record(n, key, value) for n, (key, value) in enumerate(batch)]
    fast, one_by_one = worker(), worker()
    if loaded:
        fast.state = one_by_one.state = "loaded"
    # a first batch of the same records primes the practices and caches of both
    for subject in (fast, one_by_one):
        subject._our_practices.update(_OURS[:1])
    before = {e: metrics.TIMERS.labels(event=e)._value.get() for e in ("planned", "rescheduled")}
    letters = [letter.reason for letter in fast.apply_many(records, NOW)]
    middle = {e: metrics.TIMERS.labels(event=e)._value.get() for e in ("planned", "rescheduled")}
    expected = [
        letter.reason
        for letter in (one_by_one.apply(record, NOW) for record in records)
        if letter is not None
    ]
    after = {e: metrics.TIMERS.labels(event=e)._value.get() for e in ("planned", "rescheduled")}
    assert letters == expected
    assert _state(fast) == _state(one_by_one)
    assert {e: middle[e] - before[e] for e in before} == {e: after[e] - middle[e] for e in before}
    # and again, with every practice known and every slot time cached
    letters = [letter.reason for letter in fast.apply_many(records, NOW)]
    expected = [
        letter.reason
        for letter in (one_by_one.apply(record, NOW) for record in records)
        if letter is not None
    ]
    assert letters == expected
    assert _state(fast) == _state(one_by_one)


def test_a_record_whose_planning_raises_is_dead_lettered_and_the_batch_goes_on() -> None:
    ours = practices_on(0, 1, on=True)[0]
    start = NOW + timedelta(days=3)
    batch = [
        record(n, f"{ours}/a-{n}", appointment_value(ours, f"a-{n}", start=start)) for n in range(6)
    ]
    for warm in (False, True):  # the plain case's caches cold, then warm (plan_fetched)
        subject = worker()
        if warm:
            subject.apply_many(batch, NOW)
            subject = worker()
            subject._our_practices.add(ours)
        timers = subject.planner.timers
        plan = timers.plan

        def poisoned(key: bytes, *rest: Any, plan: Any = plan) -> Any:
            if key == f"{ours}/a-2".encode():
                raise ValueError("a planner bug this record triggers")
            return plan(key, *rest)

        timers.plan = poisoned  # type: ignore[method-assign]
        letters = subject.apply_many(batch, NOW)
        assert [letter.key for letter in letters] == [f"{ours}/a-2".encode()]
        assert timers.pending == 5
