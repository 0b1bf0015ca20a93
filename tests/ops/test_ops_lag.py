"""The shared lag monitor against the real broker: committed offsets vs. last stable offsets."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import REGISTRY

from schemas.topics import Topics
from services.common.kafka import make_consumer, make_producer
from services.common.metrics import LagMonitor
from services.common.settings import KafkaSettings

pytestmark = pytest.mark.kafka


def _lag(group: str, topic: str, partition: int) -> float | None:
    return REGISTRY.get_sample_value(
        "reminders_consumer_lag_records",
        {"group": group, "topic": topic, "partition": str(partition)},
    )


async def _commit(settings: KafkaSettings, group: str, offsets: dict[TopicPartition, int]) -> None:
    consumer: AIOKafkaConsumer = make_consumer(settings, group_id=group)
    await consumer.start()
    try:
        consumer.assign(list(offsets))
        await consumer.commit(offsets)
    finally:
        await consumer.stop()


async def test_lag_is_end_minus_committed_per_partition(
    kafka_settings: KafkaSettings, kafka_topics: Topics
) -> None:
    topic = kafka_topics.his_appointments
    group = f"{kafka_settings.topic_prefix}lag-test"
    producer = make_producer(kafka_settings)
    await producer.start()
    try:
        for _ in range(10):
            await producer.send_and_wait(topic, b"{}", key=b"P1", partition=0)
        for _ in range(5):
            await producer.send_and_wait(topic, b"{}", key=b"P2", partition=1)
    finally:
        await producer.stop()
    await _commit(kafka_settings, group, {TopicPartition(topic, 0): 4})

    monitor = LagMonitor(kafka_settings, group, [topic])
    lags = await monitor.measure()
    # partition 0: 10 written, 4 committed; partition 1: nothing committed, from the start.
    assert lags == {(topic, 0): 6, (topic, 1): 5, (topic, 2): 0}
    assert _lag(group, topic, 0) == 6
    assert _lag(group, topic, 1) == 5
    updated = REGISTRY.get_sample_value(
        "reminders_consumer_lag_updated_timestamp_seconds", {"group": group}
    )
    assert updated is not None and updated > 0

    await _commit(kafka_settings, group, {TopicPartition(topic, 0): 10})
    await monitor.measure()
    assert _lag(group, topic, 0) == 0


async def test_transactional_topic_is_caught_up_after_reading_everything(
    kafka_settings: KafkaSettings, kafka_topics: Topics
) -> None:
    topic = kafka_topics.reminders_due
    group = f"{kafka_settings.topic_prefix}lag-tx"
    producer = make_producer(kafka_settings, transactional_id=f"{group}-tx")
    await producer.start()
    try:
        async with producer.transaction():
            for _ in range(3):
                await producer.send(topic, b"{}", key=b"P1/A", partition=2)
    finally:
        await producer.stop()
    monitor = LagMonitor(kafka_settings, group, [topic])
    before = await monitor.measure()
    assert before[(topic, 2)] >= 3  # three records (and the commit marker) not yet read

    consumer = make_consumer(kafka_settings, group_id=group)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 2)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        read = 0
        while read < 3:
            batch = await consumer.getmany(tp, timeout_ms=1000)
            read += len(batch.get(tp, []))
        await consumer.commit({tp: await consumer.position(tp)})
    finally:
        await consumer.stop()
    after = await monitor.measure()
    assert after[(topic, 2)] == 0


async def test_monitor_runs_in_the_background_and_stops(
    kafka_settings: KafkaSettings, kafka_topics: Topics
) -> None:
    group = f"{kafka_settings.topic_prefix}lag-bg"
    monitor = LagMonitor(kafka_settings, group, [kafka_topics.outcomes], interval=0.2)
    await monitor.start()
    try:
        for _ in range(100):
            if _lag(group, kafka_topics.outcomes, 0) is not None:
                break
            await asyncio.sleep(0.1)
        assert _lag(group, kafka_topics.outcomes, 0) == 0
    finally:
        await monitor.stop()
    assert not [t for t in asyncio.all_tasks() if t.get_name() == f"lag-monitor-{group}"]
