"""The notifier's partition worker without a broker: a fake transactional producer, a
fake consumer and in-memory tables, driven through its real loop."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError, RequestTimedOutError
from prometheus_client import REGISTRY

from schemas.models import appointment_key
from schemas.topics import Topics
from services.common.clock import FakeClock
from services.common.settings import NotifierSettings, Settings
from services.domain.codec import encode
from services.notifier import engine
from services.notifier.delivery import Delivery
from services.notifier.engine import NotifierContext, PartitionWorker
from services.notifier.ledger import Ledger, LedgerBook
from services.notifier.samples import (
    sample_appointment,
    sample_config,
    sample_due,
    sample_preferences,
)
from tests.support.transactions import FakeProducer

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
TOPICS = Topics("")


class FakeConsumer:
    def __init__(self) -> None:
        self.commits: list[Any] = []

    def assignment(self) -> set[TopicPartition]:
        return set()

    def paused(self) -> set[TopicPartition]:
        return set()

    async def commit(self, offsets: Any) -> None:
        self.commits.append(offsets)


class FakeAdmin:
    async def list_consumer_group_offsets(self, group_id: str, partitions: Any) -> dict[Any, Any]:
        return {}


class FakeTables:
    def __init__(self, clock: FakeClock) -> None:
        self.ledgers = LedgerBook(clock.now)
        self.configs: dict[str, Any] = {}
        self.appointments: dict[str, Any] = {}
        self.preferences: dict[str, Any] = {}

    async def follow(self, partition: int, committed_offset: int, timeout: float) -> Ledger:
        return self.ledgers.open(partition, committed_offset)

    async def catch_up(self, partition: int, timeout: float) -> bool:
        return True


class FakeDeliverer:
    channels = frozenset({"email"})

    def __init__(self) -> None:
        self.delivered = 0

    async def deliver(self, due: Any, *args: Any, **kwargs: Any) -> Delivery:
        self.delivered += 1
        return Delivery(status="sent", channel="email", message_id=f"<{due.appointment_id}@x>")


class Harness:
    def __init__(self, monkeypatch: pytest.MonkeyPatch, producer: FakeProducer) -> None:
        self.clock = FakeClock(T0)
        self.tables = FakeTables(self.clock)
        self.deliverer = FakeDeliverer()
        self.producers: list[FakeProducer] = []
        self.offset = 0

        def make_producer(*args: Any, **kwargs: Any) -> FakeProducer:
            self.producers.append(producer)
            return producer

        monkeypatch.setattr(engine, "make_producer", make_producer)
        ctx = NotifierContext(
            settings=Settings(),
            topics=TOPICS,
            clock=self.clock,
            group_id="notifier",
            partitions=1,
            consumer=cast(Any, FakeConsumer()),
            admin=cast(Any, FakeAdmin()),
            tables=cast(Any, self.tables),
            deliverer=cast(Any, self.deliverer),
        )
        self.worker = PartitionWorker(ctx, 0)

    def record(self, key: bytes | None, value: bytes) -> ConsumerRecord[bytes, bytes]:
        self.offset += 1
        return ConsumerRecord(
            topic=TOPICS.reminders_due,
            partition=0,
            offset=self.offset - 1,
            timestamp=0,
            timestamp_type=0,
            key=key,
            value=value,
            checksum=None,
            serialized_key_size=len(key or b""),
            serialized_value_size=len(value),
            headers=[],
        )

    def due_tomorrow(self, appointment_id: str) -> ConsumerRecord[bytes, bytes]:
        """A due reminder for an appointment a day from now, with everything to send it."""
        now = self.clock.now()
        config = sample_config()
        appointment = sample_appointment(
            appointment_id=appointment_id, start=now + timedelta(days=1)
        )
        self.tables.configs[config.practice_id] = config
        self.tables.appointments[appointment_key(config.practice_id, appointment_id)] = appointment
        prefs = sample_preferences(updated_at=now - timedelta(days=30))
        self.tables.preferences[f"{prefs.practice_id}/{prefs.patient_id}"] = prefs
        due = sample_due(appointment, fired_at=now)
        return self.record(
            appointment_key(due.practice_id, due.appointment_id).encode(), encode(due)
        )

    async def start(self) -> None:
        self.worker.start()
        await self.until(lambda: self.worker.ready)

    async def run(self, *records: ConsumerRecord[bytes, bytes]) -> None:
        """Hand records to the running loop and wait until it has dealt with them."""
        self.worker.enqueue(records)
        await self.until(lambda: self.worker.idle or self.worker.state == "failed")

    async def until(self, condition: Callable[[], bool]) -> None:
        for _ in range(1000):
            if condition():
                return
            await asyncio.sleep(0.01)
        raise AssertionError("the worker did not get there")

    @property
    def ledger(self) -> Ledger:
        ledger = self.tables.ledgers.get(0)
        assert ledger is not None
        return ledger


def _dead_letters_counted() -> float:
    value = REGISTRY.get_sample_value(
        "reminders_dead_letters_total", {"topic": TOPICS.reminders_due, "reason": "no_key"}
    )
    return value or 0.0


async def test_a_retried_commit_counts_and_logs_its_dead_letter_once(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    producer = FakeProducer(fail_commits=1)
    h = Harness(monkeypatch, producer)
    await h.start()
    before = _dead_letters_counted()
    with caplog.at_level(logging.WARNING):
        await h.run(h.record(None, b"{}"))
    await h.worker.stop(1.0)
    assert producer.calls.count("commit") == 2  # the first commit failed, the retry went
    assert _dead_letters_counted() == before + 1
    noted = [r for r in caplog.records if r.getMessage() == "record sent to dead-letter topic"]
    assert len(noted) == 1
    parked = [t for t, _ in producer.committed_sends if t == Topics.dlq(TOPICS.reminders_due)]
    assert len(parked) == 1


async def test_a_dead_letter_whose_transaction_never_commits_is_not_counted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    producer = FakeProducer(fail_commits=1, abort_fails=True)
    h = Harness(monkeypatch, producer)
    await h.start()
    before = _dead_letters_counted()
    await h.run(h.record(None, b"{}"))
    assert h.worker.state == "failed"
    await h.worker.stop(1.0)
    assert _dead_letters_counted() == before


async def test_a_retriable_commit_error_retries_on_the_same_producer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    producer = FakeProducer(fail_commits=2)
    h = Harness(monkeypatch, producer)
    await h.start()
    await h.run(h.due_tomorrow("a-1"))
    assert h.worker.state == "ready"
    assert h.worker.outcomes_committed == 1
    # Never closed and started again (that would run InitProducerId and could fence the
    # partition's new owner): aborted and retried on the one producer it was loaded with.
    assert len(h.producers) == 1
    assert producer.calls.count("start") == 1 and "stop" not in producer.calls
    assert producer.calls.count("abort") == 2 and producer.calls.count("commit") == 3
    await h.worker.stop(1.0)


@pytest.mark.parametrize(
    ("error", "abort_fails"),
    [(RequestTimedOutError, True), (lambda: KafkaError("not retriable"), False)],
    ids=["abort-fails", "not-retriable"],
)
async def test_a_commit_error_that_cannot_be_retried_gives_the_partition_up(
    monkeypatch: pytest.MonkeyPatch, error: Callable[[], KafkaError], abort_fails: bool
) -> None:
    producer = FakeProducer(fail_commits=1, error=error, abort_fails=abort_fails)
    h = Harness(monkeypatch, producer)
    await h.start()
    await h.run(h.due_tomorrow("a-1"))
    # The worker fails; the service restarts it only while the group still assigns the
    # partition here (NotifierService._restart_failed). No new producer in the meantime.
    assert h.worker.state == "failed"
    assert isinstance(h.worker.failure, KafkaError)
    assert len(h.producers) == 1 and producer.calls.count("start") == 1
    assert producer.calls.count("begin") == 1
    await h.worker.stop(1.0)


async def test_the_sent_map_stays_bounded_while_the_partition_is_held(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    h = Harness(monkeypatch, FakeProducer())
    await h.start()
    sizes = []
    for day in range(10):
        for n in range(5):
            await h.run(h.due_tomorrow(f"a-{day}-{n}"))
        sizes.append(len(h.ledger.sent))
        h.clock.advance(timedelta(days=1))
    assert h.worker.state == "ready"
    assert h.worker.outcomes_committed == 50 and h.deliverer.delivered == 50
    # A sent reminder is remembered until a day after its appointment (tomorrow): at most
    # two days' worth, however long the partition is held.
    assert max(sizes) <= 10, sizes
    assert len(h.ledger.sent) <= 10
    await h.worker.stop(1.0)


class _GatedProducer(FakeProducer):
    """Holds the first transaction that carries outcomes until `release` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.committing = asyncio.Event()
        self.release = asyncio.Event()

    async def commit_transaction(self) -> None:
        if self._open and not self.committing.is_set():
            self.committing.set()
            await self.release.wait()
        await super().commit_transaction()


def _small_batches(h: Harness, size: int) -> None:
    h.worker.ctx.settings = Settings(notifier=NotifierSettings(batch_size=size))


async def test_a_batch_queued_behind_another_is_marked_in_flight_by_that_ones_transaction(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    producer = FakeProducer()
    h = Harness(monkeypatch, producer)
    _small_batches(h, 2)
    await h.start()
    await h.run(*(h.due_tomorrow(f"a-{n}") for n in range(6)))
    assert h.worker.outcomes_committed == 6 and h.deliverer.delivered == 6
    tp = h.worker.tp
    consumer = cast(FakeConsumer, h.worker.ctx.consumer)
    # One marker commit of its own, for the first batch; each transaction then marks the
    # batch queued behind it (the offset it commits, up to that batch's end), and the
    # last one, with nothing queued, commits the plain offset.
    assert consumer.commits == [{tp: (0, "inflight:2")}]
    committed: list[Any] = [offsets[tp] for offsets, _ in producer.offsets]
    assert committed == [
        (2, "inflight:4"),
        (4, "inflight:6"),
        6,
    ]
    await h.worker.stop(1.0)
    assert consumer.commits == [{tp: (0, "inflight:2")}]  # nothing left to clear


async def test_a_clean_stop_clears_the_marker_of_a_batch_that_never_started(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    producer = _GatedProducer()
    h = Harness(monkeypatch, producer)
    _small_batches(h, 2)
    await h.start()
    h.worker.enqueue([h.due_tomorrow(f"a-{n}") for n in range(4)])
    await asyncio.wait_for(producer.committing.wait(), 5.0)
    stopping = asyncio.create_task(h.worker.stop(5.0))
    await asyncio.sleep(0.05)
    producer.release.set()
    await stopping
    tp = h.worker.tp
    consumer = cast(FakeConsumer, h.worker.ctx.consumer)
    # The first batch committed with the second one's marker; the second never started,
    # so the stop commits the same offset without it: the next owner counts no possible
    # duplicates for mail that was never sent.
    assert h.worker.outcomes_committed == 2 and h.deliverer.delivered == 2
    committed: list[Any] = [offsets[tp] for offsets, _ in producer.offsets]
    assert committed == [(2, "inflight:4")]
    assert consumer.commits == [{tp: (0, "inflight:2")}, {tp: (2, "")}]
