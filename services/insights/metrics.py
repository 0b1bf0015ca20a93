"""The insights service's Prometheus metrics (default registry). No practice or patient labels.

Its lag is the shared ``reminders_consumer_lag_records{group,topic,partition}``, measured
from the positions stored in the database (the group commits no Kafka offsets).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

__all__ = ["BAD_RECORDS", "BATCH_SECONDS", "CAUGHT_UP", "ROWS_WRITTEN"]

ROWS_WRITTEN = Counter(
    "reminders_insights_rows_written_total",
    "Rows written to the follow-up projection (upserts included), by table",
    ["table"],
)
BAD_RECORDS = Counter(
    "reminders_insights_bad_records_total",
    "Records that could not be projected and were skipped, by topic and reason",
    ["topic", "reason"],
)
BATCH_SECONDS = Histogram(
    "reminders_insights_batch_seconds",
    "Time to decode one batch and commit its rows and positions in one database transaction",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
CAUGHT_UP = Gauge(
    "reminders_insights_caught_up",
    "1 once every owned partition was projected up to its end at assignment, else 0",
)
