"""Dead letters for ``patient.preferences.v1``, which the notifier reads as a table.

The notifier is the one service that dead-letters bad preference records. It reads the
compacted topic from the beginning on every assignment, so it would meet the same bad
record again and again: :class:`~services.common.dead_letters.ParkOnce` parks each once.
"""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord

from schemas.topics import Topics
from services.common.dead_letters import ParkOnce, last_source_offset
from services.common.kafka import DeadLetter
from services.domain.codec import DecodeError

__all__ = ["PreferencesDeadLetters", "dead_letter_for", "last_source_offset"]


def dead_letter_for(record: ConsumerRecord[bytes, bytes], error: DecodeError) -> DeadLetter:
    return DeadLetter.of(record, error)


class PreferencesDeadLetters(ParkOnce):
    """``on_invalid`` for the preferences table: park each bad record once."""

    def __init__(self, topics: Topics, producer: AIOKafkaProducer, probe: AIOKafkaConsumer) -> None:
        super().__init__(topics.patient_preferences, producer, probe)
