"""The decisions of one batch, without Kafka: what is written, refused, dropped, counted."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import ConsumerRecord

from schemas.models import Appointment, MeetingRules, PracticeConfig
from services.booking_events.batch import Decisions, Work, decide_config, decide_event
from services.booking_events.ledger import Ledger
from services.domain.codec import encode
from services.domain.partition import partition_for

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "his"
PARTITIONS = 3
PRACTICE = "01054321"
HERE = partition_for(PRACTICE, PARTITIONS)
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def _record(
    value: bytes | None,
    *,
    key: bytes | None = PRACTICE.encode(),
    topic: str = "his.appointments.v1",
    offset: int = 0,
    headers: list[tuple[str, bytes]] | None = None,
) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic=topic,
        partition=HERE,
        offset=offset,
        timestamp=int(NOW.timestamp() * 1000),
        timestamp_type=0,
        key=key,
        value=value,
        checksum=None,
        serialized_key_size=len(key or b""),
        serialized_value_size=len(value or b""),
        headers=headers or [],
    )


def _event(sequence: int, **changes: Any) -> bytes:
    data = json.loads((EXAMPLES / "appointment-native.json").read_text())
    data.update(event_id=str(uuid.uuid4()), sequence=sequence, **changes)
    return json.dumps(data).encode()


def _decide(
    values: list[bytes | None],
    ledger: Ledger | None = None,
    rules: MeetingRules | None = None,
    cutoff: datetime = NOW - timedelta(days=7),
) -> Work:
    work = Work(HERE, fetched=0.0)
    decisions = Decisions(
        cutoff=cutoff.timestamp(), partitions=PARTITIONS, rules_of=lambda _: rules
    )
    for offset, value in enumerate(values):
        decide_event(_record(value, offset=offset), ledger or Ledger(), work, decisions)
    return work


def test_an_update_keeps_booked_at_and_the_batch_sees_its_own_states() -> None:
    first = _event(1, occurred_at="2026-11-20T10:00:00+01:00")
    second = _event(2, occurred_at="2026-11-21T10:00:00+01:00", status="cancelled")
    work = _decide([first, second, first])
    assert [key for key, _ in work.states] == [b"01054321/A-2026-118734"] * 2
    last = Appointment.model_validate_json(work.states[-1][1] or b"")
    assert last.status == "cancelled"
    assert last.booked_at == datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    assert work.results == {("medicom", "accepted"): 2, ("medicom", "stale"): 1}
    assert work.pending["01054321/A-2026-118734"].sequence == 2


def test_the_ledger_and_the_batch_in_flight_are_consulted() -> None:
    ledger = Ledger()
    earlier = _decide([_event(3)])
    ledger.update(earlier.pending)
    assert _decide([_event(2)], ledger).results == {("medicom", "stale"): 1}
    work = Work(HERE, fetched=0.0, earlier=earlier.pending)
    decisions = Decisions(cutoff=0.0, partitions=PARTITIONS, rules_of=lambda _: None)
    decide_event(_record(_event(3)), Ledger(), work, decisions)
    assert work.results == {("medicom", "duplicate"): 1}


def test_refused_and_expired_events_write_nothing() -> None:
    work = _decide(
        [b"nope", _event(1, status="gone"), None],
        cutoff=NOW,
    )
    assert work.states == []
    assert [letter.reason for letter in work.event_letters] == [
        "not_json",
        "unknown_status",
        "no_value",
    ]
    assert [letter.source_offset for letter in work.event_letters] == [0, 1, 2]
    assert work.results == {("other", "invalid"): 2, ("medicom", "invalid"): 1}
    expired = _decide([_event(1)], cutoff=datetime(2027, 1, 1, tzinfo=UTC))
    assert expired.states == [] and expired.results == {("medicom", "expired"): 1}


def test_meetings_are_classified_with_the_practices_rules_and_counted() -> None:
    rules = MeetingRules(agenda_ids=["AG-JANSEN"])
    work = _decide([_event(1)], rules=rules)
    state = Appointment.model_validate_json(work.states[0][1] or b"")
    assert (state.meeting.rule, state.meeting.matched) == ("agenda_id", "AG-JANSEN")
    assert work.meetings == {"agenda_id": 1}


def test_fhir_records_are_recognised_by_their_header() -> None:
    resource = (EXAMPLES / "appointment-fhir.json").read_bytes()
    work = Work(HERE, fetched=0.0)
    decisions = Decisions(cutoff=0.0, partitions=PARTITIONS, rules_of=lambda _: None)
    fhir = [("content-type", b"application/fhir+json")]
    decide_event(_record(resource, headers=fhir), Ledger(), work, decisions)
    decide_event(_record(resource, headers=fhir, offset=1), Ledger(), work, decisions)
    assert work.results == {("medicom", "accepted"): 1, ("medicom", "duplicate"): 1}


def test_only_invalid_configs_become_dead_letters() -> None:
    work = Work(HERE, fetched=0.0)
    valid = encode(PracticeConfig(practice_id=PRACTICE, name="De Linde"))
    topic = "practice.config.v1"
    decide_config(_record(valid, topic=topic), work)
    decide_config(_record(None, topic=topic), work)  # a tombstone: defaults
    decide_config(_record(valid, key=b"01000017", topic=topic), work)
    decide_config(_record(b'{"practice_id": "01054321"}', topic=topic), work)
    assert [letter.reason for letter in work.config_letters] == ["key_mismatch", "invalid_config"]
