"""booking_events against the real broker: lifecycles, duplicates and order, every meeting
rule, FHIR, bad input to the DLQ, bounded state, partition checks, rebalances and restarts
(graceful, and SIGKILL of a running process) that lose nothing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import ConsumerRecord, TopicPartition
from prometheus_client import REGISTRY

from schemas.models import Appointment, PracticeConfig
from schemas.topics import Topics
from services.booking_events.app import BookingEventsService
from services.common.clock import FakeClock
from services.common.kafka import (
    PartitionMismatch,
    admin_client,
    create_topics,
    make_consumer,
    make_producer,
)
from services.common.settings import KafkaSettings, Settings
from services.domain.codec import encode
from services.domain.partition import partition_for

pytestmark = pytest.mark.kafka

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "deploy" / "examples" / "his"
PRACTICE = "01054321"
OTHER_PRACTICES = ["01000017", "01000029", "01000031", "01000043", "01000057"]
FHIR = [("content-type", b"application/fhir+json")]
NOW = datetime.now(UTC).replace(microsecond=0)

Record = ConsumerRecord[bytes, bytes]


# --------------------------------------------------------------------------- helpers


def _event(
    appointment: str,
    sequence: int,
    *,
    practice: str = PRACTICE,
    status: str = "booked",
    start: datetime | None = None,
    occurred_at: datetime | None = None,
    **changes: Any,
) -> dict[str, Any]:
    begin = start or NOW + timedelta(days=2)
    event: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "occurred_at": (occurred_at or NOW + timedelta(minutes=sequence)).isoformat(),
        "source_system": "medicom",
        "practice_id": practice,
        "appointment_id": appointment,
        "sequence": sequence,
        "status": status,
        "start": begin.isoformat(),
        "end": (begin + timedelta(minutes=10)).isoformat(),
        "appointment_type": {"code": "C10", "display": "1 klacht, 10 minuten"},
        "agenda": {"id": "AG-1", "display": "Spreekuur dr. Jansen"},
        "practitioner": {"id": "P-17", "display": "dr. E. Jansen", "role": "huisarts"},
        "location": {"display": "Huisartsenpraktijk De Linde"},
        "booked_via": "portal",
        "patient": {"id": f"pt-{appointment}", "required": "required"},
        "comment": "knie doet pijn",
    }
    event.update(changes)
    return event


@dataclass
class Out:
    """A record to publish: a value (dict -> JSON), its key, headers, an explicit partition."""

    value: dict[str, Any] | bytes | None
    key: str | None = PRACTICE
    headers: list[tuple[str, bytes]] | None = None
    partition: int | None = None


async def _publish(kafka: KafkaSettings, topic: str, items: Iterable[Out | dict[str, Any]]) -> None:
    producer = make_producer(kafka)
    await producer.start()
    try:
        sent = []
        for item in items:
            out = item if isinstance(item, Out) else Out(item, key=item["practice_id"])
            value = json.dumps(out.value).encode() if isinstance(out.value, dict) else out.value
            sent.append(
                await producer.send(
                    topic,
                    value,
                    key=out.key.encode() if out.key is not None else None,
                    headers=out.headers or [],
                    partition=out.partition,
                )
            )
        await asyncio.gather(*sent)  # in order per partition: the producer is idempotent
    finally:
        await producer.stop()


async def _publish_config(kafka: KafkaSettings, topics: Topics, config: PracticeConfig) -> None:
    producer = make_producer(kafka)
    await producer.start()
    try:
        await producer.send_and_wait(
            topics.practice_config,
            encode(config),
            key=config.practice_id.encode(),
            partition=partition_for(config.practice_id, kafka.partitions),
        )
    finally:
        await producer.stop()


async def _read(kafka: KafkaSettings, topic: str) -> list[Record]:
    """Every committed record of ``topic``, partition by partition in log order."""
    consumer = make_consumer(kafka, group_id=None)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(kafka.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        records: list[Record] = []
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            batches = await consumer.getmany(timeout_ms=500)
            for batch in batches.values():
                records.extend(batch)
        return sorted(records, key=lambda r: (r.partition, r.offset))
    finally:
        await consumer.stop()


async def _states(kafka: KafkaSettings, topics: Topics) -> dict[str, list[Appointment | None]]:
    """Every state written per appointment key, in order (None: a tombstone)."""
    out: dict[str, list[Appointment | None]] = {}
    for record in await _read(kafka, topics.appointments):
        value = Appointment.model_validate_json(record.value) if record.value else None
        out.setdefault(record.key.decode(), []).append(value)
    return out


def _latest(states: dict[str, list[Appointment | None]], appointment: str) -> Appointment:
    last = states[f"{PRACTICE}/{appointment}"][-1]
    assert last is not None
    return last


async def _wait(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "") -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what or predicate}")
        await asyncio.sleep(0.1)


async def _committed_lag(kafka: KafkaSettings, group: str, topics: list[str]) -> int:
    """Records of ``topics`` not yet committed by ``group``."""
    tps = [TopicPartition(t, p) for t in topics for p in range(kafka.partitions)]
    admin = admin_client(kafka)
    consumer = make_consumer(kafka, group_id=None)
    try:
        await admin.start()
        await consumer.start()
        committed = await admin.list_consumer_group_offsets(group, partitions=tps)
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
        await admin.close()
    lag = 0
    for tp in tps:
        done = committed.get(tp)
        lag += ends[tp] - (done.offset if done is not None and done.offset >= 0 else 0)
    return lag


def _settings(kafka: KafkaSettings, **options: Any) -> Settings:
    settings = Settings(kafka=kafka)
    return settings.model_copy(
        update={"booking_events": settings.booking_events.model_copy(update=options)}
    )


class Running:
    def __init__(self, service: BookingEventsService, kafka: KafkaSettings) -> None:
        self.service = service
        self.kafka = kafka
        self.topics = service.topics

    async def drained(self, timeout: float = 30.0) -> None:
        """Wait until every published event and config record is committed."""
        inputs = [self.topics.his_appointments, self.topics.practice_config]

        async def done() -> bool:
            return await _committed_lag(self.kafka, self.service.group_id, inputs) == 0

        await _wait(done, timeout, "the service to commit every input record")


@contextlib.asynccontextmanager
async def _running(
    kafka: KafkaSettings, clock: FakeClock | None = None, **options: Any
) -> AsyncIterator[Running]:
    service = BookingEventsService(_settings(kafka, **options), clock=clock)
    await service.start()
    try:
        await _wait(
            lambda: service.readiness()[0] and len(service.owned) == kafka.partitions,
            what="the service to own and load every partition",
        )
        yield Running(service, kafka)
    finally:
        await service.stop()


def _count(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _events_total(result: str, source: str = "medicom") -> float:
    return _count("reminders_booking_events_total", source_system=source, result=result)


def _headers(record: Record) -> dict[str, str]:
    return {k: v.decode() for k, v in record.headers}


# --------------------------------------------------------------------------- lifecycle


async def test_booked_rescheduled_cancelled(
    kafka_settings: KafkaSettings, kafka_topics: Topics
) -> None:
    first_start = NOW + timedelta(days=3)
    moved = NOW + timedelta(days=4)
    booked = _event("A1", 1, start=first_start)
    rescheduled = _event("A1", 2, start=moved)
    cancelled = _event("A1", 3, start=moved, status="cancelled")
    accepted = _events_total("accepted")
    async with _running(kafka_settings) as running:
        await _publish(kafka_settings, kafka_topics.his_appointments, [booked, rescheduled])
        await running.drained()
        await _publish(kafka_settings, kafka_topics.his_appointments, [cancelled])
        await running.drained()
    assert _events_total("accepted") - accepted == 3

    states = await _states(kafka_settings, kafka_topics)
    history = states[f"{PRACTICE}/A1"]
    assert [(s.sequence, s.status) for s in history if s] == [
        (1, "booked"),
        (2, "booked"),
        (3, "cancelled"),
    ]
    last = _latest(states, "A1")
    assert last.start == moved
    assert last.booked_at == datetime.fromisoformat(booked["occurred_at"])
    assert last.updated_at == datetime.fromisoformat(cancelled["occurred_at"])
    assert str(last.last_event_id) == cancelled["event_id"]
    assert not last.meeting.is_meeting
    raw = (await _read(kafka_settings, kafka_topics.appointments))[-1]
    assert b"comment" not in raw.value and b"knie" not in raw.value
    assert raw.partition == partition_for(PRACTICE, kafka_settings.partitions)
    assert raw.key == f"{PRACTICE}/A1".encode()


async def test_duplicates_and_out_of_order_never_roll_back(
    kafka_settings: KafkaSettings, kafka_topics: Topics
) -> None:
    one = _event("B1", 1)
    three = _event("B1", 3, status="cancelled")
    events = [
        one,
        one,  # a connector retry
        three,
        _event("B1", 2, start=NOW + timedelta(days=9)),  # late: stale
        _event("B1", 3),  # same sequence, another id: duplicate
        _event("B1", 1),  # stale
        _event("B2", 5),
        _event("B2", 4),  # stale before anything newer
    ]
    before = {r: _events_total(r) for r in ("accepted", "duplicate", "stale")}
    async with _running(kafka_settings) as running:
        await _publish(kafka_settings, kafka_topics.his_appointments, events)
        await running.drained()
    delta = {r: _events_total(r) - before[r] for r in before}
    assert delta == {"accepted": 3, "duplicate": 2, "stale": 3}

    states = await _states(kafka_settings, kafka_topics)
    assert [s.sequence for s in states[f"{PRACTICE}/B1"] if s] == [1, 3]
    assert _latest(states, "B1").status == "cancelled"
    assert str(_latest(states, "B1").last_event_id) == three["event_id"]
    assert [s.sequence for s in states[f"{PRACTICE}/B2"] if s] == [5]


# --------------------------------------------------------------------------- meetings


async def test_every_meeting_rule_is_applied_and_recorded(
    kafka_settings: KafkaSettings, kafka_topics: Topics
) -> None:
    config = PracticeConfig(
        practice_id=PRACTICE,
        name="Huisartsenpraktijk De Linde",
        meeting_rules={
            "agenda_ids": ["AG-MDO"],
            "appointment_type_codes": ["X99"],
            "keywords": ["vergadering"],
        },
    )
    await _publish_config(kafka_settings, kafka_topics, config)
    events = {
        "M-kind": _event("M-kind", 1, kind="meeting"),
        "M-info": _event("M-info", 1, patient={"id": "pt-9", "required": "information-only"}),
        "M-agenda": _event("M-agenda", 1, agenda={"id": "AG-MDO", "display": "Dinsdag"}),
        "M-type": _event("M-type", 1, appointment_type={"code": "X99", "display": "Dinsdag"}),
        "M-word": _event("M-word", 1, appointment_type={"code": "Q1", "display": "Teamoverleg"}),
        "M-compound": _event(
            "M-compound", 1, appointment_type={"code": "Q2", "display": "patiëntenbespreking"}
        ),
        "M-acronym": _event("M-acronym", 1, agenda={"id": "AG-7", "display": "Fto huisartsen"}),
        "M-own": _event(
            "M-own", 1, appointment_type={"code": "Q3", "display": "Praktijkvergadering"}
        ),
        "M-late": _event("M-late", 1, agenda={"id": "AG-LATE", "display": "Woensdag"}),
        "consult": _event("consult", 1, agenda={"id": "AG-2", "display": "Softonic spreekuur"}),
    }
    before = _count("reminders_booking_meetings_total", rule="keyword")
    async with _running(kafka_settings) as running:
        await _publish(kafka_settings, kafka_topics.his_appointments, events.values())
        await running.drained()
        # Config that arrives later counts from then on (the notifier re-checks at send time).
        later = config.model_copy(
            update={
                "meeting_rules": config.meeting_rules.model_copy(
                    update={"agenda_ids": ["AG-MDO", "AG-LATE"]}
                )
            }
        )
        await _publish_config(kafka_settings, kafka_topics, later)
        await _wait(
            lambda: "AG-LATE" in running.service._config.get(PRACTICE).meeting_rules.agenda_ids,  # type: ignore[union-attr]
            what="the new config",
        )
        again = _event("M-late", 2, agenda={"id": "AG-LATE", "display": "Woensdag"})
        await _publish(kafka_settings, kafka_topics.his_appointments, [again])
        await running.drained()
    assert _count("reminders_booking_meetings_total", rule="keyword") - before == 4

    states = await _states(kafka_settings, kafka_topics)
    found = {
        name: (_latest(states, name).meeting.rule, _latest(states, name).meeting.matched)
        for name in events
    }
    assert found == {
        "M-kind": ("kind", "meeting"),
        "M-info": ("information_only", "information-only"),
        "M-agenda": ("agenda_id", "AG-MDO"),
        "M-type": ("appointment_type_code", "X99"),
        "M-word": ("keyword", "overleg"),
        "M-compound": ("keyword", "bespreking"),
        "M-acronym": ("keyword", "FTO"),
        "M-own": ("keyword", "vergadering"),
        "M-late": ("agenda_id", "AG-LATE"),
        "consult": (None, None),
    }
    first_late = states[f"{PRACTICE}/M-late"][0]
    assert first_late is not None and not first_late.meeting.is_meeting


# --------------------------------------------------------------------------- FHIR


async def test_fhir_appointments_are_accepted(
    kafka_settings: KafkaSettings, kafka_topics: Topics
) -> None:
    resource = json.loads((EXAMPLES / "appointment-fhir.json").read_text())
    resource["start"] = (NOW + timedelta(days=5)).isoformat()
    resource["end"] = (NOW + timedelta(days=5, minutes=10)).isoformat()
    cancelled = {**resource, "status": "cancelled", "meta": {**resource["meta"], "versionId": "2"}}
    meeting = {
        **resource,
        "id": "F-MDO",
        "appointmentType": {"coding": [{"code": "MDO", "display": "MDO ouderenzorg"}]},
    }
    async with _running(kafka_settings) as running:
        await _publish(
            kafka_settings,
            kafka_topics.his_appointments,
            [
                Out(resource, headers=FHIR),
                Out(resource, headers=FHIR),  # the same version again: duplicate
                Out(cancelled, headers=FHIR),
                Out(resource, headers=FHIR),  # an older version: stale
                Out(meeting, headers=FHIR),
                Out(resource),  # FHIR without the header: refused, with a hint
            ],
        )
        await running.drained()
    states = await _states(kafka_settings, kafka_topics)
    history = states[f"{PRACTICE}/A-2026-118735"]
    assert [(s.sequence, s.status) for s in history if s] == [(1, "booked"), (2, "cancelled")]
    last = _latest(states, "A-2026-118735")
    assert last.patient.id == "pt-8f3a2c92"
    assert last.agenda.display == "Spreekuur dr. Jansen"
    assert last.source_system == "urn:his:medicom"
    assert _latest(states, "F-MDO").meeting.rule == "keyword"
    letters = await _read(kafka_settings, Topics.dlq(kafka_topics.his_appointments))
    assert len(letters) == 1
    assert _headers(letters[0])["error-reason"] == "missing_field"
    assert "content-type: application/fhir+json" in _headers(letters[0])["error-detail"]


# --------------------------------------------------------------------------- bad input


async def test_bad_input_goes_to_the_dlq_and_the_events_behind_it_pass(
    kafka_settings: KafkaSettings, kafka_topics: Topics
) -> None:
    n = kafka_settings.partitions
    right = partition_for(PRACTICE, n)
    good = _event("G0", 1)
    bad: list[tuple[str, Out]] = [
        ("not_json", Out(b"{not json")),
        ("no_value", Out(None)),
        ("missing_field", Out({k: v for k, v in good.items() if k != "agenda"})),
        ("invalid_field", Out({**good, "sequence": "seven"})),
        ("unknown_status", Out({**good, "status": "gepland"})),
        ("end_before_start", Out({**good, "end": good["start"]})),
        ("time_without_offset", Out({**good, "start": "2026-12-01T09:30:00"})),
        ("bsn_like_patient_id", Out({**good, "patient": {"id": "123456782"}})),
        ("empty_practice_id", Out({**good, "practice_id": ""})),
        ("key_mismatch", Out(_event("G0", 1, practice="01000017"))),
        ("wrong_partition", Out(good, partition=(right + 1) % n)),
        ("not_an_appointment", Out({"resourceType": "Patient", "id": "x"}, headers=FHIR)),
    ]
    stream: list[Out] = []
    for i, (_, out) in enumerate(bad):
        stream.append(out)
        stream.append(Out(_event(f"G{i}", 1)))  # a good event right behind every bad one
    invalid = _events_total("invalid")
    dead = _count(
        "reminders_dead_letters_total", topic=kafka_topics.his_appointments, reason="not_json"
    )
    async with _running(kafka_settings) as running:
        await _publish(kafka_settings, kafka_topics.his_appointments, stream)
        await running.drained()
        assert running.service.readiness()[0]
    letters = await _read(kafka_settings, Topics.dlq(kafka_topics.his_appointments))
    reasons = [_headers(r)["error-reason"] for r in letters]
    assert sorted(reasons) == sorted(reason for reason, _ in bad)
    assert _events_total("invalid") + _events_total("invalid", "other") - invalid >= len(bad) - 2
    assert (
        _count(
            "reminders_dead_letters_total", topic=kafka_topics.his_appointments, reason="not_json"
        )
        - dead
        == 1
    )
    for letter in letters:
        headers = _headers(letter)
        assert headers["source-topic"] == kafka_topics.his_appointments
        assert int(headers["source-partition"]) == letter.partition
        assert headers["error-detail"]
        assert "123456782" not in headers["error-detail"]
    bsn = next(r for r in letters if _headers(r)["error-reason"] == "bsn_like_patient_id")
    assert b"123456782" in bsn.value  # the original bytes, for the connector to fix
    states = await _states(kafka_settings, kafka_topics)
    assert {f"{PRACTICE}/G{i}" for i in range(len(bad))} <= set(states)
    assert all(key.startswith(f"{PRACTICE}/G") for key in states)


async def test_invalid_practice_config_goes_to_its_dlq_once(
    kafka_settings: KafkaSettings, kafka_topics: Topics
) -> None:
    valid = PracticeConfig(practice_id=PRACTICE, name="De Linde")
    partition = partition_for(PRACTICE, kafka_settings.partitions)
    broken = {"practice_id": PRACTICE, "name": "De Linde", "reminders_enabled": True}
    async with _running(kafka_settings) as running:
        await _publish_config(kafka_settings, kafka_topics, valid)
        await _publish(
            kafka_settings,
            kafka_topics.practice_config,
            [
                Out(broken, partition=partition),
                Out(json.loads(encode(valid)), key="01000017", partition=partition),
            ],
        )
        await running.drained()
        config = running.service._config.get(PRACTICE)
        assert config is not None and not config.reminders_enabled  # the last valid one
    async with _running(kafka_settings) as running:  # a restart does not DLQ them again
        await running.drained()
    letters = await _read(kafka_settings, Topics.dlq(kafka_topics.practice_config))
    assert [_headers(r)["error-reason"] for r in letters] == ["invalid_config", "key_mismatch"]
    assert "phone is required" in _headers(letters[0])["error-detail"]


# --------------------------------------------------------------------------- bounded state


async def test_appointments_past_the_retention_are_tombstoned(
    kafka_settings: KafkaSettings, kafka_topics: Topics
) -> None:
    clock = FakeClock(NOW)
    events = [
        _event("R-old", 1, start=NOW - timedelta(days=10)),  # ended long ago: not stored
        _event("R-soon", 1, start=NOW + timedelta(days=1)),
        _event("R-later", 1, start=NOW + timedelta(days=20)),
    ]
    expired = _events_total("expired")
    async with _running(kafka_settings, clock) as running:
        await _publish(kafka_settings, kafka_topics.his_appointments, events)
        await running.drained()
        assert _events_total("expired") - expired == 1
        clock.advance(timedelta(days=9))  # R-soon ended 8 days ago, beyond the 7
        assert await running.service.sweep() == 1
        assert running.service.appointment_count() == 1
    states = await _states(kafka_settings, kafka_topics)
    assert f"{PRACTICE}/R-old" not in states
    assert states[f"{PRACTICE}/R-soon"][-1] is None
    assert states[f"{PRACTICE}/R-later"][-1] is not None

    # On load too: a service started a month later tombstones R-later before anything else.
    clock.advance(timedelta(days=30))
    async with _running(kafka_settings, clock) as running:
        assert running.service.appointment_count() == 0
    states = await _states(kafka_settings, kafka_topics)
    assert states[f"{PRACTICE}/R-later"][-1] is None


# --------------------------------------------------------------------------- partitions


async def test_the_service_refuses_to_run_when_partition_counts_differ(
    kafka_settings: KafkaSettings, topics: Topics
) -> None:
    specs = [s for s in topics.specs() if s.name != topics.appointments]
    await create_topics(kafka_settings, specs)
    other = kafka_settings.model_copy(update={"partitions": kafka_settings.partitions + 1})
    await create_topics(other, [s for s in topics.specs() if s.name == topics.appointments])
    service = BookingEventsService(_settings(kafka_settings))
    with pytest.raises(PartitionMismatch, match="same partition count"):
        await service.start()
    await service.stop()


async def test_two_instances_share_the_partitions_and_one_takes_over(
    kafka_settings: KafkaSettings, kafka_topics: Topics
) -> None:
    practices = [PRACTICE, *OTHER_PRACTICES]
    first = [_event(f"S{i}", 1, practice=p) for i, p in enumerate(practices)]
    second = [_event(f"S{i}", 2, practice=p, status="cancelled") for i, p in enumerate(practices)]
    a = BookingEventsService(_settings(kafka_settings, heartbeat_interval_ms=300))
    b = BookingEventsService(_settings(kafka_settings, heartbeat_interval_ms=300))
    await a.start()
    try:
        await b.start()
        try:
            await _wait(
                lambda: a.owned and b.owned and len(a.owned | b.owned) == kafka_settings.partitions,
                what="both instances to own partitions",
            )
            assert not a.owned & b.owned
            await _publish(kafka_settings, kafka_topics.his_appointments, first)
            await Running(a, kafka_settings).drained()
        finally:
            await b.stop()
        await _wait(lambda: len(a.owned) == kafka_settings.partitions, what="a to take over")
        await _publish(kafka_settings, kafka_topics.his_appointments, second + first)
        await Running(a, kafka_settings).drained()
    finally:
        await a.stop()
    states = await _states(kafka_settings, kafka_topics)
    for i, practice in enumerate(practices):
        history = states[f"{practice}/S{i}"]
        assert [(s.sequence, s.status) for s in history if s] == [(1, "booked"), (2, "cancelled")]


# --------------------------------------------------------------------------- restarts


def _workload(count: int, seed: int) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Events of many appointments with updates, retries and reordering, and the sequence
    each appointment must end with."""
    rng = random.Random(seed)
    practices = [PRACTICE, *OTHER_PRACTICES]
    events: list[dict[str, Any]] = []
    final: dict[str, int] = {}
    n = 0
    while len(events) < count:
        n += 1
        practice = rng.choice(practices)
        steps = [_event(f"W{n}", s, practice=practice) for s in range(1, rng.randint(1, 4) + 1)]
        if len(steps) > 1 and rng.random() < 0.2:
            steps[-1], steps[-2] = steps[-2], steps[-1]
        if rng.random() < 0.2:
            steps.append(steps[0])
        events.extend(steps)
        final[f"{practice}/W{n}"] = max(s["sequence"] for s in steps)
    return events, final


def _assert_complete(states: dict[str, list[Appointment | None]], final: dict[str, int]) -> None:
    assert set(states) == set(final)
    for key, history in states.items():
        sequences = [s.sequence for s in history if s is not None]
        assert sequences == sorted(set(sequences)), f"{key} went back: {sequences}"
        assert sequences[-1] == final[key], key


async def test_a_graceful_restart_in_the_middle_loses_nothing(
    kafka_settings: KafkaSettings, kafka_topics: Topics
) -> None:
    events, final = _workload(3000, seed=7)
    await _publish(kafka_settings, kafka_topics.his_appointments, events)
    inputs = [kafka_topics.his_appointments]
    async with _running(kafka_settings, batch_size=100) as running:
        group = running.service.group_id
        commit_all = running.service._commit_all

        async def slowly(works: Any) -> dict[int, bool]:
            await asyncio.sleep(0.05)  # so that the stop surely comes in the middle
            return await commit_all(works)

        running.service._commit_all = slowly  # type: ignore[method-assign]

        async def halfway() -> bool:
            return await _committed_lag(kafka_settings, group, inputs) < len(events) - 300

        await _wait(halfway, what="some events to be committed")
    lag = await _committed_lag(kafka_settings, group, inputs)
    assert 0 < lag < len(events)
    async with _running(kafka_settings) as running:
        await running.drained()
    _assert_complete(await _states(kafka_settings, kafka_topics), final)


async def test_a_killed_instance_loses_nothing(
    kafka_settings: KafkaSettings, kafka_topics: Topics
) -> None:
    events, final = _workload(20000, seed=11)
    await _publish(kafka_settings, kafka_topics.his_appointments, events)
    env = {
        **os.environ,
        "REMINDERS_KAFKA__BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
        "REMINDERS_KAFKA__TOPIC_PREFIX": kafka_settings.topic_prefix,
        "REMINDERS_KAFKA__PARTITIONS": str(kafka_settings.partitions),
        "REMINDERS_METRICS__PORT": "0",
        "REMINDERS_BOOKING_EVENTS__BATCH_SIZE": "20",
        "REMINDERS_BOOKING_EVENTS__SESSION_TIMEOUT_MS": "6000",
        "REMINDERS_BOOKING_EVENTS__HEARTBEAT_INTERVAL_MS": "1000",
        "REMINDERS_LOG_LEVEL": "WARNING",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli",
        "run",
        "booking-events",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    group = Settings().booking_events.group_id
    group = f"{kafka_settings.topic_prefix}{group}"
    inputs = [kafka_topics.his_appointments]
    try:

        async def started() -> bool:
            assert process.returncode is None, "the service process exited"
            return await _committed_lag(kafka_settings, group, inputs) < len(events) - 500

        await _wait(started, timeout=60, what="the process to commit some events")
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGKILL)
        await process.wait()
    assert await _committed_lag(kafka_settings, group, inputs) > 0
    # The killed instance may have left a transaction open: the next owner fences it
    # before it loads, and read_committed readers never see its records.
    async with _running(kafka_settings) as running:
        await running.drained(timeout=60)
    _assert_complete(await _states(kafka_settings, kafka_topics), final)
