"""practice-admin's sources against the real broker: configs from Kafka, and the send log
from the insights projection of the outcomes (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas.models import Outcome, PracticeConfig, reminder_id_for
from schemas.topics import Topics
from services.common.db import session_factory
from services.common.kafka import make_producer
from services.common.practice_config import practice_config_table
from services.common.settings import KafkaSettings, Settings
from services.domain.codec import encode
from services.domain.partition import partition_for
from services.insights.app import InsightsService
from services.practice_admin.config_store import KafkaConfigStore, VersionConflict
from services.practice_admin.outcomes import ProjectionOutcomes

pytestmark = pytest.mark.kafka

P1 = "01999001"


def _config(version: int = 1) -> PracticeConfig:
    return PracticeConfig.model_validate(
        {"practice_id": P1, "name": "De Linde", "phone": "020-1234567", "version": version}
    )


async def test_a_save_is_the_next_version_on_the_topic_and_a_stale_save_is_refused(
    kafka_settings: KafkaSettings, kafka_topics: Topics
) -> None:
    store = KafkaConfigStore(kafka_settings)
    await store.start()
    try:
        assert store.get(P1) is None
        first = await store.publish(_config(), None)
        assert first.version == 1 and store.get(P1) == first
        second = await store.publish(first.model_copy(update={"name": "De Linde B.V."}), 1)
        assert second.version == 2
        with pytest.raises(VersionConflict) as refused:
            await store.publish(first.model_copy(update={"name": "Oud"}), 1)
        assert refused.value.current == 2
    finally:
        await store.stop()
    # What every service reads: the shared config table.
    table = practice_config_table(kafka_settings)
    await table.start()
    try:
        await asyncio.wait_for(table.wait_loaded(), 30)
        found = table.get(P1)
        assert found is not None and found.version == 2 and found.name == "De Linde B.V."
    finally:
        await table.stop()


@pytest.mark.db
async def test_the_send_log_reads_committed_outcomes_per_practice_from_the_projection(
    kafka_settings: KafkaSettings, kafka_topics: Topics, db_engine: AsyncEngine, db_url: str
) -> None:
    now = datetime.now(UTC)
    start = now + timedelta(hours=20)
    producer = make_producer(kafka_settings)
    await producer.start()
    try:
        for i, (practice_id, status, reason) in enumerate(
            [(P1, "sent", None), (P1, "suppressed", "no_consent"), ("01999002", "sent", None)]
        ):
            outcome = Outcome(
                reminder_id=reminder_id_for(practice_id, f"A{i}", start),
                practice_id=practice_id,
                appointment_id=f"A{i}",
                channel="email" if status == "sent" else None,
                status=status,  # type: ignore[arg-type]
                reason=reason,  # type: ignore[arg-type]
                at=now - timedelta(minutes=i),
            )
            await producer.send_and_wait(
                kafka_topics.outcomes,
                key=f"{practice_id}/A{i}".encode(),
                value=encode(outcome),
                partition=partition_for(practice_id, kafka_settings.partitions),
            )
        await producer.send_and_wait(
            kafka_topics.outcomes,
            key=b"01999001/bad",
            value=b"not json",
            partition=partition_for(P1, kafka_settings.partitions),
        )
    finally:
        await producer.stop()
    # insights projects what the notifier committed; practice-admin reads the projection.
    settings = Settings(kafka=kafka_settings, database={"url": db_url})  # type: ignore[arg-type]
    service = InsightsService(settings, engine=db_engine)
    await service.start()
    try:
        for _ in range(600):
            if service.caught_up:
                break
            await asyncio.sleep(0.1)
        assert service.caught_up
    finally:
        await service.stop()
    window = ProjectionOutcomes(session_factory(db_engine))
    assert window.ready()
    rows = (await window.log(P1)).rows
    assert [r.appointment_id for r in rows] == ["A0", "A1"]  # newest first
    assert rows[0].start == start.replace(microsecond=0)
    assert rows[1].reason == "no_consent"
    assert [r.appointment_id for r in (await window.log("01999002")).rows] == ["A2"]
    assert (await window.log("01999009")).rows == []
