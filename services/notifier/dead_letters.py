"""Dead letters for ``patient.preferences.v1``, which the notifier reads as a table.

The notifier is the one service that dead-letters bad preference records. It reads the
compacted topic from the beginning on every assignment, so it would meet the same bad
record again and again; the last ``source-offset`` already on the dead-letter partition
is the watermark below which a bad record is known to be parked already.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition

from schemas.topics import Topics
from services.common.kafka import DeadLetter, send_dead_letter
from services.domain.codec import DecodeError

__all__ = ["PreferencesDeadLetters", "dead_letter_for", "last_source_offset"]

log = logging.getLogger(__name__)

_LOOK_BACK = 20


def dead_letter_for(record: ConsumerRecord[bytes, bytes], error: DecodeError) -> DeadLetter:
    return DeadLetter.of(record, error)


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


class PreferencesDeadLetters:
    """``on_invalid`` for the preferences table: park each bad record once."""

    def __init__(self, topics: Topics, producer: AIOKafkaProducer, probe: AIOKafkaConsumer) -> None:
        self._topic = topics.patient_preferences
        self._dlq = Topics.dlq(topics.patient_preferences)
        self._producer = producer
        self._probe = probe
        self._watermark: dict[int, int] = {}
        self._lock = asyncio.Lock()
        self.sent = 0

    async def prepare(self, partition: int) -> None:
        """Read the watermark of a partition before the table starts reading it."""
        async with self._lock:  # one probe consumer, one partition at a time
            self._watermark[partition] = await last_source_offset(
                self._probe, TopicPartition(self._dlq, partition)
            )

    async def __call__(self, record: ConsumerRecord[bytes, bytes], error: DecodeError) -> None:
        if record.offset <= self._watermark.get(record.partition, -1):
            return  # parked on an earlier load
        await send_dead_letter(self._producer, dead_letter_for(record, error))
        self._watermark[record.partition] = record.offset
        self.sent += 1  # counted and logged once by send_dead_letter (non-transactional)
