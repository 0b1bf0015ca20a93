"""What one fetched batch of one partition produces: the per-record decisions.

No Kafka I/O here: records in, a :class:`Work` out (the appointment states to write, the
dead letters, the offsets to commit, the counts), which the service then commits in one
transaction. The rules themselves live in services.domain (validation, meetings) and
ledger (duplicates and order).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeAlias

from aiokafka import ConsumerRecord, TopicPartition

from schemas.models import MeetingRules, PracticeConfig, appointment_key
from services.booking_events.ledger import Ledger, Seen, judge
from services.booking_events.metrics import source_label
from services.booking_events.normalize import appointment_json
from services.common.containment import contain, is_about_the_record, record_error
from services.common.kafka import DeadLetter
from services.common.practice_config import ConfigRejected, validate_practice_config
from services.domain.classify import classify
from services.domain.codec import DecodeError
from services.domain.his_events import check_placement, is_fhir, parse_fhir, parse_native

__all__ = [
    "Decisions",
    "Work",
    "check_config",
    "dead_letter",
    "decide_config",
    "decide_event",
]

Record: TypeAlias = "ConsumerRecord[bytes, bytes]"

_SOURCE = re.compile(rb'"(?:source_system|source)"\s*:\s*"([^"\\]{1,64})"')


@dataclass
class Work:
    """The outcome of one batch of one partition, committed in one transaction."""

    partition: int
    fetched: float  # time.monotonic() of the fetch, for the processing-time metric
    # The pending (not yet committed) states of the batch before this one.
    earlier: dict[str, Seen] = field(default_factory=dict)
    states: list[tuple[bytes, bytes | None]] = field(default_factory=list)
    event_letters: list[DeadLetter] = field(default_factory=list)
    config_letters: list[DeadLetter] = field(default_factory=list)
    pending: dict[str, Seen] = field(default_factory=dict)
    offsets: dict[TopicPartition, int] = field(default_factory=dict)
    first: dict[TopicPartition, int] = field(default_factory=dict)
    results: Counter[tuple[str, str]] = field(default_factory=Counter)
    meetings: Counter[str] = field(default_factory=Counter)
    oldest_ms: int | None = None  # the Kafka timestamp of the oldest event
    committed: float | None = None  # time.monotonic() when its transaction committed


@dataclass(frozen=True)
class Decisions:
    """What the decisions of a batch depend on besides the ledger."""

    cutoff: float  # epoch seconds: appointments that ended before this are past retention
    partitions: int  # of his.appointments.v1
    rules_of: Callable[[str], MeetingRules | None]  # the practice's meeting rules, if any


def decide_event(record: Record, ledger: Ledger, work: Work, decisions: Decisions) -> None:
    """One HIS event: refused (dead letter), dropped (duplicate, stale, expired) or
    accepted (a new appointment state). An unexpected error about the record
    dead-letters it too (services.common.containment): the partition goes on."""
    if work.oldest_ms is None or record.timestamp < work.oldest_ms:
        work.oldest_ms = record.timestamp
    try:
        _decide_event(record, ledger, work, decisions)
    except Exception as exc:
        if not is_about_the_record(exc):
            raise
        work.event_letters.append(dead_letter(record, record_error(exc, record.topic)))
        work.results[(_source_of(record.value), "invalid")] += 1


def _decide_event(record: Record, ledger: Ledger, work: Work, decisions: Decisions) -> None:
    # Nothing is added to ``work`` before the last step that can raise.
    try:
        if is_fhir(record.headers):
            received_at = datetime.fromtimestamp(record.timestamp / 1000, UTC)
            event = parse_fhir(record.value, received_at=received_at)
        else:
            event = parse_native(record.value)
        check_placement(event, record.key, record.partition, decisions.partitions)
    except DecodeError as error:
        work.event_letters.append(dead_letter(record, error))
        work.results[(_source_of(record.value), "invalid")] += 1
        return
    source = source_label(event.source_system)
    key = appointment_key(event.practice_id, event.appointment_id)
    seen = work.pending.get(key) or work.earlier.get(key) or ledger.get(key)
    verdict = judge(seen, event)
    if verdict != "accepted":
        work.results[(source, verdict)] += 1
        return
    end = event.end.timestamp()
    if end < decisions.cutoff:
        # Ended longer ago than the retention: its state would be tombstoned at once.
        work.results[(source, "expired")] += 1
        return
    meeting = classify(event, decisions.rules_of(event.practice_id))
    state = appointment_json(event, seen.booked_at if seen is not None else None, meeting)
    work.states.append((key.encode("utf-8"), state.value))
    work.pending[key] = Seen(event.sequence, event.event_id.int, state.booked_at, end)
    work.results[(source, "accepted")] += 1
    if meeting.is_meeting:
        work.meetings[meeting.rule or "unknown"] += 1


def decide_config(record: Record, work: Work) -> None:
    """A practice config on a partition this instance owns: dead-letter it if invalid
    (the config table of every service skips it and keeps the last valid one)."""
    if record.value is None:
        return  # a tombstone: back to the defaults (reminders off)
    error = contain(record.topic, check_config, record.key, record.value)
    if isinstance(error, DecodeError):
        work.config_letters.append(dead_letter(record, error))


def check_config(key: bytes | None, value: bytes) -> PracticeConfig:
    """The checks a practice config must pass: the same ones the config table of every
    service makes (services.common.practice_config), plus the key."""
    try:
        config = validate_practice_config(value)
    except ConfigRejected as exc:
        raise DecodeError("invalid_config", exc.reason) from exc
    if key is None or key.decode("utf-8", "replace") != config.practice_id:
        raise DecodeError("key_mismatch", "the record key must be the practice id of the config")
    return config


def dead_letter(record: Record, error: DecodeError) -> DeadLetter:
    return DeadLetter.of(record, error)


def _source_of(value: bytes | None) -> str:
    """The source-system label of a record that could not be parsed (best effort)."""
    if not value:
        return "other"
    found = _SOURCE.search(value[:4096])
    return source_label(found.group(1).decode("utf-8", "replace") if found else None)
