"""Practice configs and preferences through the real broker, as the CLI publishes them.

What runs here is the services' own table (services/common/practice_config.py on top of
services/common/table.py) while the CLI publishes: a running table sees a config change
without a restart, keeps the last valid config when an invalid one arrives, and hands the
invalid one with its reason to the DLQ owner.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiokafka import ConsumerRecord, TopicPartition

from schemas.models import PatientPreferences, ReminderDue
from schemas.topics import Topics
from services.cli import main
from services.cli.config_cmd import load_document
from services.common.kafka import (
    DeadLetter,
    describe_partitions,
    make_consumer,
    make_producer,
    send_dead_letter,
)
from services.common.practice_config import (
    patient_preferences_table,
    practice_config_table,
    validate_practice_config,
)
from services.common.settings import KafkaSettings
from services.domain.codec import DecodeError, encode
from services.domain.partition import partition_for
from services.domain.render import sample_appointment
from services.notifier.decide import decide

pytestmark = pytest.mark.kafka

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples"
DE_LINDE = EXAMPLES / "practice-01054321-de-linde.yaml"
PRACTICE = "01054321"


def cli(settings: KafkaSettings, *argv: str) -> list[str]:
    return [
        *argv,
        "--bootstrap",
        settings.bootstrap_servers,
        "--topic-prefix",
        settings.topic_prefix,
    ]


async def run_cli(settings: KafkaSettings, *argv: str) -> int:
    # The CLI runs its own event loop (asyncio.run), so it gets a thread of its own.
    return await asyncio.to_thread(main, cli(settings, *argv))


async def eventually(check: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.05)


def write_config(tmp_path: Path, name: str, **changes: Any) -> Path:
    data = load_document(str(DE_LINDE))
    data.update(changes)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return path


async def test_applied_config_reaches_a_running_table_without_restart(
    kafka_settings: KafkaSettings, kafka_topics: Topics, tmp_path: Path
) -> None:
    table = practice_config_table(kafka_settings)
    await table.start()
    try:
        await table.wait_loaded()
        assert table.get(PRACTICE) is None

        assert await run_cli(kafka_settings, "config", "apply", str(DE_LINDE)) == 0
        await eventually(lambda: table.get(PRACTICE) is not None)
        first = table.get(PRACTICE)
        assert first is not None and first.version == 1 and first.phone == "030-1234567"

        # A changed file with the same version number: published as the next version.
        changed = write_config(tmp_path, "changed.yaml", phone="030-7654321")
        assert await run_cli(kafka_settings, "config", "apply", str(changed)) == 0
        await eventually(lambda: getattr(table.get(PRACTICE), "version", 0) == 2)
        second = table.get(PRACTICE)
        assert second is not None and second.phone == "030-7654321"

        # Applying the same content again publishes nothing.
        assert await run_cli(kafka_settings, "config", "apply", str(changed)) == 0
    finally:
        await table.stop()

    # The record is keyed by the practice id, on the practice's partition.
    records = await read_all(kafka_settings, kafka_topics.practice_config)
    assert [(r.key, r.partition) for r in records] == [
        (PRACTICE.encode(), partition_for(PRACTICE, 3)),
        (PRACTICE.encode(), partition_for(PRACTICE, 3)),
    ]


async def test_switching_off_stops_reminders_already_scheduled(
    kafka_settings: KafkaSettings, kafka_topics: Topics, capsys: pytest.CaptureFixture[str]
) -> None:
    table = practice_config_table(kafka_settings)
    await table.start()
    try:
        await table.wait_loaded()
        assert await run_cli(kafka_settings, "config", "apply", str(DE_LINDE)) == 0
        await eventually(lambda: table.get(PRACTICE) is not None)
        config = table.get(PRACTICE)
        assert config is not None and config.reminders_enabled

        # A reminder scheduled while reminders were on, due later.
        now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
        appointment = sample_appointment(config, "C10", now)
        appointment = appointment.model_copy(
            update={"patient": appointment.patient.model_copy(update={"id": "pt-1"})}
        )
        due = ReminderDue(
            reminder_id=appointment.reminder_id,
            practice_id=PRACTICE,
            appointment_id=appointment.appointment_id,
            patient_id="pt-1",
            start=appointment.start,
            sequence=0,
            due_at=appointment.start - timedelta(hours=24),
            fired_at=appointment.start - timedelta(hours=24),
        )
        prefs = PatientPreferences(
            practice_id=PRACTICE,
            patient_id="pt-1",
            reminders=True,
            email="patient@example.org",
            updated_at=now,
        )
        at = due.due_at

        def decision() -> str:
            current = table.get(PRACTICE)
            verdict = decide(due, appointment, current, prefs, now=at, already_sent=False)
            return verdict.reason or verdict.status

        assert decision() == "send"
        capsys.readouterr()
        assert await run_cli(kafka_settings, "config", "reminders", PRACTICE, "off") == 0
        assert "reminders off: practice 01054321" in capsys.readouterr().out
        await eventually(lambda: not getattr(table.get(PRACTICE), "reminders_enabled", True))
        assert decision() == "reminders_disabled"
        assert table.get(PRACTICE).version == 2  # type: ignore[union-attr]

        # Off again: nothing to do. On again: the next version.
        assert await run_cli(kafka_settings, "config", "reminders", PRACTICE, "off") == 0
        assert "already off" in capsys.readouterr().out
        assert await run_cli(kafka_settings, "config", "reminders", PRACTICE, "on") == 0
        await eventually(lambda: getattr(table.get(PRACTICE), "version", 0) == 3)
        assert decision() == "send"
    finally:
        await table.stop()


async def test_switching_on_without_a_phone_is_refused(
    kafka_settings: KafkaSettings, kafka_topics: Topics, capsys: pytest.CaptureFixture[str]
) -> None:
    zeezicht = EXAMPLES / "practice-01999003-zeezicht.yaml"
    assert await run_cli(kafka_settings, "config", "apply", str(zeezicht)) == 0
    capsys.readouterr()
    assert await run_cli(kafka_settings, "config", "reminders", "01999003", "on") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert err.startswith("error: cannot switch reminders on for 01999003: phone is required")
    assert await run_cli(kafka_settings, "config", "reminders", "01999999", "on") == 2
    assert "no config for practice 01999999" in capsys.readouterr().err


INVALID: list[tuple[str, Callable[[dict[str, Any]], Any], str, str]] = [
    ("no phone", lambda d: {**d, "phone": None}, "invalid_config", "phone is required"),
    ("bad zone", lambda d: {**d, "timezone": "Mars/Base"}, "invalid_config", "unknown time zone"),
    (
        "bad time",
        lambda d: {**d, "send": {"policy": "day_before_at", "time": "6 uur"}},
        "invalid_config",
        "send.time must be a time",
    ),
    ("bad channel", lambda d: {**d, "channels": ["sms"]}, "invalid_config", "channels.0"),
    (
        "bad e-mail",
        lambda d: {**d, "sender": {"email": "nope", "name": "x"}},
        "invalid_config",
        "sender.email",
    ),
    (
        "bad template",
        lambda d: {**d, "templates": {"default": {"nl": {"text": "{{ bsn }}"}}}},
        "invalid_config",
        "templates.default.nl.text: line 1: unknown name 'bsn'",
    ),
    (
        "sandbox escape",
        lambda d: {**d, "templates": {"C10": {"en": {"html": "{{ ''.__class__ }}"}}}},
        "invalid_config",
        "reaches outside the template's context",
    ),
    (
        "meeting rule contradiction",
        lambda d: {**d, "remind_only_types": ["C10", "MDO"]},
        "invalid_config",
        "type 'MDO' is both in remind_only_types",
    ),
    ("unknown field", lambda d: {**d, "colour": "red"}, "invalid_config", "unknown field 'colour'"),
    ("not json", lambda d: b"{oops", "not_json", ""),
    (
        "other practice's config",
        lambda d: {**d, "practice_id": "01999002"},
        "key_mismatch",
        "'01999002' differs from '01054321'",
    ),
]


async def test_invalid_configs_are_rejected_with_their_reason_and_the_last_valid_stays(
    kafka_settings: KafkaSettings, kafka_topics: Topics, caplog: pytest.LogCaptureFixture
) -> None:
    topic = kafka_topics.practice_config
    partition = partition_for(PRACTICE, 3)
    producer = make_producer(kafka_settings)
    await producer.start()
    letters: list[DecodeError] = []

    async def to_dlq(record: ConsumerRecord[bytes, bytes], error: DecodeError) -> None:
        letters.append(error)
        await send_dead_letter(producer, DeadLetter.of(record, error))

    table = practice_config_table(kafka_settings, on_invalid=to_dlq)
    caplog.set_level(logging.WARNING, logger="services.common.practice_config")
    try:
        await table.start()
        await table.wait_loaded()
        assert (
            await asyncio.to_thread(main, cli(kafka_settings, "config", "apply", str(DE_LINDE)))
            == 0
        )
        await eventually(lambda: table.get(PRACTICE) is not None)
        good = table.get(PRACTICE)
        base = json.loads(encode(good))  # type: ignore[arg-type]

        for _, mutate, _, _ in INVALID:
            value = mutate({**base, "version": 99})
            raw = value if isinstance(value, bytes) else json.dumps(value).encode()
            await producer.send_and_wait(
                topic, key=PRACTICE.encode(), value=raw, partition=partition
            )
        await eventually(lambda: len(letters) == len(INVALID))
        assert table.get(PRACTICE) == good  # the last valid config stays in force
        for error, (kind, _, reason, detail) in zip(letters, INVALID, strict=True):
            assert error.reason == reason, kind
            assert detail in error.detail, (kind, error.detail)

        dlq = await read_all(kafka_settings, Topics.dlq(topic))
        assert len(dlq) == len(INVALID)
        headers = dict(dlq[0].headers)
        assert headers["error-reason"] == b"invalid_config"
        assert headers["source-topic"] == topic.encode()
        assert b"phone is required" in headers["error-detail"]
        assert all(r.partition == partition and r.key == PRACTICE.encode() for r in dlq)

        # Logged with the reason, never with the record's contents.
        logged = [
            r for r in caplog.records if r.getMessage().startswith("practice config rejected")
        ]
        assert len(logged) == len(INVALID)
        for record in logged:
            assert record.practice_id == PRACTICE  # type: ignore[attr-defined]
            assert "030-1234567" not in json.dumps(record.__dict__, default=str)

        # A valid config after all that is taken again.
        fixed = validate_practice_config({**base, "version": 100, "phone": "030-1111111"})
        await producer.send_and_wait(
            topic, key=PRACTICE.encode(), value=encode(fixed), partition=partition
        )
        await eventually(lambda: getattr(table.get(PRACTICE), "version", 0) == 100)
    finally:
        await table.stop()
        await producer.stop()


async def test_show_prints_the_config_in_force_and_notes_a_rejected_newer_one(
    kafka_settings: KafkaSettings, kafka_topics: Topics, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await run_cli(kafka_settings, "config", "show", PRACTICE) == 1
    assert "no config for practice 01054321" in capsys.readouterr().err
    assert await run_cli(kafka_settings, "config", "apply", str(DE_LINDE)) == 0
    capsys.readouterr()
    assert await run_cli(kafka_settings, "config", "show", PRACTICE) == 0
    shown = capsys.readouterr().out
    assert 'practice_id: "01054321"' in shown
    round_trip = validate_practice_config(yaml.safe_load(shown.replace('"', "'")) | {})
    expected = validate_practice_config(load_document(str(DE_LINDE)))
    assert round_trip == expected

    producer = make_producer(kafka_settings)
    await producer.start()
    try:
        broken = json.dumps({"practice_id": PRACTICE, "name": "x", "reminders_enabled": True})
        await producer.send_and_wait(
            kafka_topics.practice_config,
            key=PRACTICE.encode(),
            value=broken.encode(),
            partition=partition_for(PRACTICE, 3),
        )
    finally:
        await producer.stop()
    assert await run_cli(kafka_settings, "config", "show", PRACTICE, "--format", "json") == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["name"] == "Huisartsenpraktijk De Linde"
    assert "a newer config for 01054321 was rejected" in captured.err
    assert "phone is required" in captured.err


async def test_preview_uses_the_config_in_force(
    kafka_settings: KafkaSettings, kafka_topics: Topics, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await run_cli(kafka_settings, "config", "apply", str(DE_LINDE)) == 0
    capsys.readouterr()
    assert await run_cli(kafka_settings, "preview", PRACTICE, "--type", "BDM", "--lang", "en") == 0
    out = capsys.readouterr().out
    assert out.count("Urgent question? Call the practice: 030-1234567.") == 3
    assert "Bloeddruk meten" in out


async def test_preferences_set_and_delete_reach_a_running_table(
    kafka_settings: KafkaSettings, kafka_topics: Topics
) -> None:
    partition = partition_for(PRACTICE, 3)
    table = patient_preferences_table(kafka_settings)
    await table.start([partition])
    key = f"{PRACTICE}/pt-8f3a2c91"
    try:
        await table.wait_loaded()
        assert (
            await run_cli(
                kafka_settings,
                "preferences",
                "set",
                "--practice",
                PRACTICE,
                "--patient",
                "pt-8f3a2c91",
                "--email",
                "patient.a@example.org",
                "--lang",
                "en",
            )
            == 0
        )
        await eventually(lambda: table.get(key) is not None)
        prefs = table.get(key)
        assert prefs is not None and prefs.reminders and prefs.language == "en"
        assert prefs.email == "patient.a@example.org"

        argv = ["preferences", "set", "--practice", PRACTICE, "--patient", "pt-8f3a2c91"]
        assert await run_cli(kafka_settings, *argv, "--delete") == 0
        await eventually(lambda: table.get(key) is None)

        assert (
            await run_cli(
                kafka_settings, "preferences", "apply", str(EXAMPLES / "preferences.yaml")
            )
            == 0
        )
        await eventually(lambda: table.get(key) is not None)
        assert table.get(f"{PRACTICE}/pt-8f3a2c92").push_subscriptions  # type: ignore[union-attr]
        assert table.get(f"{PRACTICE}/pt-4b7e0d13").reminders is False  # type: ignore[union-attr]
    finally:
        await table.stop()
    records = await read_all(kafka_settings, kafka_topics.patient_preferences)
    for record in records:
        practice = record.key.decode().split("/")[0]
        assert record.partition == partition_for(practice, 3)


async def read_all(settings: KafkaSettings, topic: str) -> list[ConsumerRecord[bytes, bytes]]:
    count = (await describe_partitions(settings, [topic]))[topic]
    consumer = make_consumer(settings, group_id=None)
    await consumer.start()
    try:
        parts = [TopicPartition(topic, p) for p in range(count)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        out: list[ConsumerRecord[bytes, bytes]] = []
        while any([await consumer.position(tp) < ends[tp] for tp in parts]):
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                out.extend(records)
        return sorted(out, key=lambda r: (r.partition, r.offset))
    finally:
        await consumer.stop()
