"""his-gateway's Kafka publisher without a broker: an unconfirmed record fails in time."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from services.common.settings import Settings
from services.domain.partition import partition_for
from services.his_gateway.publisher import KafkaPublisher, OutRecord, PublishFailed


class _SilentBroker:
    """Takes every record and never confirms it, as a broker that lost its replicas."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def publish(self, value: bytes, topic: str, **options: Any) -> asyncio.Future[Any]:
        self.sent.append({"value": value, "topic": topic, **options})
        return asyncio.get_running_loop().create_future()


async def test_a_record_the_broker_does_not_confirm_fails_after_the_timeout() -> None:
    publisher = KafkaPublisher(Settings(), timeout_seconds=0.05)
    broker = _SilentBroker()
    publisher.broker = broker  # type: ignore[assignment]
    publisher._connected, publisher._partitions = True, 12
    started = asyncio.get_running_loop().time()
    with pytest.raises(PublishFailed, match="did not confirm"):
        await publisher.publish(OutRecord("01054321", b"{}", fhir=True, correlation_id="c-1"))
    assert 0.04 <= asyncio.get_running_loop().time() - started < 1.0
    (sent,) = broker.sent
    assert sent["key"] == b"01054321"
    assert sent["headers"] == {"content-type": "application/fhir+json"}
    assert sent["no_confirm"] is True


class _SilentProducer(AIOKafkaProducer):  # type: ignore[misc]
    """The broker's own producer, taking every record and never confirming it."""

    def __init__(self) -> None:  # no connection: only send is used
        self.sent: list[dict[str, Any]] = []

    async def send(self, topic: str, value: Any = None, **options: Any) -> asyncio.Future[Any]:
        self.sent.append({"topic": topic, "value": value, **options})
        return asyncio.get_running_loop().create_future()


async def test_the_brokers_own_producer_gets_the_record_with_key_partition_and_headers() -> None:
    publisher = KafkaPublisher(Settings(), timeout_seconds=0.05)
    producer = _SilentProducer()
    publisher._producer = producer
    publisher._connected, publisher._partitions = True, 12
    with pytest.raises(PublishFailed, match="did not confirm"):
        await publisher.publish(OutRecord("01054321", b"{}", fhir=True, correlation_id="c-1"))
    with pytest.raises(PublishFailed):
        await publisher.publish(OutRecord("01054321", b"[]", fhir=False, correlation_id="c-2"))
    fhir, native = producer.sent
    assert fhir["topic"] == publisher.topic and fhir["value"] == b"{}"
    assert fhir["key"] == b"01054321"
    assert fhir["partition"] == partition_for("01054321", 12)
    assert fhir["headers"] == [
        ("content-type", b"application/fhir+json"),
        ("correlation_id", b"c-1"),
    ]
    assert native["headers"] == [("content-type", b"application/json"), ("correlation_id", b"c-2")]


class _ManualProducer(AIOKafkaProducer):  # type: ignore[misc]
    """Hands out the records' futures for the test to confirm (or not)."""

    def __init__(self) -> None:  # no connection: only send is used
        self.futures: list[asyncio.Future[Any]] = []

    async def send(self, topic: str, value: Any = None, **options: Any) -> asyncio.Future[Any]:
        sent: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.futures.append(sent)
        return sent


async def test_confirmed_records_leave_the_queue_and_only_the_unconfirmed_one_fails() -> None:
    from aiokafka.structs import RecordMetadata

    publisher = KafkaPublisher(Settings(), timeout_seconds=0.1)
    producer = _ManualProducer()
    publisher._producer = producer
    publisher._connected, publisher._partitions = True, 12
    record = OutRecord("01054321", b"{}", fhir=True, correlation_id="c-1")
    tasks = [asyncio.ensure_future(publisher.publish(record)) for _ in range(3)]
    await asyncio.sleep(0)
    first, pending, last = producer.futures
    first.set_result(RecordMetadata(publisher.topic, 3, None, 7, 0, 0, None))
    last.set_result(RecordMetadata(publisher.topic, 3, None, 8, 0, 0, None))
    placement = await tasks[0]
    assert (placement.partition, placement.offset) == (3, 7)
    assert (await tasks[2]).offset == 8
    started = asyncio.get_running_loop().time()
    with pytest.raises(PublishFailed, match="did not confirm"):
        await tasks[1]
    assert asyncio.get_running_loop().time() - started < 1.0
    assert pending.done()
    await asyncio.sleep(0.2)  # the sweeps have nothing left to look at, and stop
    assert not publisher._waiting and publisher._sweeper is None


async def test_stop_fails_what_is_still_waiting() -> None:
    publisher = KafkaPublisher(Settings(), timeout_seconds=30)
    publisher._producer = _ManualProducer()
    publisher._connected, publisher._partitions = True, 12
    waiting = asyncio.ensure_future(
        publisher.publish(OutRecord("01054321", b"{}", fhir=True, correlation_id="c-1"))
    )
    await asyncio.sleep(0)
    publisher.broker = None  # type: ignore[assignment]  # stop's broker.stop() fails quietly
    await publisher.stop()
    with pytest.raises(PublishFailed, match="did not confirm"):
        await waiting
