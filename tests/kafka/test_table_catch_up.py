"""The tables' catch-up promise, on the real broker: once ``catch_up`` returns, every
write a read_committed reader could see when it was called is in the table.

The notifier relies on this at send time (a consent withdrawn or an appointment
cancelled a moment ago counts). The follower waits for records without holding its
lock, so this checks the promise where it could break: writes answered by the broker
right before the call, many times in a row, on a table that is also being written
transactionally and aborting. (Kafka shows a transaction to read_committed readers once
its commit markers are written, a few milliseconds after the producer's commit returns;
the test waits for that, as any reader must.)
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from aiokafka import TopicPartition

from schemas.models import PatientPreferences
from schemas.topics import Topics
from services.common.kafka import make_consumer, make_producer
from services.common.practice_config import patient_preferences_table
from services.common.settings import KafkaSettings
from services.domain.codec import encode
from services.domain.partition import partition_for

pytestmark = pytest.mark.kafka

PRACTICE = "01054321"


def _prefs(patient: str, language: str, reminders: bool) -> PatientPreferences:
    return PatientPreferences(
        practice_id=PRACTICE,
        patient_id=patient,
        reminders=reminders,
        email="patient@example.org",
        language=language,
        updated_at=datetime(2026, 12, 2, 9, 0, tzinfo=UTC),
    )


async def test_catch_up_returns_only_once_every_earlier_write_is_in_the_table(
    kafka_settings: KafkaSettings, kafka_topics: Topics
) -> None:
    partition = partition_for(PRACTICE, kafka_settings.partitions)
    topic = kafka_topics.patient_preferences
    plain = make_producer(kafka_settings)
    txn = make_producer(kafka_settings, transactional_id=f"{kafka_settings.topic_prefix}catch-up")
    offsets = make_consumer(kafka_settings)  # read_committed: end offsets are the LSO
    tp = TopicPartition(topic, partition)
    await plain.start()
    await txn.start()
    await offsets.start()
    table = patient_preferences_table(kafka_settings)
    try:
        await table.start([partition])
        await table.wait_loaded()
        for round_ in range(40):
            patient = f"pt-{round_ % 3}"
            reminders = round_ % 2 == 0
            language = "nl" if round_ % 4 < 2 else "en"
            wanted = _prefs(patient, language, reminders)
            if round_ % 5 == 4:
                # An aborted write first (never applied), then the committed one.
                await txn.begin_transaction()
                await txn.send(
                    topic,
                    key=f"{PRACTICE}/{patient}".encode(),
                    value=encode(_prefs(patient, "en", not reminders)),
                    partition=partition,
                )
                await txn.abort_transaction()
                async with txn.transaction():
                    sent = await txn.send(
                        topic,
                        key=f"{PRACTICE}/{patient}".encode(),
                        value=encode(wanted),
                        partition=partition,
                    )
                offset = (await sent).offset
                while (await offsets.end_offsets([tp]))[tp] <= offset:
                    pass  # the commit markers are on their way
            else:
                await plain.send_and_wait(
                    topic,
                    key=f"{PRACTICE}/{patient}".encode(),
                    value=encode(wanted),
                    partition=partition,
                )
            assert await table.follower.catch_up([partition], timeout=10)
            got = table.get(f"{PRACTICE}/{patient}")
            assert got is not None, round_
            assert (got.reminders, got.language) == (reminders, language), round_
            # Nothing new: the next catch-up is answered without new records.
            assert await table.follower.catch_up([partition], timeout=10)
    finally:
        await table.stop()
        await offsets.stop()
        await txn.stop()
        await plain.stop()
