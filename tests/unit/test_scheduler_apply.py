"""A fetched batch of appointments.v1 through PartitionWorker.apply_many: the fast path
plans what is on its practice's partition under its own key, everything else is
dead-lettered with the reason, however often a practice comes up in the batch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, cast

from aiokafka import ConsumerRecord

from schemas.topics import Topics
from services.common.clock import SystemClock
from services.common.settings import KafkaSettings, MetricsSettings, SchedulerSettings, Settings
from services.domain.partition import partition_for
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


def record(offset: int, key: str, value: bytes) -> ConsumerRecord[bytes, bytes]:
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
        serialized_value_size=len(value),
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
