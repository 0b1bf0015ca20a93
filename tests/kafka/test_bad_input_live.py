"""Issue 12, live: the three inputs that once stopped a service, against the three
services running as processes, then a valid appointment of another practice.

The valid one is reminded once, every service stays alive and ready, and each bad
record is in its DLQ with its reason.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest
from aiokafka import TopicPartition

from devkit.demo.pipeline import MESSAGE_ID_DOMAIN, Pipeline
from devkit.demo.workload import generate
from schemas.topics import Topics
from services.common.kafka import make_consumer
from services.common.settings import KafkaSettings
from services.notifier.email import message_id_for
from tests.support.garbage import FHIR_HEADERS

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

OTHER = "01999002"  # the practice whose admin and HIS vendor send the bad records


def _fhir_version_superscript(start: datetime) -> bytes:
    return json.dumps(
        {
            "resourceType": "Appointment",
            "id": "BAD-1",
            "meta": {"versionId": "²"},
            "status": "booked",
            "start": start.isoformat(),
            "end": (start + timedelta(minutes=10)).isoformat(),
            "appointmentType": {"coding": [{"code": "C10", "display": "Consult"}]},
            "participant": [
                {"actor": {"reference": "Patient/pt-x1"}},
                {"actor": {"reference": "Practitioner/P-1", "display": "dr. X"}},
                {
                    "actor": {
                        "reference": "Location/L",
                        "identifier": {
                            "system": "http://fhir.nl/fhir/NamingSystem/agb-z",
                            "value": OTHER,
                        },
                    }
                },
            ],
        },
        ensure_ascii=False,
    ).encode()


def _native_year_9999() -> bytes:
    return json.dumps(
        {
            "event_id": "7d1b0a34-2f7a-4f3e-9d6b-3b1d2c4e5f60",
            "occurred_at": "2026-11-30T08:00:00+01:00",
            "source_system": "medicom",
            "practice_id": OTHER,
            "appointment_id": "BAD-2",
            "sequence": 1,
            "status": "booked",
            "start": "9999-12-31T23:30:00-01:00",
            "end": "9999-12-31T23:45:00-01:00",
            "appointment_type": {"code": "C10", "display": "Consult"},
            "agenda": {"id": "AG-1", "display": "Spreekuur"},
            "practitioner": {"id": "P-1", "display": "dr. X"},
            "patient": {"id": "pt-x2", "required": "required"},
        }
    ).encode()


def _config_quiet_hours_with_offset() -> bytes:
    return json.dumps(
        {
            "practice_id": OTHER,
            "name": "Praktijk Elders",
            "phone": "020-7654321",
            "reminders_enabled": True,
            "channels": ["push"],
            "quiet_hours": {"start": "21:00:30.5+02:00", "end": "08:00"},
        }
    ).encode()


async def _dead_letters(kafka: KafkaSettings, topic: str) -> list[dict[str, str]]:
    consumer = make_consumer(kafka, group_id=None)
    out: list[dict[str, str]] = []
    try:
        await consumer.start()
        parts = [TopicPartition(topic, p) for p in range(kafka.partitions)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        while True:
            positions = [await consumer.position(tp) for tp in parts]
            if all(pos >= ends[tp] for pos, tp in zip(positions, parts, strict=True)):
                break
            for records in (await consumer.getmany(timeout_ms=300)).values():
                for r in records:
                    out.append({k: v.decode() for k, v in r.headers})
    finally:
        await consumer.stop()
    return out


async def _health(pipeline: Pipeline) -> dict[str, tuple[int, int]]:
    status: dict[str, tuple[int, int]] = {}
    async with aiohttp.ClientSession() as session:
        for name, service in pipeline.services.items():
            base = f"http://127.0.0.1:{service.metrics_port}"
            async with (
                session.get(f"{base}/healthz") as alive,
                session.get(f"{base}/readyz") as ready,
            ):
                status[name] = (alive.status, ready.status)
    return status


async def test_the_three_stopping_inputs_stop_nothing(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    pipeline = Pipeline(kafka=kafka_settings, out_dir=tmp_path)
    topics: Topics = pipeline.topics
    try:
        await pipeline.start_infrastructure()
        workload = generate(
            now=datetime.now(UTC),
            practices=1,
            patients=4,
            appointments=4,
            disabled_practices=0,
            lead=(25.0, 35.0),
            push_factory=None,
            messy=False,
        )
        assert workload.expected.deliveries, "the workload must have a reminder to send"
        await pipeline.publish_configs(workload.practices)
        await pipeline.publish_preferences(workload.preferences)
        pipeline.start_services()
        await pipeline.wait_ready()

        # 1. the careless HIS vendor, 2. the attacker, 3. one practice's admin
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=2)
        await pipeline.publish(
            topics.his_appointments,
            [(OTHER, _fhir_version_superscript(start), OTHER)],
            headers=FHIR_HEADERS,
        )
        await pipeline.publish(topics.his_appointments, [(OTHER, _native_year_9999(), OTHER)])
        await pipeline.publish(
            topics.practice_config, [(OTHER, _config_quiet_hours_with_offset(), OTHER)]
        )
        # An attacker with write access to the internal topic, past booking_events:
        # the scheduler and the notifier contain it (DLQ), and go on.
        state = json.loads(_native_year_9999())
        for field in ("event_id", "occurred_at"):
            del state[field]
        state.update(
            appointment_id="BAD-3",
            booked_at="2026-11-30T08:00:00+01:00",
            updated_at="2026-11-30T08:00:00+01:00",
            meeting={"is_meeting": False, "rule": None, "matched": None},
            last_event_id=None,
        )
        await pipeline.publish(
            topics.appointments, [(f"{OTHER}/BAD-3", json.dumps(state).encode(), OTHER)]
        )
        # ... and then the valid appointments of another practice.
        await pipeline.publish_events(workload.events)

        wanted = set(workload.expected.deliveries) | set(workload.expected.suppressed)
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            if wanted <= {o.reminder_id for o in await pipeline.outcomes()}:
                break
            await asyncio.sleep(2)
        await asyncio.sleep(3)  # a duplicate, if any, would show now

        assert pipeline.smtp is not None
        mails = Counter(pipeline.smtp.message_ids())
        for rid, channels in workload.expected.deliveries.items():
            if "email" in channels:
                assert mails[message_id_for(rid, MESSAGE_ID_DOMAIN)] == 1, rid  # once
        assert {o.reminder_id for o in await pipeline.outcomes()} >= wanted

        health = await _health(pipeline)
        assert health == {name: (200, 200) for name in pipeline.services}, health
        assert all(service.alive() for service in pipeline.services.values())

        his = await _dead_letters(kafka_settings, Topics.dlq(topics.his_appointments))
        reasons = Counter(h["error-reason"] for h in his)
        assert reasons["number_out_of_range"] >= 1 and reasons["time_out_of_range"] >= 1
        configs = await _dead_letters(kafka_settings, Topics.dlq(topics.practice_config))
        internal = await _dead_letters(kafka_settings, Topics.dlq(topics.appointments))
        assert internal, "the scheduler dead-letters the internal record"
        for letter in his + configs + internal:
            print(letter["source-topic"], letter["error-reason"], letter["error-detail"][:120])
        assert any(
            h["error-reason"] == "invalid_config" and "quiet_hours.start" in h["error-detail"]
            for h in configs
        ), configs
    finally:
        await pipeline.stop()
