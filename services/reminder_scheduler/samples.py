"""Appointments in bulk and a committed-topic reader: for the scheduler's tests and bench/.

:func:`appointment_value` writes the same JSON as ``encode(Appointment(...))`` without
pydantic (a million records in seconds); a unit test checks that the model accepts it.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition

from services.common.kafka import describe_partitions, make_consumer
from services.common.settings import KafkaSettings
from services.domain.partition import partition_for

__all__ = ["CommittedRecord", "appointment_value", "publish", "read_committed"]


def appointment_value(
    practice_id: str,
    appointment_id: str,
    *,
    start: datetime,
    patient_id: str = "p-1",
    status: str = "booked",
    sequence: int = 1,
    booked_at: datetime | None = None,
    updated_at: datetime | None = None,
    minutes: int = 10,
    meeting: bool = False,
) -> bytes:
    """An ``appointments.v1`` value (the Appointment record as booking_events writes it)."""
    booked = booked_at or start - timedelta(days=7)
    doc: dict[str, Any] = {
        "source_system": "medicom",
        "practice_id": practice_id,
        "appointment_id": appointment_id,
        "sequence": sequence,
        "status": status,
        "start": start.isoformat(),
        "end": (start + timedelta(minutes=minutes)).isoformat(),
        "appointment_type": {"code": "MDO" if meeting else "C10", "display": "Consult"},
        "agenda": {"id": "ag-1", "display": "Spreekuur dr. Jansen"},
        "practitioner": {"id": "pr-1", "display": "dr. Jansen", "role": "huisarts"},
        "location": {"display": "Lindelaan 1, Utrecht"},
        "booked_via": "portal",
        "patient": {
            "id": patient_id,
            "required": "information-only" if meeting else "required",
        },
        "kind": "meeting" if meeting else "consult",
        "booked_at": booked.isoformat(),
        "updated_at": (updated_at or booked).isoformat(),
        "meeting": (
            {"is_meeting": True, "rule": "kind", "matched": "meeting"}
            if meeting
            else {"is_meeting": False, "rule": None, "matched": None}
        ),
        "last_event_id": str(uuid.uuid4()),
    }
    return json.dumps(doc, separators=(",", ":")).encode()


async def publish(
    producer: AIOKafkaProducer,
    topic: str,
    records: Iterable[tuple[str, bytes | None]],
    *,
    partitions: int,
    practice_of: Callable[[str], str] | None = None,
) -> int:
    """Send ``(key, value)`` records keyed ``{practice_id}/...`` to their practice's partition."""
    sent = []
    count = 0
    for key, value in records:
        practice_id = practice_of(key) if practice_of else key.split("/", 1)[0]
        partition = partition_for(practice_id, partitions)
        sent.append(await producer.send(topic, value, key.encode(), partition=partition))
        count += 1
        if len(sent) >= 10_000:
            await asyncio.gather(*sent)
            sent.clear()
    await asyncio.gather(*sent)
    return count


@dataclass(frozen=True)
class CommittedRecord:
    partition: int
    offset: int
    key: str
    value: bytes | None


async def read_committed(
    settings: KafkaSettings,
    topic: str,
    *,
    expect: int = 0,
    timeout: float = 30.0,
    settle: float = 1.0,
    isolation_level: str = "read_committed",
) -> list[CommittedRecord]:
    """Every record of the topic: waits until at least ``expect`` arrived (or the timeout),
    then ``settle`` seconds more so that a duplicate would show up too."""
    consumer = make_consumer(settings, group_id=None, isolation_level=isolation_level)
    await consumer.start()
    out: list[CommittedRecord] = []
    try:
        count = (await describe_partitions(settings, [topic]))[topic]
        tps = [TopicPartition(topic, p) for p in range(count)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = time.monotonic() + timeout
        settle_until: float | None = None
        while True:
            now = time.monotonic()
            if settle_until is None and (len(out) >= expect or now > deadline):
                settle_until = now + settle
            if settle_until is not None and now > settle_until:
                break
            batches = await consumer.getmany(timeout_ms=100)
            for tp, records in batches.items():
                for r in records:
                    key = r.key.decode() if r.key is not None else ""
                    out.append(CommittedRecord(tp.partition, r.offset, key, r.value))
    finally:
        await consumer.stop()
    return out
