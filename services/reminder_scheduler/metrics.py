"""The scheduler's Prometheus metrics (default registry). Labels: partition, never practice."""

from __future__ import annotations

import bisect
import contextlib
import itertools
import math
import threading
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge
from prometheus_client.core import HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

__all__ = [
    "APPOINTMENTS_INVALID",
    "FIRED",
    "FIRING_LATENESS",
    "MARKER_TOMBSTONES",
    "MISSED",
    "PARTITION_LOAD_SECONDS",
    "PARTITION_STATE",
    "PARTITION_STATES",
    "PENDING_TIMERS",
    "TIMERS",
    "TRANSACTIONS",
    "BatchHistogram",
    "clear_partition",
    "set_partition_state",
]

PENDING_TIMERS = Gauge(
    "reminders_scheduler_pending_timers",
    "Reminders planned and not yet fired, per owned partition.",
    ["partition"],
)
TIMERS = Counter(
    "reminders_scheduler_timers_total",
    "Timer events: planned, rescheduled, cancelled, fired, missed (fired or moved more "
    "than a minute after their due time, e.g. after downtime).",
    ["event"],
)
for _event in ("planned", "rescheduled", "cancelled", "fired", "missed"):
    TIMERS.labels(event=_event)
FIRED = TIMERS.labels(event="fired")
MISSED = TIMERS.labels(event="missed")


class BatchHistogram(Collector):
    """A histogram without labels that is counted a batch at a time.

    The firing loop observes one lateness per reminder, thousands per transaction in a
    burst, and ``Histogram.observe`` takes a lock per observation. This one counts a
    batch into its buckets under one lock (:meth:`observe_counts`) and is exposed as the
    same histogram (name, help, buckets; ``_bucket``, ``_count`` and ``_sum``) through
    prometheus_client's custom-collector API.
    """

    def __init__(
        self,
        name: str,
        documentation: str,
        buckets: Sequence[float],
        registry: CollectorRegistry | None = REGISTRY,
    ) -> None:
        upper = [float(b) for b in buckets]
        if upper != sorted(upper):
            raise ValueError("buckets not in sorted order")
        if upper[-1] != math.inf:
            upper.append(math.inf)
        self.name = name
        self.documentation = documentation
        self._upper = upper
        self._labels = [floatToGoString(b) for b in upper]  # type: ignore[no-untyped-call]
        self._counts = [0] * len(upper)
        self._sum = 0.0
        self._lock = threading.Lock()  # the exposition may run in another thread
        if registry is not None:
            registry.register(self)

    def observe(self, amount: float) -> None:
        self.observe_counts([(amount, 1)])

    def observe_counts(self, counts: Iterable[tuple[float, int]]) -> None:
        """Observe each ``(amount, count)``: the amount ``count`` times."""
        upper = self._upper
        with self._lock:
            for amount, count in counts:
                self._counts[bisect.bisect_left(upper, amount)] += count
                self._sum += amount * count

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            counts, total = list(self._counts), self._sum
        buckets = list(zip(self._labels, itertools.accumulate(counts), strict=True))
        yield HistogramMetricFamily(self.name, self.documentation, buckets, sum_value=total)

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self.name, self.documentation)


FIRING_LATENESS = BatchHistogram(
    "reminders_scheduler_firing_lateness_seconds",
    "fired_at - due_at of every reminder emitted.",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600, 6 * 3600, 86400),
)
PARTITION_LOAD_SECONDS = Gauge(
    "reminders_scheduler_partition_load_seconds",
    "How long the last load of a partition took (fence, fired markers, appointments).",
    ["partition"],
)
PARTITION_STATES = ("loading", "loaded", "fenced")
PARTITION_STATE = Gauge(
    "reminders_scheduler_partition_state",
    "1 for the state an owned partition is in (loading, loaded, fenced), else 0.",
    ["partition", "state"],
)
TRANSACTIONS = Counter(
    "reminders_scheduler_transactions_total",
    "Firing transactions by result (committed, failed).",
    ["result"],
)
MARKER_TOMBSTONES = Counter(
    "reminders_scheduler_marker_tombstones_total",
    "Tombstones written to reminders.fired.v1 (appointment past retention or gone).",
)
APPOINTMENTS_INVALID = Counter(
    "reminders_scheduler_invalid_appointments_total",
    "Records of appointments.v1 the scheduler could not use, by reason (sent to the DLQ).",
    ["reason"],
)


def set_partition_state(partition: int, state: str) -> None:
    for name in PARTITION_STATES:
        PARTITION_STATE.labels(partition=str(partition), state=name).set(1 if name == state else 0)


def clear_partition(partition: int) -> None:
    """A partition this instance no longer owns leaves no stale series."""
    label = str(partition)
    for gauge in (PENDING_TIMERS, PARTITION_LOAD_SECONDS):
        with contextlib.suppress(KeyError):
            gauge.remove(label)
    for name in PARTITION_STATES:
        with contextlib.suppress(KeyError):
            PARTITION_STATE.remove(label, name)
