"""The partition-ownership runtime's commit policy, without a broker: a fake
transactional producer records what it was asked to do."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import (
    KafkaError,
    ProducerFenced,
    RequestTimedOutError,
)
from prometheus_client import REGISTRY

from services.common.kafka import DeadLetter
from services.common.partitions import (
    Output,
    PartitionBroken,
    PartitionFenced,
    TransactionalPartition,
)
from services.common.settings import KafkaSettings
from tests.support.transactions import FakeProducer

TOPIC = "unit.partitions.in"
OUT = "unit.partitions.out"


async def _no_sleep(_: float) -> None:
    return None


async def _opened(producer: FakeProducer) -> TransactionalPartition:
    made: dict[str, Any] = {}

    def make(kafka: KafkaSettings, **options: Any) -> FakeProducer:
        made.update(options)
        return producer

    partition = TransactionalPartition(
        KafkaSettings(topic_prefix="acc."), "book-blue", 3, make=make, sleep=_no_sleep
    )
    await partition.open()
    assert made["transactional_id"] == partition.transactional_id
    return partition


def _letter() -> DeadLetter:
    return DeadLetter(TOPIC, 3, 41, b"k", b"garbage", "invalid_json", "not JSON")


def _counted() -> float:
    value = REGISTRY.get_sample_value(
        "reminders_dead_letters_total", {"topic": TOPIC, "reason": "invalid_json"}
    )
    return value or 0.0


OFFSETS = {TopicPartition(TOPIC, 3): 42}


def _committed(producer: FakeProducer) -> list[tuple[str, int, bytes | None, bytes | None]]:
    return [(t, kw["partition"], kw["key"], kw["value"]) for t, kw in producer.committed_sends]


async def test_opening_fences_earlier_owners_with_an_empty_transaction() -> None:
    producer = FakeProducer()
    partition = await _opened(producer)
    assert partition.transactional_id == "acc.book-blue-p3"
    assert producer.calls == ["start", "fence"]
    assert producer.committed_sends == []


async def test_outputs_dead_letters_and_offsets_commit_together_and_letters_count_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    producer = FakeProducer()
    partition = await _opened(producer)
    before = _counted()
    with caplog.at_level(logging.WARNING):
        await partition.commit(
            [Output(OUT, 3, b"a", b"1"), Output(OUT, 3, b"b", None)], OFFSETS, [_letter()]
        )
    assert _committed(producer) == [
        (OUT, 3, b"a", b"1"),
        (OUT, 3, b"b", None),
        (f"{TOPIC}.dlq.v1", 3, b"k", b"garbage"),
    ]
    assert producer.offsets == [(OFFSETS, "acc.book-blue")]  # the service's consumer group
    assert _counted() == before + 1
    noted = [r for r in caplog.records if r.getMessage() == "record sent to dead-letter topic"]
    assert len(noted) == 1


async def test_a_retriable_error_aborts_and_retries_on_the_same_producer() -> None:
    producer = FakeProducer(fail_commits=2)
    partition = await _opened(producer)
    before = _counted()
    await partition.commit([Output(OUT, 3, b"a", b"1")], OFFSETS, [_letter()])
    assert producer.calls.count("start") == 1 and "stop" not in producer.calls
    assert producer.calls.count("abort") == 2 and producer.calls.count("commit") == 3
    assert _committed(producer) == [
        (OUT, 3, b"a", b"1"),
        (f"{TOPIC}.dlq.v1", 3, b"k", b"garbage"),
    ]
    assert _counted() == before + 1  # counted once, after the commit, not per attempt


async def test_fenced_stops_the_partition_without_retrying_or_counting() -> None:
    producer = FakeProducer(fail_commits=1, error=ProducerFenced)
    partition = await _opened(producer)
    before = _counted()
    with pytest.raises(PartitionFenced):
        await partition.commit([Output(OUT, 3, b"a", b"1")], OFFSETS, [_letter()])
    assert producer.calls[2:] == ["begin", "offsets", "commit"]
    assert producer.committed_sends == [] and _counted() == before


@pytest.mark.parametrize(
    ("error", "abort_fails"),
    [(RequestTimedOutError, True), (lambda: KafkaError("not retriable"), False)],
    ids=["abort-fails", "not-retriable"],
)
async def test_an_error_that_cannot_be_retried_gives_the_partition_up(
    error: Callable[[], KafkaError], abort_fails: bool
) -> None:
    producer = FakeProducer(fail_commits=1, error=error, abort_fails=abort_fails)
    partition = await _opened(producer)
    before = _counted()
    with pytest.raises(PartitionBroken):
        await partition.commit([Output(OUT, 3, b"a", b"1")], OFFSETS, [_letter()])
    # Never a new producer (InitProducerId could fence the partition's new owner).
    assert producer.calls.count("start") == 1 and "stop" not in producer.calls
    assert producer.calls.count("begin") == 1
    assert producer.committed_sends == [] and _counted() == before


async def test_a_stopping_partition_retries_a_few_times_only() -> None:
    producer = FakeProducer(fail_commits=100)
    partition = await _opened(producer)
    partition.stopping = True
    with pytest.raises(PartitionBroken):
        await partition.commit([Output(OUT, 3, b"a", b"1")], OFFSETS)
    assert producer.calls.count("commit") == 3


async def test_grouped_records_commit_after_the_outputs_in_their_order() -> None:
    producer = FakeProducer()
    partition = await _opened(producer)
    await partition.commit(
        [Output(OUT, 3, b"a", b"1")],
        grouped={
            (OUT, 3): [(b"b", b"2"), (b"c", None)],
            ("unit.partitions.other", 3): [(b"b", b"x")],
            (OUT, 4): [],
        },
    )
    assert _committed(producer) == [
        (OUT, 3, b"a", b"1"),
        (OUT, 3, b"b", b"2"),
        (OUT, 3, b"c", None),
        ("unit.partitions.other", 3, b"b", b"x"),
    ]
