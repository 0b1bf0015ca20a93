"""The partition-ownership runtime every Kafka service runs on, once.

:class:`GroupMember` is the consumer group membership: one rebalance listener, one fetch
loop with one restart policy. It hands the service's :class:`PartitionHandler` what the
group assigns and revokes, and every fetched batch; rebalance callbacks and batches are
serialised by one lock, and a batch fetched across a rebalance is read again, never
handled against an ownership that changed meanwhile.

:class:`TransactionalPartition` is one owned partition's transactional producer, its id
from :func:`services.common.kafka.transactional_id`. :meth:`~TransactionalPartition.open`
fences the previous owner with an empty transaction (the broker aborts what it left open)
before the service loads anything of the partition; :meth:`~TransactionalPartition.commit`
writes outputs, dead letters and consumer offsets in one transaction with one policy:

* fenced (another instance owns the partition now): :class:`PartitionFenced`; the service
  stops touching the partition;
* any other Kafka error: abort on the same producer; a retriable error runs the same
  transaction again on the same producer, backing off. The producer is never closed and
  started again here: InitProducerId could fence the partition's rightful new owner;
* the abort fails, or the error is not retriable: :class:`PartitionBroken`; the service
  gives the partition up and only its ownership path (while the group still assigns it)
  opens a new producer.

Dead letters are written inside the transaction and counted and logged once, after it
commits. A record the handler cannot process becomes a dead letter through the
containment policy (services/common/containment.py), which services apply per record.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import (
    InvalidProducerEpoch,
    KafkaError,
    KafkaTimeoutError,
    ProducerFenced,
    TransactionCoordinatorFenced,
)
from aiokafka.producer.message_accumulator import BatchBuilder

from schemas.topics import Topics
from services.common.kafka import (
    DeadLetter,
    dead_letter_headers,
    make_producer,
    note_dead_letter,
    transactional_id,
)
from services.common.settings import KafkaSettings

__all__ = [
    "FENCED",
    "Batches",
    "GroupMember",
    "KeyValue",
    "Output",
    "PartitionBroken",
    "PartitionFenced",
    "PartitionHandler",
    "TransactionalPartition",
    "dead_letter_watermark",
    "retriable",
]

log = logging.getLogger(__name__)

Batches = dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]

# What a fenced producer raises, depending on where the broker noticed.
FENCED: tuple[type[KafkaError], ...] = (
    ProducerFenced,
    InvalidProducerEpoch,
    TransactionCoordinatorFenced,
)
_RETRY_SECONDS = 1.0
_ABORT_TIMEOUT_SECONDS = 10.0
_ATTEMPTS_WHEN_STOPPING = 3


class PartitionFenced(Exception):
    """Another instance owns the partition now: stop touching it."""

    def __init__(self, partition: int) -> None:
        super().__init__(f"partition {partition} is owned by another instance now")
        self.partition = partition


class PartitionBroken(Exception):
    """The transaction could not be committed nor retried on this producer: give the
    partition up; the ownership path loads it again while the group still assigns it."""

    def __init__(self, partition: int, cause: BaseException) -> None:
        super().__init__(f"partition {partition}: {type(cause).__name__}: {cause}")
        self.partition = partition
        self.error = cause


_NO_HEADERS: list[tuple[str, bytes]] = []
KeyValue = tuple[bytes | None, bytes | None]  # a record of TransactionalPartition.commit(grouped=)
# records of one topic-partition: (key, value) pairs and their headers (None: no headers)
_Run = tuple[Sequence[KeyValue], Sequence[Any] | None]


class Output(NamedTuple):
    """One record a transaction writes."""

    topic: str
    partition: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]] = _NO_HEADERS  # never mutated

    @classmethod
    def dead_letter(cls, letter: DeadLetter) -> Output:
        return cls(
            Topics.dlq(letter.source_topic),
            letter.source_partition,
            letter.key,
            letter.value,
            dead_letter_headers(letter),
        )


def retriable(exc: KafkaError) -> bool:
    """A transient broker error: the same transaction may succeed on a second try. A
    delivery timeout counts (aiokafka marks KafkaTimeoutError as not retriable)."""
    return bool(exc.retriable) or isinstance(exc, KafkaTimeoutError)


class TransactionalPartition:
    """The transactional producer of one owned partition; see the module docstring."""

    def __init__(
        self,
        kafka: KafkaSettings,
        group_id: str,
        partition: int,
        *,
        make: Callable[..., AIOKafkaProducer] = make_producer,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        **producer_options: Any,
    ) -> None:
        """``group_id`` is the service's configured group id (without the prefix)."""
        self.partition = partition
        self.transactional_id = transactional_id(kafka, group_id, partition)
        self.consumer_group = f"{kafka.topic_prefix}{group_id}"
        self.stopping = False  # when set, a retriable error is retried a few times only
        self._producer = make(kafka, transactional_id=self.transactional_id, **producer_options)
        self._sleep = sleep
        self._opened = False

    async def open(self) -> None:
        """Start the producer and fence every earlier owner of this transactional id
        with an empty transaction; call it before loading anything of the partition."""
        try:
            await self._producer.start()
            await self._producer.begin_transaction()
            await self._producer.commit_transaction()
        except FENCED as exc:
            await self._stop()
            raise PartitionFenced(self.partition) from exc
        except BaseException:
            await self._stop()
            raise
        self._opened = True

    async def close(self) -> None:
        self._opened = False
        await self._stop()

    async def _stop(self) -> None:
        try:
            await asyncio.wait_for(self._producer.stop(), timeout=_ABORT_TIMEOUT_SECONDS)
        except Exception:
            log.warning(
                "closing a producer failed", extra={"partition": self.partition}, exc_info=True
            )

    async def commit(
        self,
        outputs: Sequence[Output],
        offsets: Mapping[TopicPartition, int | tuple[int, str]] | None = None,
        dead_letters: Sequence[DeadLetter] = (),
        *,
        grouped: Mapping[tuple[str, int], Sequence[KeyValue]] | None = None,
        before_commit: Callable[[], None] | None = None,
    ) -> None:
        """Write ``outputs`` and ``dead_letters`` and commit ``offsets`` for the service's
        consumer group, in one transaction, with the policy of the module docstring.
        An offset may come with its metadata, as ``(offset, metadata)``.
        ``grouped`` are more records without headers, as ``(key, value)`` per topic and
        partition, written after ``outputs`` (a burst's thousands of records, without an
        :class:`Output` each). ``before_commit`` runs after everything is written, just
        before the commit."""
        if not self._opened:
            raise RuntimeError(f"partition {self.partition} is not open")
        records = [*outputs, *(Output.dead_letter(letter) for letter in dead_letters)]
        producer = self._producer
        attempt = 0
        while True:
            try:
                await producer.begin_transaction()
                futures = await self._send(records, grouped or {})
                if offsets:
                    await producer.send_offsets_to_transaction(dict(offsets), self.consumer_group)
                if futures:
                    await asyncio.gather(*futures)
                if before_commit is not None:
                    before_commit()
                await producer.commit_transaction()
                break
            except FENCED as exc:
                log.error(
                    "fenced: another instance owns this partition now",
                    extra={"partition": self.partition},
                )
                raise PartitionFenced(self.partition) from exc
            except KafkaError as exc:
                attempt += 1
                await self._abort(exc)
                limit = _ATTEMPTS_WHEN_STOPPING if self.stopping else None
                if not retriable(exc) or (limit is not None and attempt >= limit):
                    log.warning(
                        "a transaction failed; giving the partition up to be loaded again",
                        extra={"partition": self.partition, "error": type(exc).__name__},
                    )
                    raise PartitionBroken(self.partition, exc) from exc
                log.warning(
                    "a transaction failed; retrying it",
                    extra={
                        "partition": self.partition,
                        "error": type(exc).__name__,
                        "attempt": attempt,
                    },
                )
                await self._sleep(min(5.0, 0.2 * 2**attempt))
            except BaseException:
                # Cancelled (or a bug in before_commit): nothing of it may commit later.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(producer.abort_transaction(), _ABORT_TIMEOUT_SECONDS)
                raise
        for letter in dead_letters:
            note_dead_letter(letter)  # once per letter, now that it is committed

    async def _abort(self, error: KafkaError) -> None:
        try:
            await asyncio.wait_for(
                self._producer.abort_transaction(), timeout=_ABORT_TIMEOUT_SECONDS
            )
        except FENCED as fenced:
            raise PartitionFenced(self.partition) from fenced
        except Exception as abort_failed:
            log.warning(
                "a transaction failed and cannot be aborted; giving the partition up",
                extra={
                    "partition": self.partition,
                    "error": type(error).__name__,
                    "abort_error": type(abort_failed).__name__,
                },
            )
            raise PartitionBroken(self.partition, error) from abort_failed

    async def _send(
        self, records: Sequence[Output], grouped: Mapping[tuple[str, int], Sequence[KeyValue]]
    ) -> list[asyncio.Future[Any]]:
        """Send packed into record batches, one open batch per topic and partition (much
        cheaper than a ``send`` per record at 10,000 records/s). Records keep their order
        within each topic-partition, the only order Kafka has (``grouped`` after
        ``records``)."""
        places: dict[tuple[str, int], list[_Run]] = {}
        outputs: dict[tuple[str, int], tuple[list[KeyValue], list[Any]]] = {}
        for record in records:
            place = (record.topic, record.partition)
            run = outputs.get(place)
            if run is None:
                run = outputs[place] = ([], [])
                places.setdefault(place, []).append(run)
            run[0].append((record.key, record.value))
            run[1].append(record.headers)
        for place, pairs in grouped.items():
            if pairs:
                # a burst's thousands of records as they are: no tuple made per record
                places.setdefault(place, []).append((pairs, None))
        # One batch of each topic-partition in turn: aiokafka holds one batch per
        # topic-partition until a produce request takes it, and keeps one request in
        # flight, so a request carries a batch of every topic-partition (a burst's
        # reminders and their markers together) rather than one after the other.
        producer = self._producer
        pending = [
            self._batches_of(topic, partition, runs) for (topic, partition), runs in places.items()
        ]
        futures: list[asyncio.Future[Any]] = []
        while pending:
            for batches in list(pending):
                built = next(batches, None)
                if built is None:
                    pending.remove(batches)
                    continue
                batch, topic, partition = built
                futures.append(await producer.send_batch(batch, topic, partition=partition))
        return futures

    def _batches_of(
        self, topic: str, partition: int, runs: Sequence[_Run]
    ) -> Iterator[tuple[BatchBuilder, str, int]]:
        """One topic-partition's records, in order, in as many batches as they fill. A run
        is ``(key, value)`` pairs with their headers, or ``None`` for no headers."""
        producer = self._producer
        batch = producer.create_batch()
        for pairs, headers in runs:
            for (key, value), record_headers in zip(
                pairs, itertools.repeat(_NO_HEADERS) if headers is None else headers, strict=False
            ):
                if (
                    batch.append(key=key, value=value, timestamp=None, headers=record_headers)
                    is None
                ):
                    # full: hand it over, start the next one with this record
                    yield batch, topic, partition
                    batch = producer.create_batch()
                    batch.append(key=key, value=value, timestamp=None, headers=record_headers)
        yield batch, topic, partition


class PartitionHandler(Protocol):
    """What a service gives its :class:`GroupMember`. Every call runs with the member's
    lock held; ``handle`` only sees batches fetched within the current assignment."""

    async def assigned(self, partitions: set[int]) -> None: ...

    async def revoked(self, partitions: set[int]) -> None: ...

    async def handle(self, batches: Batches) -> None: ...

    def fetch_timeout_ms(self) -> int: ...


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, member: GroupMember) -> None:
        self._member = member

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._member._rebalanced(revoked, assigned=False)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._member._rebalanced(assigned, assigned=True)


class GroupMember:
    """Group membership and the fetch loop of one service; see the module docstring.

    Restart policy: a failed fetch (the broker restarting, a rebalance) is retried after
    ``retry_seconds``, forever. Anything else the handler raises is a bug, not a Kafka
    hiccup: the member records it in ``failed`` (liveness fails), revokes its partitions
    from the handler and leaves the group, so another instance takes them over from the
    last commit.
    """

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        topics: Sequence[str],
        handler: PartitionHandler,
        *,
        name: str,
        retry_seconds: float = _RETRY_SECONDS,
    ) -> None:
        self.consumer = consumer
        self.topics = list(topics)
        self.handler = handler
        self.name = name
        self.lock = asyncio.Lock()
        self.generation = 0
        self.assignment: frozenset[int] = frozenset()
        self.failed: BaseException | None = None
        self._retry_seconds = retry_seconds
        self._task: asyncio.Task[None] | None = None
        self._stopped = False

    async def start(self) -> None:
        self.consumer.subscribe(self.topics, listener=_Listener(self))
        await self.consumer.start()
        self._task = asyncio.create_task(self._run(), name=f"{self.name}-fetch")

    def cancel(self) -> None:
        """Stop fetching now (e.g. with the lock held, after the last batch settled)."""
        if self._task is not None:
            self._task.cancel()

    async def stop(self) -> None:
        """Stop fetching and leave the group. Call it without the lock: leaving may wait
        for a rebalance callback, which takes the lock."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task  # a failure was logged when it happened
        if not self._stopped:
            self._stopped = True
            await self.consumer.stop()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def seek(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Read from these offsets again (partitions no longer assigned are skipped)."""
        assigned = self.consumer.assignment()
        for tp, offset in offsets.items():
            if tp in assigned:
                self.consumer.seek(tp, offset)

    def rewind(self, batches: Batches) -> None:
        self.seek({tp: records[0].offset for tp, records in batches.items() if records})

    async def _rebalanced(self, tps: set[TopicPartition], *, assigned: bool) -> None:
        async with self.lock:
            self.generation += 1
            partitions = {tp.partition for tp in tps}
            if assigned:
                self.assignment = frozenset(partitions)
                await self.handler.assigned(partitions)
            else:
                self.assignment = self.assignment - partitions
                await self.handler.revoked(partitions)

    async def _run(self) -> None:
        consumer = self.consumer
        try:
            while True:
                generation = self.generation
                try:
                    batches = await consumer.getmany(timeout_ms=self.handler.fetch_timeout_ms())
                except KafkaError as exc:
                    log.warning(
                        "fetching failed; retrying",
                        extra={"service": self.name, "error": type(exc).__name__},
                    )
                    await asyncio.sleep(self._retry_seconds)
                    continue
                async with self.lock:
                    if generation != self.generation:
                        # A rebalance came between fetch and now: read the batch again.
                        self.rewind(batches)
                        continue
                    await self.handler.handle(batches)
                await asyncio.sleep(0)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.failed = exc
            log.critical(
                "stopped processing; leaving the group", extra={"service": self.name}, exc_info=True
            )
            self._stopped = True
            with contextlib.suppress(Exception):
                await consumer.stop()
            with contextlib.suppress(Exception):
                await self.handler.revoked(set(self.assignment))
            raise


async def dead_letter_watermark(
    loader: AIOKafkaConsumer, source_topic: str, partition: int, *, end: int | None = None
) -> int:
    """The source offset of the last dead letter of ``source_topic`` ``partition``.

    For services that read an input from its beginning on every assignment (no committed
    offsets): records up to this offset were dead-lettered by an earlier owner and are
    not sent to the DLQ again. Dead letters are written in transactions, so the last
    offsets of the DLQ are commit markers (and aborted records, which a read_committed
    ``loader`` skips): it reads back from the end in growing windows. ``end``: the DLQ
    partition's end offset, if the caller asked for it already.
    """
    tp = TopicPartition(Topics.dlq(source_topic), partition)
    if end is None:
        end = (await loader.end_offsets([tp]))[tp]
    loader.assign([tp])
    window = 4
    start = end
    while start > 0:
        start = max(0, end - window)
        loader.seek(tp, start)
        last = -1
        deadline = asyncio.get_running_loop().time() + 10
        while await loader.position(tp) < end and asyncio.get_running_loop().time() < deadline:
            batches = await loader.getmany(tp, timeout_ms=200)
            for record in batches.get(tp, []):
                for name, value in record.headers:
                    if name == "source-offset":
                        with contextlib.suppress(ValueError):
                            last = max(last, int(value))
        if last >= 0:
            return last
        window *= 16
    return -1
