"""The scheduler's Prometheus metrics (default registry). Labels: partition, never practice."""

from __future__ import annotations

import contextlib

from prometheus_client import Counter, Gauge, Histogram

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

FIRING_LATENESS = Histogram(
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
