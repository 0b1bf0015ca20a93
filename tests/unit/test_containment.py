"""Issue 12: one bad record never stops a consumer (services.common.containment).

A record whose processing raises for a reason about the record goes to the DLQ with
``processing_failed``, the exception's class and a scrubbed message, and the partition
goes on; broker and I/O errors propagate. /healthz fails once a processing loop died.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiokafka import ConsumerRecord
from aiokafka.errors import KafkaConnectionError

from services.booking_events import batch
from services.booking_events.batch import Decisions, Work, decide_config, decide_event
from services.booking_events.ledger import Ledger
from services.common.containment import PROCESSING_FAILED, contain, record_error, scrub
from services.common.health import HealthServer, loops_alive
from services.common.settings import KafkaSettings
from services.common.table import TopicFollower
from services.domain.codec import DecodeError
from services.domain.partition import partition_for

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "his"
PRACTICE = "01054321"
PARTITIONS = 3
HERE = partition_for(PRACTICE, PARTITIONS)
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def _record(value: bytes | None, *, topic: str = "his.appointments.v1", offset: int = 0) -> Any:
    return ConsumerRecord(
        topic=topic,
        partition=HERE,
        offset=offset,
        timestamp=int(NOW.timestamp() * 1000),
        timestamp_type=0,
        key=PRACTICE.encode(),
        value=value,
        checksum=None,
        serialized_key_size=8,
        serialized_value_size=len(value or b""),
        headers=[],
    )


def _event(sequence: int) -> bytes:
    data = json.loads((EXAMPLES / "appointment-native.json").read_text())
    data.update(event_id=str(uuid.uuid4()), sequence=sequence)
    return json.dumps(data).encode()


def _decide(values: list[bytes]) -> Work:
    work = Work(HERE, fetched=0.0)
    decisions = Decisions(
        cutoff=(NOW - timedelta(days=7)).timestamp(), partitions=PARTITIONS, rules_of=lambda _: None
    )
    for offset, value in enumerate(values):
        decide_event(_record(value, offset=offset), Ledger(), work, decisions)
    return work


def test_an_unexpected_error_dead_letters_the_record_and_the_batch_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = {"n": 0}
    real = batch.classify

    def flaky(*args: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 1:
            raise ValueError("invalid literal for int() with base 10: '123456782'")
        return real(*args)

    monkeypatch.setattr(batch, "classify", flaky)
    work = _decide([_event(1), _event(2)])
    (letter,) = work.event_letters
    assert letter.reason == PROCESSING_FAILED
    assert letter.source_offset == 0
    assert "ValueError" in letter.detail and "123456782" not in letter.detail
    assert len(work.states) == 1  # the next record was processed


def test_infrastructure_errors_are_not_contained(monkeypatch: pytest.MonkeyPatch) -> None:
    def down(*args: Any) -> Any:
        raise KafkaConnectionError("broker gone")

    monkeypatch.setattr(batch, "classify", down)
    with pytest.raises(KafkaConnectionError):
        _decide([_event(1)])
    monkeypatch.setattr(batch, "classify", lambda *a: (_ for _ in ()).throw(OSError("disk")))
    with pytest.raises(OSError):
        _decide([_event(1)])


def test_a_config_whose_check_raises_unexpectedly_is_dead_lettered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: Any) -> Any:
        raise TypeError("can't compare offset-naive and offset-aware times")

    monkeypatch.setattr(batch, "validate_practice_config", broken)
    work = Work(HERE, fetched=0.0)
    decide_config(_record(b"{}", topic="practice.config.v1"), work)
    (letter,) = work.config_letters
    assert letter.reason == PROCESSING_FAILED and "TypeError" in letter.detail


async def test_a_table_follower_contains_an_unexpected_error_in_apply() -> None:
    invalid: list[DecodeError] = []

    def apply(partition: int, key: str, value: bytes | None, record: Any) -> None:
        raise OverflowError("date value out of range")

    async def on_invalid(record: Any, error: DecodeError) -> None:
        invalid.append(error)

    follower = TopicFollower(KafkaSettings(), "appointments.v1", apply, on_invalid=on_invalid)
    await follower._apply_record(0, _record(b"{}", topic="appointments.v1"))
    assert [e.reason for e in invalid] == [PROCESSING_FAILED]
    assert "OverflowError" in invalid[0].detail


def test_scrub_keeps_no_values_addresses_or_bsns() -> None:
    text = scrub("bad 'Jan Jansen' <jan@example.org> 123456782 \"x\"\nline")
    assert "Jansen" not in text and "@" not in text and "123456782" not in text
    assert "\n" not in text
    assert isinstance(contain("t", int, "²"), DecodeError)
    assert record_error(DecodeError("not_json", "x")).reason == "not_json"


async def test_healthz_fails_once_a_processing_loop_has_died() -> None:
    loops: dict[str, BaseException | None] = {"booking-events": None}
    server = HealthServer(
        host="127.0.0.1",
        port=0,
        readiness=lambda: (True, {}),
        liveness=lambda: loops_alive(loops),
    )
    await server.start()
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{server.url}/healthz") as response:
                assert response.status == 200
            loops["booking-events"] = RuntimeError("stopped")
            async with session.get(f"{server.url}/healthz") as response:
                assert response.status == 503
                body = await response.json()
                assert body["status"] == "dead"
                assert body["stopped"] == {"booking-events": "RuntimeError"}
    finally:
        await server.stop()
