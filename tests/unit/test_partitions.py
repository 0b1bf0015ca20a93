"""The partition-ownership runtime's commit policy, without a broker: a fake
transactional producer records what it was asked to do."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import (
    IllegalStateError,
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

TOPIC = "unit.partitions.in"
OUT = "unit.partitions.out"


class _Batch:
    def __init__(self) -> None:
        self.records: list[tuple[bytes | None, bytes | None]] = []

    def append(
        self, *, key: bytes | None, value: bytes | None, timestamp: Any, headers: Any
    ) -> Any:
        self.records.append((key, value))
        return object()


class FakeProducer:
    """A transactional producer whose first `fail_commits` commits raise `error`."""

    def __init__(
        self,
        fail_commits: int = 0,
        error: Callable[[], KafkaError] = RequestTimedOutError,
        abort_fails: bool = False,
    ) -> None:
        self.fail_commits = fail_commits
        self.error = error
        self.abort_fails = abort_fails
        self.calls: list[str] = []
        self.committed: list[tuple[str, int, bytes | None, bytes | None]] = []
        self.offsets: list[dict[TopicPartition, int]] = []
        self._open: list[tuple[str, int, bytes | None, bytes | None]] = []
        self.transactional_id: str | None = None

    async def start(self) -> None:
        self.calls.append("start")

    async def stop(self) -> None:
        self.calls.append("stop")

    async def begin_transaction(self) -> None:
        self.calls.append("begin")
        self._open = []

    def create_batch(self) -> _Batch:
        return _Batch()

    async def send_batch(self, batch: _Batch, topic: str, *, partition: int) -> Any:
        self._open += [(topic, partition, k, v) for k, v in batch.records]
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    async def send_offsets_to_transaction(self, offsets: Any, group_id: str) -> None:
        self.calls.append(f"offsets:{group_id}")
        self.offsets.append(dict(offsets))

    async def commit_transaction(self) -> None:
        self.calls.append("commit")
        if self.fail_commits:
            self.fail_commits -= 1
            raise self.error()
        self.committed += self._open

    async def abort_transaction(self) -> None:
        self.calls.append("abort")
        if self.abort_fails:
            raise IllegalStateError("transaction in a fatal state")
        self._open = []


async def _no_sleep(_: float) -> None:
    return None


async def _opened(producer: FakeProducer) -> TransactionalPartition:
    """Opened (fenced) with the producer's failures armed only afterwards."""
    failures, producer.fail_commits = producer.fail_commits, 0

    def make(kafka: KafkaSettings, **options: Any) -> FakeProducer:
        producer.transactional_id = options["transactional_id"]
        return producer

    partition = TransactionalPartition(
        KafkaSettings(topic_prefix="acc."), "book-blue", 3, make=make, sleep=_no_sleep
    )
    await partition.open()
    producer.fail_commits = failures
    return partition


def _letter() -> DeadLetter:
    return DeadLetter(TOPIC, 3, 41, b"k", b"garbage", "invalid_json", "not JSON")


def _counted() -> float:
    value = REGISTRY.get_sample_value(
        "reminders_dead_letters_total", {"topic": TOPIC, "reason": "invalid_json"}
    )
    return value or 0.0


OFFSETS = {TopicPartition(TOPIC, 3): 42}


async def test_opening_fences_earlier_owners_with_an_empty_transaction() -> None:
    producer = FakeProducer()
    partition = await _opened(producer)
    assert producer.transactional_id == "acc.book-blue-p3" == partition.transactional_id
    assert producer.calls == ["start", "begin", "commit"]
    assert producer.committed == []


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
    assert producer.committed == [
        (OUT, 3, b"a", b"1"),
        (OUT, 3, b"b", None),
        (f"{TOPIC}.dlq.v1", 3, b"k", b"garbage"),
    ]
    assert producer.offsets == [OFFSETS]
    assert "offsets:acc.book-blue" in producer.calls  # the service's consumer group
    assert _counted() == before + 1
    noted = [r for r in caplog.records if r.getMessage() == "record sent to dead-letter topic"]
    assert len(noted) == 1


async def test_a_retriable_error_aborts_and_retries_on_the_same_producer() -> None:
    producer = FakeProducer(fail_commits=2)
    partition = await _opened(producer)
    before = _counted()
    await partition.commit([Output(OUT, 3, b"a", b"1")], OFFSETS, [_letter()])
    assert producer.calls.count("start") == 1 and "stop" not in producer.calls
    assert producer.calls[3:].count("abort") == 2 and producer.calls[3:].count("commit") == 3
    assert producer.committed == [(OUT, 3, b"a", b"1"), (f"{TOPIC}.dlq.v1", 3, b"k", b"garbage")]
    assert _counted() == before + 1  # counted once, after the commit, not per attempt


async def test_fenced_stops_the_partition_without_retrying_or_counting() -> None:
    producer = FakeProducer(fail_commits=1, error=ProducerFenced)
    partition = await _opened(producer)
    before = _counted()
    with pytest.raises(PartitionFenced):
        await partition.commit([Output(OUT, 3, b"a", b"1")], OFFSETS, [_letter()])
    assert producer.calls[3:] == ["begin", "offsets:acc.book-blue", "commit"]
    assert producer.committed == [] and _counted() == before


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
    assert producer.calls[3:].count("begin") == 1
    assert producer.committed == [] and _counted() == before


async def test_a_stopping_partition_retries_a_few_times_only() -> None:
    producer = FakeProducer(fail_commits=100)
    partition = await _opened(producer)
    partition.stopping = True
    with pytest.raises(PartitionBroken):
        await partition.commit([Output(OUT, 3, b"a", b"1")], OFFSETS)
    assert producer.calls[3:].count("commit") == 3
