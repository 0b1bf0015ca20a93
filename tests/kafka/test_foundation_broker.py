"""The foundation against the real broker: topics, idempotent produce, compaction, tables."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from datetime import UTC, datetime

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import NewTopic

from schemas import PracticeConfig
from schemas.topics import Topics
from services.common.kafka import (
    PartitionMismatch,
    admin_client,
    check_partitions,
    create_topics,
    make_consumer,
    make_producer,
)
from services.common.settings import KafkaSettings
from services.common.table import Table
from services.domain.codec import encode
from services.domain.partition import partition_for

pytestmark = pytest.mark.kafka


def _cli(*args: str, bootstrap: str, prefix: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "services.cli",
            *args,
            "--bootstrap",
            bootstrap,
            "--topic-prefix",
            prefix,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_topics_create_is_idempotent(kafka_bootstrap: str, topic_prefix: str) -> None:
    first = _cli(
        "topics", "create", "--partitions", "3", bootstrap=kafka_bootstrap, prefix=topic_prefix
    )
    assert first.returncode == 0, first.stderr
    assert f"created  {topic_prefix}appointments.v1 (3 partitions)" in first.stdout
    assert first.stdout.count("created") == len(Topics().specs())
    second = _cli(
        "topics", "create", "--partitions", "3", bootstrap=kafka_bootstrap, prefix=topic_prefix
    )
    assert second.returncode == 0, second.stderr
    assert "created" not in second.stdout
    assert second.stdout.count("existing") == len(Topics().specs())


def test_topics_create_reports_an_unreachable_broker_in_one_line() -> None:
    result = _cli("topics", "create", bootstrap="127.0.0.1:1", prefix="x.")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach Kafka at 127.0.0.1:1")


async def test_created_topics_carry_their_cleanup_policy(kafka_settings: KafkaSettings) -> None:
    await create_topics(kafka_settings)
    topics = Topics(kafka_settings.topic_prefix)
    admin = admin_client(kafka_settings)
    await admin.start()
    try:
        from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

        resources = [
            ConfigResource(ConfigResourceType.TOPIC, topics.appointments),
            ConfigResource(ConfigResourceType.TOPIC, topics.outcomes),
        ]
        responses = await admin.describe_configs(resources)
        configs: dict[str, dict[str, str]] = {}
        for response in responses:
            for resource in response.resources:
                name = resource[3]
                configs[name] = {entry[0]: entry[1] for entry in resource[4]}
    finally:
        await admin.close()
    assert configs[topics.appointments]["cleanup.policy"] == "compact"
    assert configs[topics.outcomes]["cleanup.policy"] == "delete"
    assert configs[topics.outcomes]["retention.ms"] == str(30 * 24 * 3600 * 1000)
    assert await check_partitions(kafka_settings, [s.name for s in topics.specs()]) == 3


async def test_services_refuse_topics_with_different_partition_counts(
    kafka_settings: KafkaSettings,
) -> None:
    topics = Topics(kafka_settings.topic_prefix)
    await create_topics(kafka_settings)
    odd = kafka_settings.model_copy(update={"partitions": 2})
    extra = f"{kafka_settings.topic_prefix}odd.v1"
    admin = admin_client(odd)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(extra, 2, 1)])
    finally:
        await admin.close()
    with pytest.raises(PartitionMismatch, match="same partition count"):
        await check_partitions(kafka_settings, [topics.appointments, extra])
    with pytest.raises(PartitionMismatch, match="topics missing"):
        await check_partitions(kafka_settings, [f"{kafka_settings.topic_prefix}nope.v1"])


async def test_idempotent_producer_round_trip_keeps_practice_order(
    kafka_settings: KafkaSettings, kafka_topics: Topics
) -> None:
    producer = make_producer(kafka_settings)
    await producer.start()
    try:
        # The broker assigned a producer id: idempotent writes are on.
        assert producer._txn_manager is not None
        assert producer._txn_manager.producer_id >= 0
        for i in range(50):
            # HIS connectors key by practice id alone; the default partitioner places it.
            await producer.send(
                kafka_topics.his_appointments, key=b"01999001", value=json.dumps({"n": i}).encode()
            )
        await producer.flush()
    finally:
        await producer.stop()
    consumer = make_consumer(kafka_settings, kafka_topics.his_appointments, group_id=None)
    await consumer.start()
    try:
        seen: list[tuple[int, int]] = []
        deadline = time.monotonic() + 30
        while len(seen) < 50 and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for tp, records in batch.items():
                seen += [(tp.partition, json.loads(r.value)["n"]) for r in records]
    finally:
        await consumer.stop()
    assert [n for _, n in seen] == list(range(50))
    assert {p for p, _ in seen} == {partition_for("01999001", 3)}


async def test_compacted_topic_keeps_only_the_latest_value_per_key(
    kafka_settings: KafkaSettings,
) -> None:
    topic = f"{kafka_settings.topic_prefix}compaction.v1"
    admin = admin_client(kafka_settings)
    await admin.start()
    try:
        await admin.create_topics(
            [
                NewTopic(
                    topic,
                    1,
                    1,
                    topic_configs={
                        "cleanup.policy": "compact",
                        "segment.ms": "100",
                        "min.cleanable.dirty.ratio": "0.01",
                        "delete.retention.ms": "100",
                        "min.compaction.lag.ms": "0",
                    },
                )
            ]
        )
    finally:
        await admin.close()
    producer = make_producer(kafka_settings)
    await producer.start()
    try:
        for round_ in range(3):
            for key in ("a", "b", "c"):
                await producer.send_and_wait(
                    topic, key=key.encode(), value=f"{key}{round_}".encode(), partition=0
                )
        # Roll the segment so the cleaner may compact the rewritten keys.
        await asyncio.sleep(0.3)
        await producer.send_and_wait(topic, key=b"z", value=b"z0", partition=0)
        latest: dict[str, list[str]] = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            await asyncio.sleep(1.0)
            await producer.send_and_wait(topic, key=b"z", value=b"z0", partition=0)
            consumer = make_consumer(kafka_settings, group_id=None)
            await consumer.start()
            try:
                tp = TopicPartition(topic, 0)
                consumer.assign([tp])
                await consumer.seek_to_beginning(tp)
                end = (await consumer.end_offsets([tp]))[tp]
                latest = {}
                while await consumer.position(tp) < end:
                    for record in (await consumer.getmany(tp, timeout_ms=500)).get(tp, []):
                        latest.setdefault(record.key.decode(), []).append(record.value.decode())
            finally:
                await consumer.stop()
            if all(len(latest.get(k, [])) == 1 for k in "abc"):
                break
    finally:
        await producer.stop()
    assert {k: latest[k] for k in "abc"} == {"a": ["a2"], "b": ["b2"], "c": ["c2"]}


async def test_table_loads_to_the_end_then_follows_live(
    kafka_settings: KafkaSettings, kafka_topics: Topics
) -> None:
    producer = make_producer(kafka_settings)
    await producer.start()
    topic = kafka_topics.practice_config

    async def publish(config: PracticeConfig | None, practice: str) -> None:
        await producer.send_and_wait(
            topic,
            key=practice.encode(),
            value=None if config is None else encode(config),
            partition=partition_for(practice, kafka_settings.partitions),
        )

    try:
        for i in range(20):
            await publish(
                PracticeConfig(practice_id=f"0199{i:04d}", name=f"P{i}", version=1), f"0199{i:04d}"
            )
        await publish(PracticeConfig(practice_id="01990003", name="P3", version=2), "01990003")
        await producer.send_and_wait(
            topic, key=b"01990004", value=b"{not json", partition=partition_for("01990004", 3)
        )
        table: Table[PracticeConfig] = Table(
            kafka_settings, topic, PracticeConfig, key_of=lambda c: c.practice_id
        )
        await table.start()
        try:
            await asyncio.wait_for(table.wait_loaded(), 30)
            assert len(table) == 20
            p3 = table.get("01990003")
            assert p3 is not None and p3.version == 2
            p4 = table.get("01990004")
            assert p4 is not None and p4.version == 1  # the bad record left the last valid
            await publish(None, "01990005")
            await publish(PracticeConfig(practice_id="01990006", name="P6", version=7), "01990006")
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                p6 = table.get("01990006")
                if table.get("01990005") is None and p6 is not None and p6.version == 7:
                    break
                await asyncio.sleep(0.05)
            assert table.get("01990005") is None
            p6 = table.get("01990006")
            assert p6 is not None and p6.version == 7
        finally:
            await table.stop()
    finally:
        await producer.stop()


def test_clock_is_aware() -> None:
    from services.common.clock import FakeClock, SystemClock

    assert SystemClock().now().tzinfo is not None
    fake = FakeClock(datetime(2026, 3, 29, 0, 30, tzinfo=UTC))
    fake.advance(3600)
    assert fake.now() == datetime(2026, 3, 29, 1, 30, tzinfo=UTC)
