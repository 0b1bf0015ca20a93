"""Dead letters for a topic a service reads again from an earlier position.

A service that reads a topic from the beginning (a compacted table) or from positions it
stores itself (insights) meets the same bad record again after every restart or
rebalance. :class:`ParkOnce` parks each one once: the last ``source-offset`` already on
the dead-letter partition is the watermark below which a bad record is known to be
parked. The dead-letter partition is the source partition (``send_dead_letter``).
"""

from __future__ import annotations

import asyncio
import contextlib

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from schemas.topics import Topics
from services.common.kafka import DeadLetter, send_dead_letter
from services.domain.codec import DecodeError

__all__ = ["ParkOnce", "last_source_offset"]

_LOOK_BACK = 20


async def last_source_offset(consumer: AIOKafkaConsumer, tp: TopicPartition) -> int:
    """The highest ``source-offset`` header among the last records of a dead-letter
    partition (-1 when it is empty). `consumer` is a group-less consumer used only here."""
    end = (await consumer.end_offsets([tp]))[tp]
    if end <= 0:
        return -1
    consumer.assign([tp])
    consumer.seek(tp, max(0, end - _LOOK_BACK))
    highest = -1
    while await consumer.position(tp) < end:
        batches = await consumer.getmany(tp, timeout_ms=1000)
        if not batches:
            break
        for record in batches.get(tp, []):
            for key, value in record.headers or ():
                if key == "source-offset":
                    with contextlib.suppress(UnicodeDecodeError, ValueError):
                        highest = max(highest, int(value.decode()))
    consumer.assign([])
    return highest


class ParkOnce:
    """Park each bad record of `topic` once. :meth:`prepare` a partition before its
    records are read; then call the object with each record that cannot be taken (it
    returns once the broker has the dead letter, or raises)."""

    def __init__(self, topic: str, producer: AIOKafkaProducer, probe: AIOKafkaConsumer) -> None:
        self._dlq = Topics.dlq(topic)
        self._producer = producer
        self._probe = probe
        self._watermark: dict[int, int] = {}
        self._lock = asyncio.Lock()
        self.sent = 0

    async def prepare(self, partition: int) -> None:
        """Read the watermark of a partition before its records are read."""
        async with self._lock:  # one probe consumer, one partition at a time
            self._watermark[partition] = await last_source_offset(
                self._probe, TopicPartition(self._dlq, partition)
            )

    def forget(self, partition: int) -> None:
        """A partition no longer read here: a later owner reads its own watermark."""
        self._watermark.pop(partition, None)

    async def __call__(self, record: ConsumerRecord[bytes, bytes], error: DecodeError) -> None:
        if record.offset <= self._watermark.get(record.partition, -1):
            return  # parked on an earlier read
        await send_dead_letter(self._producer, DeadLetter.of(record, error))
        self._watermark[record.partition] = record.offset
        self.sent += 1  # counted and logged once by send_dead_letter (non-transactional)
