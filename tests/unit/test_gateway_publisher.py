"""his-gateway's Kafka publisher without a broker: an unconfirmed record fails in time."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from services.common.settings import Settings
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
