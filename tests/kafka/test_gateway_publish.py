"""his-gateway against the real broker: token, PUT, the record on his.appointments.v1 with
the practice as key and on its partition, booking_events turning it into an appointment
state (a repeated PUT dropped as a duplicate), native batches, and nothing on the topic for
any refused request."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import ConsumerRecord, TopicPartition

from schemas.models import Appointment
from schemas.topics import Topics
from services.booking_events.app import BookingEventsService
from services.common.clock import FakeClock
from services.common.kafka import make_consumer
from services.common.settings import GatewaySettings, KafkaSettings, Settings
from services.domain.his_events import parse_fhir
from services.domain.partition import partition_for
from services.his_gateway.api import build_api
from services.his_gateway.clients import ClientRecord, MemoryClientStore
from services.his_gateway.gateway import Gateway
from services.his_gateway.publisher import KafkaPublisher

pytestmark = pytest.mark.kafka

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "his"
SECRET = "kafka-test-token-secret-" + "z" * 32
PRACTICE = "01054321"
SECOND_PRACTICE = "01000017"
FOREIGN_PRACTICE = "01999002"
FHIR = "application/fhir+json"
NOW = datetime.now(UTC).replace(microsecond=0)

Record = ConsumerRecord[bytes, bytes]


def resource(
    appointment: str, version: int, *, status: str = "booked", practice: str = PRACTICE
) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((EXAMPLES / "appointment-fhir.json").read_text())
    start = NOW + timedelta(days=2)
    document.update(
        id=appointment,
        status=status,
        start=start.isoformat(),
        end=(start + timedelta(minutes=10)).isoformat(),
    )
    document["meta"].update(versionId=str(version), lastUpdated=NOW.isoformat())
    for participant in document["participant"]:
        if participant["actor"]["reference"].startswith("Location/"):
            participant["actor"]["identifier"]["value"] = practice
    return document


def native(appointment: str, practice: str = PRACTICE, sequence: int = 1) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EXAMPLES / "appointment-native.json").read_text())
    start = NOW + timedelta(days=3)
    event.update(
        event_id=str(uuid.uuid4()),
        occurred_at=NOW.isoformat(),
        practice_id=practice,
        appointment_id=appointment,
        sequence=sequence,
        start=start.isoformat(),
        end=(start + timedelta(minutes=10)).isoformat(),
    )
    return event


async def read_topic(kafka: KafkaSettings, topic: str) -> list[Record]:
    consumer = make_consumer(kafka, group_id=None)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(kafka.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        records: list[Record] = []
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            for batch in (await consumer.getmany(timeout_ms=500)).values():
                records.extend(batch)
        return sorted(records, key=lambda r: (r.partition, r.offset))
    finally:
        await consumer.stop()


async def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "") -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


@dataclass
class Env:
    http: httpx.AsyncClient
    store: MemoryClientStore
    client: ClientRecord
    secret: str
    kafka: KafkaSettings
    topics: Topics
    settings: Settings
    clock: FakeClock

    async def token(self) -> str:
        response = await self.http.post(
            "/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(self.client.client_id, self.secret),
        )
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    async def put(self, document: dict[str, Any], token: str) -> httpx.Response:
        return await self.http.put(
            f"/fhir/Appointment/{document['id']}",
            content=json.dumps(document).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": FHIR},
        )

    async def records(self) -> list[Record]:
        return await read_topic(self.kafka, self.topics.his_appointments)


@pytest.fixture
async def env(kafka_settings: KafkaSettings, kafka_topics: Topics) -> AsyncIterator[Env]:
    settings = Settings(kafka=kafka_settings, gateway=GatewaySettings(max_body_bytes=16_384))
    store = MemoryClientStore()
    client, secret = await store.add("Medicom test", [PRACTICE, SECOND_PRACTICE])
    clock = FakeClock(datetime.now(UTC))
    gateway = Gateway(
        settings.gateway,
        store=store,
        publisher=KafkaPublisher(settings),
        token_secret=SECRET,
        clock=clock,
    )
    api = build_api(gateway)
    await gateway.start()
    try:
        await wait_for(lambda: gateway.readiness()[0], what="the gateway to connect")
        transport = httpx.ASGITransport(app=api)
        async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
            yield Env(http, store, client, secret, kafka_settings, kafka_topics, settings, clock)
    finally:
        await gateway.stop()


async def test_put_lands_keyed_on_its_partition_and_becomes_an_appointment_state(
    env: Env,
) -> None:
    token = await env.token()
    booked = resource("A-GW-1", 1)
    first = await env.put(booked, token)
    assert first.status_code == 200, first.text
    again = await env.put(booked, token)  # a retry of the same version
    assert again.status_code == 200

    [one, two] = await env.records()
    expected = partition_for(PRACTICE, env.kafka.partitions)
    for record in (one, two):
        assert record.key == PRACTICE.encode()
        assert record.partition == expected
        assert dict(record.headers)["content-type"] == FHIR.encode()
        assert json.loads(record.value) == booked
        # The record's correlation id is the event id (the header FastStream writes).
        event = parse_fhir(record.value, received_at=datetime.now(UTC))
        assert dict(record.headers)["correlation_id"] == str(event.event_id).encode()
    assert first.headers["x-kafka-partition"] == str(expected)
    assert first.headers["x-kafka-offset"] == str(one.offset)

    service = BookingEventsService(env.settings)
    await service.start()
    try:
        cancelled = resource("A-GW-1", 2, status="cancelled")
        assert (await env.put(cancelled, token)).status_code == 200
        key = f"{PRACTICE}/A-GW-1"

        async def states() -> list[Appointment]:
            return [
                Appointment.model_validate_json(r.value)
                for r in await read_topic(env.kafka, env.topics.appointments)
                if r.key == key.encode() and r.value
            ]

        async def settled() -> bool:
            found = await states()
            return bool(found) and found[-1].status == "cancelled"

        await wait_for(settled, 60, "booking_events to write the cancelled state")
        found = await states()
        # booked once (the repeated PUT was a duplicate), then cancelled.
        assert [s.status for s in found] == ["booked", "cancelled"]
        assert found[0].practice_id == PRACTICE and found[0].patient.id == "pt-8f3a2c92"
        assert not await read_topic(env.kafka, env.topics.dlq(env.topics.his_appointments))
    finally:
        await service.stop()


async def test_a_native_batch_lands_per_practice(env: Env) -> None:
    token = await env.token()
    events = [native("N-1"), native("N-2", SECOND_PRACTICE), native("N-3")]
    response = await env.http.post(
        "/v1/appointment-events",
        json=events,
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    records = await env.records()
    assert len(records) == 3
    by_event = {json.loads(r.value)["event_id"]: r for r in records}
    for event, result in zip(events, results, strict=True):
        record = by_event[event["event_id"]]
        assert record.key == event["practice_id"].encode()
        assert record.partition == partition_for(event["practice_id"], env.kafka.partitions)
        assert (result["partition"], result["offset"]) == (record.partition, record.offset)
        assert dict(record.headers)["content-type"] != FHIR.encode()


async def test_nothing_reaches_the_topic_for_any_refused_request(env: Env) -> None:
    token = await env.token()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": FHIR}
    good = resource("A-GW-2", 1)
    refused: list[httpx.Response] = []

    refused.append(
        await env.http.put(
            "/fhir/Appointment/A-GW-2",
            content=json.dumps(good).encode(),
            headers={"Content-Type": FHIR},
        )
    )
    refused.append(
        await env.http.put(
            "/fhir/Appointment/A-GW-2",
            content=json.dumps(good).encode(),
            headers={"Authorization": "Bearer not.a.token", "Content-Type": FHIR},
        )
    )
    refused.append(await env.put(resource("A-GW-3", 1, practice=FOREIGN_PRACTICE), token))
    bad_time = resource("A-GW-4", 1)
    bad_time["start"] = "2026-12-24T09:00:00"
    refused.append(await env.put(bad_time, token))
    big = resource("A-GW-5", 1)
    big["comment"] = "x" * 20_000
    refused.append(await env.put(big, token))
    refused.append(
        await env.http.put(
            "/fhir/Appointment/OTHER", content=json.dumps(good).encode(), headers=headers
        )
    )
    refused.append(
        await env.http.post(
            "/v1/appointment-events",
            json=[native("N-9", FOREIGN_PRACTICE)],
            headers={"Authorization": f"Bearer {token}"},
        )
    )
    refused.append(
        await env.http.put(
            "/fhir/Appointment/A-GW-2",
            content=json.dumps(good).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "text/xml"},
        )
    )
    expiring = await env.token()
    env.clock.advance(env.settings.gateway.token_ttl_seconds + 10)
    refused.append(await env.put(good, expiring))
    assert [r.status_code for r in refused] == [401, 401, 403, 422, 413, 400, 403, 415, 401]
    assert "expired" in refused[-1].headers["www-authenticate"]
    token = await env.token()
    for response in refused:
        body = response.json()
        outcome = body if "resourceType" in body else body["results"][0]["outcome"]
        assert outcome["resourceType"] == "OperationOutcome"

    revoked_client, revoked_secret = await env.store.add("revoked", [PRACTICE])
    old = await env.http.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(revoked_client.client_id, revoked_secret),
    )
    await env.store.revoke(revoked_client.client_id)
    await asyncio.sleep(2.1)  # the client cache's bound
    late = await env.put(good, old.json()["access_token"])
    assert late.status_code == 401

    # One accepted event after all of that: it is the only record on the topic.
    assert (await env.put(good, token)).status_code == 200
    records = await env.records()
    assert [json.loads(r.value)["id"] for r in records] == ["A-GW-2"]
