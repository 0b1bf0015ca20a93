"""The notifier's Prometheus metrics (default registry). No practice id or address labels."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "BATCH_SECONDS",
    "OUTCOMES",
    "PARTITION_BLOCKED",
    "PARTITION_LOADED",
    "POSSIBLE_DUPLICATES",
    "RETRIES",
    "SEND_SECONDS",
]

OUTCOMES = Counter(
    "reminders_notifier_outcomes_total",
    "Committed outcomes, one per due reminder",
    ["status", "reason", "channel"],
)
SEND_SECONDS = Histogram(
    "reminders_notifier_send_seconds",
    "Time to hand one message to the mail server or push service, retries included",
    ["channel"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
RETRIES = Counter(
    "reminders_notifier_retries_total",
    "Send attempts after a transient failure",
    ["channel"],
)
POSSIBLE_DUPLICATES = Counter(
    "reminders_notifier_possible_duplicates_total",
    "Reminders sent that an earlier owner of the partition had in flight when it stopped "
    "without committing: each may have reached the patient twice (an upper bound)",
)
PARTITION_LOADED = Gauge(
    "reminders_notifier_partition_loaded",
    "1 when the partition's tables and ledger are loaded and it is being processed",
    ["partition"],
)
PARTITION_BLOCKED = Gauge(
    "reminders_notifier_partition_blocked",
    "1 while the partition waits for the mail server to come back (outage back-off)",
    ["partition"],
)
BATCH_SECONDS = Histogram(
    "reminders_notifier_batch_seconds",
    "Decide, send and commit one batch of due reminders",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
