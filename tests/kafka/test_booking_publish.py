"""The connector kit against the real broker: `reminders publish appointment FILE` puts a
native and a FHIR event on their practice's partition, and booking_events accepts both."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiokafka import TopicPartition

from schemas.models import Appointment
from schemas.topics import Topics
from services.booking_events.app import BookingEventsService
from services.common.kafka import make_consumer
from services.common.settings import KafkaSettings, Settings
from services.domain.partition import partition_for

pytestmark = pytest.mark.kafka

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "deploy" / "examples" / "his"


def _shifted(name: str, tmp_path: Path) -> Path:
    """The example with its appointment moved to the day after tomorrow."""
    data = json.loads((EXAMPLES / name).read_text())
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=2)
    data["start"] = start.isoformat()
    data["end"] = (start + timedelta(minutes=10)).isoformat()
    path = tmp_path / name
    path.write_text(json.dumps(data))
    return path


async def _cli(*args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli",
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_published_examples_land_on_their_partition_and_are_accepted(
    kafka_settings: KafkaSettings, kafka_topics: Topics, tmp_path: Path
) -> None:
    options = [
        "--bootstrap",
        kafka_settings.bootstrap_servers,
        "--topic-prefix",
        kafka_topics.prefix,
    ]
    expected = partition_for("01054321", kafka_settings.partitions)
    for name in ("appointment-native.json", "appointment-fhir.json"):
        code, out, err = await _cli(
            "publish", "appointment", str(_shifted(name, tmp_path)), *options
        )
        assert code == 0, err
        assert f"published to {kafka_topics.his_appointments} partition {expected} " in out

    bad = tmp_path / "bad.json"
    bad.write_text('{"resourceType": "Appointment", "id": "x"}')
    code, out, err = await _cli("publish", "appointment", str(bad), *options)
    assert code == 2 and "published" not in out
    assert err.startswith("invalid (")

    service = BookingEventsService(Settings(kafka=kafka_settings))
    await service.start()
    consumer = make_consumer(kafka_settings, group_id=None)
    await consumer.start()
    try:
        tp = TopicPartition(kafka_topics.appointments, expected)
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        states: list[Appointment] = []
        deadline = asyncio.get_running_loop().time() + 30
        while len(states) < 2:
            assert asyncio.get_running_loop().time() < deadline, "no states written"
            for records in (await consumer.getmany(timeout_ms=500)).values():
                states.extend(Appointment.model_validate_json(r.value) for r in records)
    finally:
        await consumer.stop()
        await service.stop()
    assert {s.appointment_id for s in states} == {"A-2026-118734", "A-2026-118735"}
    assert all(s.status == "booked" and not s.meeting.is_meeting for s in states)
