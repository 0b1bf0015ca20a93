"""How a service becomes a FastStream app with /metrics, /healthz and /readyz.

A service is an object with ``start``, ``stop`` and ``readiness`` and a FastStream
``KafkaBroker``. All three services consume with aiokafka directly, because their writes
and offset commits go in one Kafka transaction and FastStream does not wrap transactions;
the broker documents the topics (AsyncAPI) and carries FastStream's Prometheus
middleware. ``make_app`` wires the service to the health server, so that
``reminders run NAME`` and ``faststream run services.NAME.app:app`` behave the same.
"""

from __future__ import annotations

import logging
from typing import Protocol

from faststream import FastStream
from faststream.kafka import KafkaBroker
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from prometheus_client import REGISTRY

from services.common.health import HealthServer
from services.common.metrics import LagMonitor, track_readiness
from services.common.settings import Settings

__all__ = ["Service", "make_app", "make_broker"]

log = logging.getLogger(__name__)


class Service(Protocol):
    name: str
    broker: KafkaBroker

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def readiness(self) -> tuple[bool, dict[str, object]]: ...


def make_broker(settings: Settings, app_name: str) -> KafkaBroker:
    """A FastStream broker with the Prometheus middleware on the shared registry."""
    return KafkaBroker(
        **settings.kafka.faststream_params(),
        middlewares=(KafkaPrometheusMiddleware(registry=REGISTRY, app_name=app_name),),
        logger=logging.getLogger(f"faststream.{app_name}"),
    )


def make_app(service: Service, settings: Settings) -> FastStream:
    track_readiness(service.name, service.readiness)
    health = HealthServer(
        host=settings.metrics.host,
        port=settings.metrics.port,
        readiness=service.readiness,
        liveness=getattr(service, "liveness", None),
        service=service.name,
    )

    # Consumer lag, measured from the broker, for services whose group commits offsets
    # (the scheduler commits none: it reloads its compacted input on every assignment).
    lag_topics: list[str] = list(getattr(service, "lag_topics", []))
    group_id: str | None = getattr(service, "group_id", None)
    lag = LagMonitor(settings.kafka, group_id, lag_topics) if lag_topics and group_id else None

    async def started() -> None:
        await health.start()
        await service.start()
        if lag is not None:
            await lag.start()
        log.info("service started", extra={"service": service.name, "metrics_url": health.url})

    async def stopping() -> None:
        if lag is not None:
            await lag.stop()
        await service.stop()
        await health.stop()

    return FastStream(
        service.broker,
        after_startup=[started],
        on_shutdown=[stopping],
        logger=logging.getLogger(f"faststream.{service.name}"),
    )
