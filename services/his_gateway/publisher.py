"""Publishing accepted events to ``his.appointments.v1`` with FastStream's Kafka broker.

The producer is idempotent with ``acks=all``: a publish returns only once every in-sync
replica has the record, and the producer's own retries never write it twice. Records are
keyed by the practice id alone and sent to the partition Kafka's default (murmur2)
partitioner gives that key (named with the record, the hash remembered per practice), as
for any HIS connector. A FHIR resource keeps the header
``content-type: application/fhir+json``, which is how booking_events tells the forms apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Final, NamedTuple, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner, murmur2
from aiokafka.structs import RecordMetadata
from faststream.kafka import KafkaBroker
from faststream.kafka.publisher.producer import AioKafkaFastProducerImpl

from schemas.topics import Topics
from services.common.kafka import check_partitions
from services.common.settings import Settings
from services.domain.partition import partition_for
from services.his_gateway.validation import FHIR_CONTENT_TYPE

__all__ = [
    "KafkaPublisher",
    "MemoryPublisher",
    "OutRecord",
    "Placement",
    "PublishFailed",
    "Publisher",
]

log = logging.getLogger(__name__)

# murmur2 in Python costs tens of microseconds; a practice's partition never changes.
_partition_for = lru_cache(maxsize=65536)(partition_for)

_NATIVE_CONTENT_TYPE: Final = "application/json"
_FHIR_HEADERS: Final = {"content-type": FHIR_CONTENT_TYPE}
_NATIVE_HEADERS: Final = {"content-type": _NATIVE_CONTENT_TYPE}
# The same headers as aiokafka takes them, in the order FastStream's producer writes them
# (content-type, then correlation_id).
_FHIR_TYPE: Final = ("content-type", FHIR_CONTENT_TYPE.encode("latin-1"))
_NATIVE_TYPE: Final = ("content-type", _NATIVE_CONTENT_TYPE.encode("latin-1"))
_RETRY_SECONDS: Final = 2.0
_PING_SECONDS: Final = 5.0
# How often the records waiting for their confirmation are looked at (at most: a
# record fails at most this much after its timeout).
_SWEEP_SECONDS: Final = 0.25


class PublishFailed(RuntimeError):
    """The broker did not confirm the record in time; the client should retry."""


def _expire(sent: asyncio.Future[RecordMetadata]) -> None:
    if not sent.done():  # aiokafka skips a future that is done when the batch completes
        sent.set_exception(TimeoutError("the broker did not confirm the record in time"))


class OutRecord(NamedTuple):
    """One event to publish (a named tuple: made per request, cheaper than a frozen
    dataclass)."""

    practice_id: str
    value: bytes
    fhir: bool
    # The record's correlation_id header (the event id); FastStream makes one up without.
    correlation_id: str | None = None


class KeyPartitioner:
    """aiokafka's default partitioner (murmur2 of the key, as Kafka's Java client) with
    the hash of each key remembered: murmur2 in pure Python costs tens of microseconds
    per record, and the keys are practice ids, a small set. Keyless records go to
    aiokafka's default (random) choice."""

    def __init__(self, maxsize: int = 65536) -> None:
        self._hash = lru_cache(maxsize=maxsize)(murmur2)
        self._default = DefaultPartitioner()

    def __call__(
        self, key: bytes | None, all_partitions: Sequence[int], available: list[int]
    ) -> int:
        if key is None:
            chosen: int = self._default(key, all_partitions, available)
            return chosen
        digest: int = self._hash(key)
        return all_partitions[(digest & 0x7FFFFFFF) % len(all_partitions)]


@dataclass(slots=True)
class Placement:
    partition: int
    offset: int


class Publisher(Protocol):
    @property
    def connected(self) -> bool: ...

    def describe(self) -> dict[str, object]: ...

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def publish(self, record: OutRecord) -> Placement: ...


class KafkaPublisher:
    """FastStream ``KafkaBroker`` as a producer only; connects (and reconnects) in the
    background so the HTTP side can answer ``/readyz`` while Kafka is away."""

    def __init__(self, settings: Settings, *, timeout_seconds: float = 15.0) -> None:
        self._kafka = settings.kafka
        self.topic = Topics(settings.kafka.topic_prefix).his_appointments
        self._timeout = timeout_seconds
        self.broker = KafkaBroker(
            **settings.kafka.faststream_params(),
            acks="all",
            enable_idempotence=True,
            linger_ms=2,
            max_batch_size=256 * 1024,
            partitioner=KeyPartitioner(),
            request_timeout_ms=int(timeout_seconds * 1000),
            logger=logging.getLogger("faststream.his_gateway"),
        )
        self._connected = False
        self._partitions = 0
        self._error: str | None = None
        self._task: asyncio.Task[None] | None = None
        # The AIOKafkaProducer FastStream's broker made and owns, once connected.
        self._producer: AIOKafkaProducer | None = None
        # Records waiting for the broker's confirmation, oldest first: (the moment it is
        # too late, the record's future). One timer sweeps them (see _confirmed).
        self._waiting: deque[tuple[float, asyncio.Future[RecordMetadata]]] = deque()
        self._sweeper: asyncio.TimerHandle | None = None
        self._sweep_seconds = min(_SWEEP_SECONDS, timeout_seconds)

    @property
    def connected(self) -> bool:
        return self._connected

    def describe(self) -> dict[str, object]:
        details: dict[str, object] = {"broker": "connected" if self._connected else "waiting"}
        if self._error is not None and not self._connected:
            details["broker_error"] = self._error
        return details

    async def start(self) -> None:
        self._task = asyncio.create_task(self._keep_connected(), name="his-gateway-kafka")

    async def connect(self) -> None:
        """Connect now (tests, the benchmark); raises if the broker or topic is missing."""
        self._partitions = await check_partitions(self._kafka, [self.topic])
        await self.broker.connect()
        self._producer = _own_producer(self.broker)
        self._connected = True
        self._error = None

    async def _keep_connected(self) -> None:
        while True:
            if not self._connected:
                try:
                    await self.connect()
                    log.info(
                        "connected to Kafka",
                        extra={"topic": self.topic, "partitions": self._partitions},
                    )
                except Exception as exc:
                    self._error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    log.warning("Kafka not reachable yet; retrying", extra={"error": self._error})
                    await asyncio.sleep(_RETRY_SECONDS)
                    continue
            await asyncio.sleep(_PING_SECONDS)
            with contextlib.suppress(Exception):
                if not await self.broker.ping(timeout=_PING_SECONDS):
                    self._connected = False
                    self._error = "the broker does not answer"

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(Exception):
            await self.broker.stop()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        # What the stopped producer left unconfirmed fails now rather than never.
        while self._waiting:
            _expire(self._waiting.popleft()[1])
        self._producer = None
        self._connected = False

    async def publish(self, record: OutRecord) -> Placement:
        if not self._connected:
            raise PublishFailed("not connected to Kafka")
        # The partition Kafka's default partitioner gives the key (murmur2 of the practice
        # id), named up front: aiokafka then skips its per-record partition lookup.
        partition = _partition_for(record.practice_id, self._partitions)
        producer = self._producer
        if producer is not None:
            return await self._send(producer, record, partition)
        try:
            # Hands the record to the producer (aiokafka bounds this wait by its request
            # timeout, the same seconds) and returns the record's future.
            sent = await self.broker.publish(
                record.value,
                self.topic,
                key=record.practice_id.encode("utf-8"),
                partition=partition,
                headers=_FHIR_HEADERS if record.fhir else _NATIVE_HEADERS,
                correlation_id=record.correlation_id,
                no_confirm=True,
            )
        except Exception as exc:
            raise PublishFailed(str(exc) or type(exc).__name__) from exc
        return await self._confirmed(sent)

    async def _confirmed(self, sent: asyncio.Future[RecordMetadata]) -> Placement:
        """The confirmation (acks=all) within the timeout. Every record has the same
        timeout, so the waiting records queue up in the order their time runs out: one
        timer looks at the oldest every quarter second and fails those still pending
        past their time (at most a sweep late), instead of a loop timer per record made
        and cancelled (2 us of every request's CPU)."""
        if not sent.done():
            self._waiting.append((time.monotonic() + self._timeout, sent))
            if self._sweeper is None:
                self._sweeper = asyncio.get_running_loop().call_later(
                    self._sweep_seconds, self._sweep
                )
        try:
            metadata = await sent
        except Exception as exc:
            raise PublishFailed(str(exc) or type(exc).__name__) from exc
        return Placement(partition=metadata.partition, offset=metadata.offset)

    def _sweep(self) -> None:
        """Forget the confirmed records at the head of the queue, fail those whose time
        is up, and look again later while any record waits."""
        waiting = self._waiting
        now = time.monotonic()
        while waiting:
            deadline, sent = waiting[0]
            if not sent.done() and deadline > now:
                break
            waiting.popleft()
            _expire(sent)
        self._sweeper = None
        if waiting:
            self._sweeper = asyncio.get_running_loop().call_later(self._sweep_seconds, self._sweep)

    async def _send(
        self, producer: AIOKafkaProducer, record: OutRecord, partition: int
    ) -> Placement:
        """The record straight to the producer of FastStream's broker, as the broker's
        ``publish`` would hand it over (the same value, key, partition and headers) without
        building a publish command, a codec pass and a header dict per record: the broker
        has no publish middlewares, the value is bytes already."""
        key = record.practice_id.encode("utf-8")
        correlation_id = record.correlation_id or self.broker.config.id_generator()
        headers = [
            _FHIR_TYPE if record.fhir else _NATIVE_TYPE,
            ("correlation_id", correlation_id.encode("utf-8")),
        ]
        try:
            sent = await producer.send(
                self.topic, record.value, key=key, partition=partition, headers=headers
            )
        except Exception as exc:
            raise PublishFailed(str(exc) or type(exc).__name__) from exc
        return await self._confirmed(sent)


def _own_producer(broker: KafkaBroker) -> AIOKafkaProducer | None:
    """The AIOKafkaProducer behind a connected broker (made by FastStream from the
    broker's settings: idempotent, acks=all), or None when this FastStream keeps it
    elsewhere or wraps publishing in middlewares: then ``broker.publish`` is used."""
    producer = broker.config.producer
    if broker.middlewares or not isinstance(producer, AioKafkaFastProducerImpl):
        return None
    state = getattr(producer, "_producer", None)
    own = getattr(state, "producer", None)
    return own if isinstance(own, AIOKafkaProducer) else None


class MemoryPublisher:
    """Keeps what it is given (tests, trying the HTTP side without Kafka); ``down`` makes
    every publish fail as an unconfirmed one would."""

    def __init__(self, partitions: int = 12) -> None:
        self.records: list[OutRecord] = []
        self.down = False
        self._partitions = partitions
        self._connected = False

    @property
    def connected(self) -> bool:
        return self._connected

    def describe(self) -> dict[str, object]:
        return {"broker": "connected" if self._connected else "waiting"}

    async def start(self) -> None:
        self._connected = True

    async def stop(self) -> None:
        self._connected = False

    async def publish(self, record: OutRecord) -> Placement:
        if self.down or not self._connected:
            raise PublishFailed("not connected")
        self.records.append(record)
        partition = _partition_for(record.practice_id, self._partitions)
        return Placement(partition, len(self.records) - 1)
