"""Metrics every service shares: readiness, dead letters, consumer lag, build info.

They live on the default registry beside each service's own ``services/<svc>/metrics.py``
and FastStream's transport metrics. The alert rules in deploy/prometheus/alerts.yml and the
catalogue in docs/metrics.md rely on these names. Labels are bounded: a service name, a
topic name, a partition number, a reason code; never a practice, patient or address.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version

from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client import Counter, Gauge

from services.common.kafka import admin_client
from services.common.settings import KafkaSettings

__all__ = [
    "BUILD_INFO",
    "CONSUMER_LAG",
    "DEAD_LETTERS",
    "LAG_UPDATED",
    "SERVICE_READY",
    "LagMonitor",
    "count_dead_letter",
    "track_readiness",
]

log = logging.getLogger(__name__)

SERVICE_READY = Gauge(
    "reminders_service_ready",
    "1 when the service answers /readyz with 200 (tables loaded, broker reachable), else 0",
    ["service"],
)
DEAD_LETTERS = Counter(
    "reminders_dead_letters_total",
    "Records sent to a dead-letter topic, by the topic they were read from and the reason code",
    ["topic", "reason"],
)
CONSUMER_LAG = Gauge(
    "reminders_consumer_lag_records",
    "Records not yet processed by a consumer group: last stable offset minus the group's "
    "committed offset (measured from Kafka, so it keeps moving when the consumer is stuck)",
    ["group", "topic", "partition"],
)
LAG_UPDATED = Gauge(
    "reminders_consumer_lag_updated_timestamp_seconds",
    "When the consumer lag of the group was last measured (Unix time)",
    ["group"],
)
BUILD_INFO = Gauge(
    "reminders_build_info",
    "Always 1; the version of the running code in the label",
    ["version"],
)


def _version() -> str:
    try:
        return version("e-afspraken-reminders")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "unknown"


BUILD_INFO.labels(_version()).set(1)

ReadinessCheck = Callable[[], tuple[bool, dict[str, object]]]


def track_readiness(service: str, readiness: ReadinessCheck) -> None:
    """Expose ``readiness()`` as ``reminders_service_ready{service}``, evaluated per scrape."""

    def ready() -> float:
        try:
            return 1.0 if readiness()[0] else 0.0
        except Exception:  # a failing check must not break /metrics
            log.exception("readiness check failed", extra={"service": service})
            return 0.0

    SERVICE_READY.labels(service).set_function(ready)


_UNKNOWN_TOPIC = 3  # UNKNOWN_TOPIC_OR_PARTITION
_REASON = re.compile(r"^[a-z][a-z0-9_]{0,39}$")


def count_dead_letter(topic: str, reason: str) -> None:
    """Count one record sent to ``<topic>.dlq.v1``. Reasons outside ``[a-z0-9_]`` are ``other``."""
    DEAD_LETTERS.labels(topic, reason if _REASON.match(reason) else "other").inc()


class LagMonitor:
    """Measures a consumer group's lag every ``interval`` seconds from the broker.

    Lag of a partition = its last stable offset (read_committed end) minus the group's
    committed offset, or minus the log start offset when the group has committed nothing
    there yet. Measured with an admin client and a group-less consumer, independent of the
    service's own consumer, so a stuck consumer shows a growing lag instead of a frozen one.
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        group_id: str,
        topics: Sequence[str],
        *,
        interval: float = 15.0,
    ) -> None:
        self._kafka = kafka
        self._group = group_id
        self._topics = list(topics)
        self._interval = interval
        self._task: asyncio.Task[None] | None = None
        self._seen: set[tuple[str, int]] = set()

    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"lag-monitor-{self._group}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            try:
                await self.measure()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning(
                    "consumer lag not measured",
                    extra={"group": self._group, "error": type(exc).__name__},
                )
            await asyncio.sleep(self._interval)

    async def measure(self) -> dict[tuple[str, int], int]:
        """Measure once, update the gauges and return the lag per (topic, partition)."""
        admin = admin_client(self._kafka)
        consumer = AIOKafkaConsumer(
            **self._kafka.aiokafka_params(),
            client_id=f"{self._kafka.client_id}-lag",
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_committed",
        )
        try:
            await admin.start()
            await consumer.start()
            described = await admin.describe_topics(self._topics)
            partitions = [
                TopicPartition(t["topic"], p["partition"])
                for t in described
                if t["error_code"] != _UNKNOWN_TOPIC
                for p in sorted(t["partitions"], key=lambda p: int(p["partition"]))
            ]
            if not partitions:
                return {}
            committed = await admin.list_consumer_group_offsets(self._group, partitions=partitions)
            ends = await consumer.end_offsets(partitions)
            starts = await consumer.beginning_offsets(partitions)
        finally:
            await consumer.stop()
            await admin.close()
        lags: dict[tuple[str, int], int] = {}
        for tp in partitions:
            done = committed.get(tp)
            position = done.offset if done is not None and done.offset >= 0 else starts[tp]
            lags[(tp.topic, tp.partition)] = max(0, ends[tp] - position)
        for topic, partition in self._seen - lags.keys():
            CONSUMER_LAG.remove(self._group, topic, str(partition))
        for (topic, partition), lag in lags.items():
            CONSUMER_LAG.labels(self._group, topic, str(partition)).set(lag)
        self._seen = set(lags)
        LAG_UPDATED.labels(self._group).set_to_current_time()
        return lags
