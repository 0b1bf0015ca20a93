"""Compacted topics as in-memory tables: the services' state lives in Kafka, not on disk.

A :class:`TopicFollower` reads chosen partitions of one topic from the beginning,
reports each partition as loaded once it reached the end offset seen when the partition
was added, and then keeps following. :class:`Table` stores the decoded latest value per
key on top of it. The scheduler, which must hold a million timers compactly, gives the
follower its own ``apply`` instead.

Reads are ``read_committed``: aborted transactional writes are never applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Generic, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from pydantic import BaseModel

from services.common.containment import is_about_the_record, record_error
from services.common.kafka import describe_partitions, make_consumer
from services.common.settings import KafkaSettings
from services.domain.codec import DecodeError, decode

__all__ = ["Apply", "EndOffsets", "InvalidRecord", "Table", "TopicFollower"]

log = logging.getLogger(__name__)

V = TypeVar("V", bound=BaseModel)

# apply(partition, key, value or None for a tombstone, the raw record)
Apply = Callable[[int, str, bytes | None, ConsumerRecord[bytes, bytes]], None]
# Called for a record that cannot be applied (the owner sends it to the DLQ).
InvalidRecord = Callable[[ConsumerRecord[bytes, bytes], DecodeError], Awaitable[None]]


class EndOffsets:
    """End offsets on a connection of their own, for :meth:`TopicFollower.catch_up`.

    On a fetching consumer's connection the request would queue behind a fetch long-poll
    (up to 500 ms). :meth:`shared` answers many callers with one ListOffsets: a caller
    joins the round being gathered, and a round is sent only once the one before it is
    answered, so every answer comes from a request sent after its caller asked (what
    "everything committed by now" needs). The notifier's batches catch up three tables
    per batch on a dozen partitions: one request per round instead of one per table and
    partition. Followers may share one instance (start and stop are counted).
    """

    def __init__(self, settings: KafkaSettings) -> None:
        self._settings = settings
        self._consumer: AIOKafkaConsumer | None = None
        self._users = 0
        self._lock = asyncio.Lock()
        # The round being gathered (its partitions, the future its callers wait on) and
        # the task that sends the rounds one after the other.
        self._round_tps: set[TopicPartition] = set()
        self._round: asyncio.Future[dict[TopicPartition, int]] | None = None
        self._rounds: asyncio.Task[None] | None = None

    async def start(self) -> None:
        async with self._lock:
            self._users += 1
            if self._consumer is None:
                consumer = make_consumer(self._settings, group_id=None)
                await consumer.start()
                self._consumer = consumer

    async def stop(self) -> None:
        async with self._lock:
            self._users = max(0, self._users - 1)
            if self._users:
                return
            if self._rounds is not None:
                self._rounds.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._rounds
                self._rounds = None
            if self._round is not None:
                self._round.cancel()
                self._round, self._round_tps = None, set()
            consumer, self._consumer = self._consumer, None
            if consumer is not None:
                await consumer.stop()

    async def now(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        """The end offsets of `tps`, asked right now on a request of their own."""
        consumer = self._consumer
        assert consumer is not None, "start() first"
        ends: dict[TopicPartition, int] = await consumer.end_offsets(tps)
        return ends

    async def shared(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        """The end offsets of `tps`, from the next round's request (see the class)."""
        if self._round is None:
            self._round = asyncio.get_running_loop().create_future()
            self._round.add_done_callback(_retrieve)
        self._round_tps.update(tps)
        future = self._round
        if self._rounds is None or self._rounds.done():
            self._rounds = asyncio.create_task(self._send_rounds(), name="end-offsets")
        ends = await asyncio.shield(future)
        return {tp: ends[tp] for tp in tps}

    async def _send_rounds(self) -> None:
        while self._round is not None:
            future, tps = self._round, sorted(self._round_tps)
            self._round, self._round_tps = None, set()
            try:
                ends = await self.now(tps)
            except asyncio.CancelledError:
                future.cancel()
                raise
            except Exception as exc:
                future.set_exception(exc)
            else:
                future.set_result(ends)


def _retrieve(future: asyncio.Future[dict[TopicPartition, int]]) -> None:
    """A round whose callers all went away: its error is not worth a warning."""
    if not future.cancelled():
        future.exception()


class TopicFollower:
    """Follows selected partitions of one topic from their beginning."""

    def __init__(
        self,
        settings: KafkaSettings,
        topic: str,
        apply: Apply,
        *,
        on_invalid: InvalidRecord | None = None,
        max_records: int = 5000,
        name: str | None = None,
    ) -> None:
        self.topic = topic
        self.name = name or topic
        self._settings = settings
        self._apply = apply
        self._on_invalid = on_invalid
        self._max_records = max_records
        self._consumer: AIOKafkaConsumer | None = None
        self._ends = EndOffsets(settings)
        self._task: asyncio.Task[None] | None = None
        self._partitions: set[int] = set()
        self._targets: dict[int, int] = {}  # partition -> end offset to reach for "loaded"
        self._loaded: dict[int, asyncio.Event] = {}
        # partition -> the consumer's position once the records before it were applied
        self._applied: dict[int, int] = {}
        self._lock = asyncio.Lock()
        self._progress = asyncio.Condition()
        self.load_seconds: dict[int, float] = {}
        self._load_started: dict[int, float] = {}
        self.failed: BaseException | None = None

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self._consumer = make_consumer(
            self._settings,
            group_id=None,
            max_poll_records=self._max_records,
            fetch_max_bytes=16 * 1024 * 1024,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        await self._consumer.start()
        await self._ends.start()
        self._task = asyncio.create_task(self._run(), name=f"follow:{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None
        await self._ends.stop()

    async def partition_count(self) -> int:
        counts = await describe_partitions(self._settings, [self.topic])
        if not counts.get(self.topic):
            raise RuntimeError(f"topic {self.topic} does not exist; run `reminders topics create`")
        return counts[self.topic]

    def share_end_offsets(self, ends: EndOffsets) -> None:
        """Ask catch_up's end offsets through `ends`, shared with other followers (before
        start())."""
        assert self._task is None, "before start()"
        self._ends = ends

    # ------------------------------------------------------------------ assignment
    @property
    def partitions(self) -> frozenset[int]:
        return frozenset(self._partitions)

    async def add(self, partitions: Iterable[int]) -> None:
        """Start reading these partitions from the beginning (returns before loaded)."""
        consumer = self._consumer
        assert consumer is not None, "start() first"
        new = set(partitions) - self._partitions
        if not new:
            return
        async with self._lock:
            tps = [TopicPartition(self.topic, p) for p in sorted(new)]
            ends = await self._ends.now(tps)
            kept = await self._positions()
            self._partitions |= new
            consumer.assign([TopicPartition(self.topic, p) for p in sorted(self._partitions)])
            for tp, offset in kept.items():
                consumer.seek(tp, offset)  # assign() forgets positions; don't re-read
            await consumer.seek_to_beginning(*tps)
            now = time.monotonic()
            for tp in tps:
                self._applied.pop(tp.partition, None)
            for tp in tps:
                self._targets[tp.partition] = ends[tp]
                self._loaded[tp.partition] = asyncio.Event()
                self._load_started[tp.partition] = now
            await self._mark_loaded(consumer)

    async def _positions(self) -> dict[TopicPartition, int]:
        consumer = self._consumer
        assert consumer is not None
        return {
            tp: await consumer.position(tp)
            for tp in consumer.assignment()
            if tp.partition in self._partitions
        }

    async def remove(self, partitions: Iterable[int]) -> None:
        consumer = self._consumer
        gone = set(partitions) & self._partitions
        if not gone or consumer is None:
            return
        async with self._lock:
            kept = await self._positions()
            self._partitions -= gone
            consumer.assign([TopicPartition(self.topic, p) for p in sorted(self._partitions)])
            for tp, offset in kept.items():
                if tp.partition in self._partitions:
                    consumer.seek(tp, offset)
            for p in gone:
                self._applied.pop(p, None)
                self._targets.pop(p, None)
                event = self._loaded.pop(p, None)
                if event is not None:
                    event.set()  # release waiters; the caller checks ownership again

    async def wait_loaded(self, partitions: Iterable[int] | None = None) -> None:
        wanted = self._partitions if partitions is None else set(partitions)
        for p in list(wanted):
            event = self._loaded.get(p)
            if event is not None:
                await event.wait()
            if self.failed is not None:
                raise RuntimeError(f"{self.name} stopped: {self.failed}") from self.failed

    def is_loaded(self, partition: int) -> bool:
        event = self._loaded.get(partition)
        return event is not None and event.is_set()

    async def catch_up(self, partitions: Iterable[int], timeout: float = 10.0) -> bool:
        """Wait until everything a read_committed reader can see in these partitions by
        now has been applied.

        The notifier uses this to read the latest appointment state at send time. (Kafka
        shows a transaction once its commit markers are written, a few milliseconds after
        the producer's commit returns.)
        """
        consumer = self._consumer
        assert consumer is not None
        wanted = [TopicPartition(self.topic, p) for p in partitions if p in self._partitions]
        if not wanted:
            return True
        ends = await self._ends.shared(wanted)

        def reached() -> bool:
            # What the loop has applied, not the consumer's position: that moves when a
            # batch is fetched, before the batch is in the table.
            applied = self._applied
            return all(
                applied.get(tp.partition, -1) >= end
                for tp, end in ends.items()
                if tp.partition in self._partitions
            )

        deadline = time.monotonic() + timeout
        if reached():
            return True
        async with self._progress:
            while not reached():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._progress.wait(), timeout=min(remaining, 0.2))
        return True

    # ------------------------------------------------------------------ the loop
    async def _mark_loaded(self, consumer: AIOKafkaConsumer) -> None:
        for p, target in list(self._targets.items()):
            event = self._loaded.get(p)
            if event is None or event.is_set():
                continue
            if await consumer.position(TopicPartition(self.topic, p)) >= target:
                self.load_seconds[p] = time.monotonic() - self._load_started.get(p, 0.0)
                event.set()

    async def _run(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        try:
            while True:
                if not self._partitions:
                    await asyncio.sleep(0.05)
                    continue
                # Wait for records without the lock: catch_up() must not wait out a
                # fetch long-poll when everything is applied already.
                batches = await consumer.getmany(timeout_ms=100)
                async with self._lock:
                    for tp, records in batches.items():
                        if tp.partition not in self._partitions:
                            continue
                        for record in records:
                            await self._apply_record(tp.partition, record)
                    await self._mark_loaded(consumer)
                    # The positions now cover exactly what is applied: only this loop
                    # fetches, and add()/remove() seek under the lock.
                    for tp in consumer.assignment():
                        if tp.partition in self._partitions:
                            self._applied[tp.partition] = await consumer.position(tp)
                async with self._progress:
                    self._progress.notify_all()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.failed = exc
            log.exception("table follower stopped", extra={"topic": self.topic})
            for event in self._loaded.values():
                event.set()
            raise

    async def _apply_record(self, partition: int, record: ConsumerRecord[bytes, bytes]) -> None:
        if record.key is None:
            await self._invalid(record, DecodeError("no_key", "compacted records need a key"))
            return
        try:
            key = record.key.decode("utf-8")
        except UnicodeDecodeError:
            await self._invalid(record, DecodeError("bad_key", "key is not UTF-8"))
            return
        try:
            self._apply(partition, key, record.value, record)
        except DecodeError as exc:
            await self._invalid(record, exc)
        except Exception as exc:
            if not is_about_the_record(exc):
                raise
            await self._invalid(record, record_error(exc, record.topic))

    async def _invalid(self, record: ConsumerRecord[bytes, bytes], error: DecodeError) -> None:
        if self._on_invalid is not None:
            await self._on_invalid(record, error)
        else:
            log.warning(
                "invalid record skipped",
                extra={
                    "topic": record.topic,
                    "offset": record.offset,
                    "error_reason": error.reason,
                },
            )


class Table(Generic[V]):
    """Latest value per key of a compacted topic, decoded into a record model.

    ``key_check`` may refuse a record whose value disagrees with its key (a config for
    practice A under practice B's key must not count as B's config).
    """

    def __init__(
        self,
        settings: KafkaSettings,
        topic: str,
        model: type[V],
        *,
        validate: Callable[[V], V] | None = None,
        key_of: Callable[[V], str] | None = None,
        on_invalid: InvalidRecord | None = None,
        on_change: Callable[[str, V | None, V | None], None] | None = None,
        name: str | None = None,
    ) -> None:
        self.model = model
        self._rows: dict[str, V] = {}
        self._partition_of: dict[str, int] = {}
        self._validate = validate
        self._key_of = key_of
        self._on_change = on_change
        self.follower = TopicFollower(
            settings, topic, self._apply, on_invalid=on_invalid, name=name or topic
        )

    def _apply(
        self, partition: int, key: str, value: bytes | None, record: ConsumerRecord[bytes, bytes]
    ) -> None:
        old = self._rows.get(key)
        if value is None:
            self._rows.pop(key, None)
            self._partition_of.pop(key, None)
            new: V | None = None
        else:
            new = decode(self.model, value)
            if self._validate is not None:
                new = self._validate(new)
            if self._key_of is not None and self._key_of(new) != key:
                raise DecodeError(
                    "key_mismatch",
                    f"the record's own key {self._key_of(new)!r} differs from {key!r}",
                )
            self._rows[key] = new
            self._partition_of[key] = partition
        if self._on_change is not None:
            self._on_change(key, old, new)

    async def start(self, partitions: Iterable[int] | None = None) -> None:
        """Start following; ``None`` means every partition (small, global tables)."""
        await self.follower.start()
        try:
            if partitions is None:
                partitions = range(await self.follower.partition_count())
            await self.follower.add(partitions)
        except BaseException:
            await self.follower.stop()
            raise

    async def stop(self) -> None:
        await self.follower.stop()

    async def add_partitions(self, partitions: Iterable[int]) -> None:
        await self.follower.add(partitions)

    async def remove_partitions(self, partitions: Iterable[int]) -> None:
        gone = set(partitions)
        await self.follower.remove(gone)
        for key in [k for k, p in self._partition_of.items() if p in gone]:
            self._rows.pop(key, None)
            self._partition_of.pop(key, None)

    async def wait_loaded(self, partitions: Iterable[int] | None = None) -> None:
        await self.follower.wait_loaded(partitions)

    def get(self, key: str) -> V | None:
        return self._rows.get(key)

    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._rows))

    def values(self) -> list[V]:
        return list(self._rows.values())
