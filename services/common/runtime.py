"""How a service becomes a FastStream app with /metrics, /healthz and /readyz.

A service is an object with ``start``, ``stop`` and ``readiness`` and a FastStream
``KafkaBroker``. All three services consume with aiokafka directly, on the
partition-ownership runtime (services/common/partitions.py), because their writes and
offset commits go in one Kafka transaction and FastStream does not wrap transactions;
the broker carries the app's lifecycle and documents the topics (AsyncAPI). Nothing
passes through it, so it has no Prometheus middleware: its transport metrics would
always be zero. ``make_app`` wires the service to the health server, so that
``reminders run NAME`` and ``faststream run services.NAME.app:app`` behave the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, Protocol

from aiokafka.errors import KafkaError
from faststream import FastStream
from faststream.kafka import KafkaBroker

from services.common.health import HealthServer
from services.common.kafka import (
    KafkaUnavailable,
    PartitionMismatch,
    explain_unreachable,
    keep_trying_broker,
)
from services.common.loops import LoopFactory
from services.common.metrics import LagMonitor, track_readiness
from services.common.settings import Settings

__all__ = [
    "EXIT_REFUSED",
    "Service",
    "ServiceApp",
    "StartRefused",
    "make_app",
    "make_broker",
    "module_app",
]

log = logging.getLogger(__name__)

# A refusal: these settings or this cluster cannot work, restarting will not help.
EXIT_REFUSED = 2
_RETRY_FIRST_SECONDS = 1.0
_RETRY_MAX_SECONDS = 30.0


class StartRefused(RuntimeError):
    """The service must not run as configured (bad key, topics that disagree): say why
    in one line and exit with EXIT_REFUSED."""


# What service.start() may raise that no retry can mend.
_REFUSALS: tuple[type[BaseException], ...] = (StartRefused, PartitionMismatch)


class Service(Protocol):
    name: str
    broker: KafkaBroker

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def readiness(self) -> tuple[bool, dict[str, object]]: ...


class ServiceApp(FastStream):
    """A FastStream app that remembers why it stopped: ``exit_code`` 0, or EXIT_REFUSED."""

    exit_code: int = 0
    # The event loop ``reminders run`` runs it on (None: asyncio's own).
    loop_factory: LoopFactory | None = None

    def refuse(self) -> None:
        self.exit_code = EXIT_REFUSED
        self.exit()


class _Startup:
    """Readiness until the service has started: why it is not ready yet."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.reason: str | None = "starting"
        self.stopping = False
        self._last_logged: str | None = None

    def readiness(self) -> tuple[bool, dict[str, object]]:
        if self.reason is not None:
            return False, {"reason": self.reason}
        return self.service.readiness()

    def waiting(self, reason: str) -> None:
        self.reason = reason
        if reason != self._last_logged:
            # Said once per cause, not once per attempt.
            self._last_logged = reason
            log.warning(
                f"waiting for Kafka: {reason}",
                extra={"service": self.service.name, "retrying": True},
            )


def make_broker(settings: Settings, app_name: str) -> KafkaBroker:
    """The FastStream broker of a service: lifecycle and AsyncAPI only."""
    return KafkaBroker(
        **settings.kafka.faststream_params(),
        logger=logging.getLogger(f"faststream.{app_name}"),
    )


def make_app(service: Service, settings: Settings) -> ServiceApp:
    """The service with /healthz and /readyz served from the first moment: while the
    brokers do not answer it keeps trying with backoff, not ready, with the reason."""
    startup = _Startup(service)
    track_readiness(service.name, startup.readiness)
    health = HealthServer(
        host=settings.metrics.host,
        port=settings.metrics.port,
        readiness=startup.readiness,
        liveness=getattr(service, "liveness", None),
        service=service.name,
    )

    # Consumer lag, measured from the broker, for services whose group commits offsets
    # (the scheduler commits none: it reloads its compacted input on every assignment).
    lag_topics: list[str] = list(getattr(service, "lag_topics", []))
    group_id: str | None = getattr(service, "group_id", None)
    lag = LagMonitor(settings.kafka, group_id, lag_topics) if lag_topics and group_id else None
    app: ServiceApp

    async def before_broker() -> None:
        # FastStream connects its broker next; without a broker answering that would
        # end the process with a traceback.
        await health.start()
        startup.reason = f"waiting for Kafka at {settings.kafka.bootstrap_servers}"
        await keep_trying_broker(
            settings.kafka,
            startup.waiting,
            first_delay=_RETRY_FIRST_SECONDS,
            max_delay=_RETRY_MAX_SECONDS,
        )

    async def started() -> None:
        delay = _RETRY_FIRST_SECONDS
        while not startup.stopping:
            try:
                await service.start()
                break
            except _REFUSALS as exc:
                log.error(
                    f"refusing to start: {exc}",
                    extra={"service": service.name, "exit_code": EXIT_REFUSED},
                )
                startup.reason = f"refused: {exc}"
                app.refuse()
                return
            except (KafkaUnavailable, KafkaError, OSError) as exc:
                with contextlib.suppress(Exception):
                    await service.stop()
                startup.waiting(await explain_unreachable(settings.kafka, exc))
            await asyncio.sleep(delay)
            delay = min(_RETRY_MAX_SECONDS, delay * 2)
        if startup.stopping:
            return
        startup.reason = None
        if lag is not None:
            await lag.start()
        log.info("service started", extra={"service": service.name, "metrics_url": health.url})

    async def stopping() -> None:
        startup.stopping = True
        if lag is not None:
            await lag.stop()
        await service.stop()
        await health.stop()

    kwargs: dict[str, Any] = {
        "after_startup": [started],
        "on_startup": [before_broker],
        "on_shutdown": [stopping],
        "logger": logging.getLogger(f"faststream.{service.name}"),
    }
    app = ServiceApp(service.broker, **kwargs)
    return app


def module_app(create_app: Callable[[Settings], FastStream]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that makes ``faststream run services.NAME.app:app`` work
    (settings from the environment) without building an app, and a broker, at import."""

    def __getattr__(name: str) -> Any:
        if name == "app":
            return create_app(Settings())
        raise AttributeError(name)

    return __getattr__
