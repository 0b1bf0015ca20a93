"""booking_events metrics, on the default Prometheus registry.

Labels are bounded: the source system is folded onto a known list of HIS vendors (anything
else is ``other``); practice ids never appear in a label.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Final, Literal

from prometheus_client import Counter, Gauge, Histogram

__all__ = [
    "CONFIG_INVALID",
    "EVENTS",
    "EVENT_AGE_SECONDS",
    "KNOWN_SOURCE_SYSTEMS",
    "MEETINGS",
    "PARTITION_LOADED",
    "PARTITION_LOAD_SECONDS",
    "PROCESSING_SECONDS",
    "TOMBSTONES",
    "Result",
    "source_label",
]

Result = Literal["accepted", "duplicate", "stale", "expired", "invalid"]

# HIS vendors of Dutch general practice (and the generic FHIR source); the label of
# anything else is "other", so a misbehaving connector cannot blow up the series count.
KNOWN_SOURCE_SYSTEMS: Final = (
    "medicom",
    "cgm",
    "microhis",
    "bricks",
    "promedico",
    "sanday",
    "hix",
    "omnihis",
    "zorgdomein",
    "fhir",
)

EVENTS = Counter(
    "reminders_booking_events_total",
    "HIS events by source system and result (accepted, duplicate, stale, expired, invalid).",
    ["source_system", "result"],
)
MEETINGS = Counter(
    "reminders_booking_meetings_total",
    "Accepted events classified as a meeting about the patient, by the rule that matched.",
    ["rule"],
)
PROCESSING_SECONDS = Histogram(
    "reminders_booking_processing_seconds",
    "Time from fetching a batch of HIS events to committing its appointment states.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
EVENT_AGE_SECONDS = Histogram(
    "reminders_booking_event_age_seconds",
    "Age of the oldest event of a committed batch (Kafka timestamp to commit): the lag.",
    buckets=(0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0),
)
TOMBSTONES = Counter(
    "reminders_booking_tombstones_total",
    "Tombstones written to appointments.v1 for appointments past the retention.",
)
PARTITION_LOADED = Gauge(
    "reminders_booking_partition_loaded",
    "1 once the last-seen state of this partition is loaded from appointments.v1.",
    ["partition"],
)
PARTITION_LOAD_SECONDS = Histogram(
    "reminders_booking_partition_load_seconds",
    "Time to rebuild the last-seen state of the assigned partitions from appointments.v1.",
    buckets=(0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0),
)
CONFIG_INVALID = Counter(
    "reminders_booking_config_invalid_total",
    "Invalid practice configs sent to practice.config.v1.dlq.v1.",
)


@lru_cache(maxsize=1024)
def source_label(source_system: str | None) -> str:
    """The metric label of a source system: a known vendor name, else ``other``."""
    if not source_system:
        return "other"
    folded = source_system.casefold()
    if folded in KNOWN_SOURCE_SYSTEMS:
        return folded
    # "urn:his:medicom", "https://fhir.medicom.nl", "Medicom HIS 12.3"
    for known in KNOWN_SOURCE_SYSTEMS:
        if known in folded:
            return known
    return "other"
