"""The notifier against the real broker, a real SMTP server (aiosmtpd, plain and STARTTLS
with a test CA) and a loopback Web Push service that checks VAPID and decrypts.

Records are published straight onto the topics (no scheduler or booking_events needed).
The restart test runs the notifier in a subprocess that dies (``os._exit``) right after
the mail server accepted a message and before the batch's transaction commits: the one
window no protocol closes. It is also this file's ``__main__``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import trustme
from aiokafka import AIOKafkaProducer, TopicPartition
from babel.dates import format_date

from devkit.sinks.push_sink import PushSink
from devkit.sinks.smtp_sink import SmtpSink
from schemas.models import (
    Appointment,
    Outcome,
    PatientPreferences,
    PracticeConfig,
    ReminderDue,
    appointment_key,
)
from schemas.topics import Topics
from services.common.kafka import admin_client, make_consumer, make_producer
from services.common.settings import (
    KafkaSettings,
    MetricsSettings,
    NotifierSettings,
    PushSettings,
    Settings,
    SmtpSettings,
)
from services.domain.codec import encode
from services.domain.mime import ComposedMail
from services.domain.partition import partition_for
from services.notifier.app import NotifierService, smtp_options
from services.notifier.email import SmtpPool, message_id_for
from services.notifier.ledger import DUE_OFFSET_HEADER, InFlight, parse_inflight
from services.notifier.push import PushSubscription, generate_vapid_keys
from services.notifier.samples import (
    sample_appointment,
    sample_config,
    sample_due,
    sample_preferences,
)

pytestmark = pytest.mark.kafka

ROOT = Path(__file__).resolve().parents[2]
DOMAIN = "reminders.example.org"
URGENT_NL = "Heeft u een spoedeisende vraag? Bel dan de praktijk: 020-1234567."
URGENT_EN = "Urgent question? Call the practice: 020-1234567."


# --------------------------------------------------------------------------- helpers


def _settings(
    kafka: KafkaSettings, smtp: SmtpSettings, vapid_key: str, **notifier: Any
) -> Settings:
    base: dict[str, Any] = {
        "batch_size": 5,
        "max_attempts": 3,
        "retry_base_seconds": 0.05,
        "retry_max_seconds": 0.2,
        "outage_backoff_seconds": 0.2,
        "outage_backoff_max_seconds": 0.5,
        "drain_seconds": 5.0,
        "session_timeout_ms": 6000,
        "heartbeat_interval_ms": 500,
    }
    base.update(notifier)
    return Settings(
        kafka=kafka,
        smtp=smtp.model_copy(update={"message_id_domain": DOMAIN}),
        push=PushSettings(
            vapid_private_key=vapid_key,  # type: ignore[arg-type]
            vapid_subject="mailto:beheer@reminders.example.org",
            allow_insecure_loopback=True,
        ),
        metrics=MetricsSettings(port=0),
        notifier=NotifierSettings(**base),
    )


def _plain_smtp(sink: SmtpSink) -> SmtpSettings:
    return SmtpSettings(host="127.0.0.1", port=sink.port, security="none", timeout=2.0)


@dataclass
class World:
    """Publishes the records the notifier joins, and reads back what it committed."""

    kafka: KafkaSettings
    producer: AIOKafkaProducer
    topics: Topics
    dues: list[ReminderDue] = field(default_factory=list)

    def _partition(self, practice_id: str) -> int:
        return partition_for(practice_id, self.kafka.partitions)

    async def _send(self, topic: str, key: str, value: bytes | None, practice_id: str) -> None:
        await self.producer.send_and_wait(
            topic, value=value, key=key.encode(), partition=self._partition(practice_id)
        )

    async def config(self, config: PracticeConfig) -> None:
        await self._send(
            self.topics.practice_config, config.practice_id, encode(config), config.practice_id
        )

    async def appointment(self, appointment: Appointment) -> None:
        await self._send(
            self.topics.appointments, appointment.key, encode(appointment), appointment.practice_id
        )

    async def preferences(self, prefs: PatientPreferences) -> None:
        await self._send(
            self.topics.patient_preferences, prefs.key, encode(prefs), prefs.practice_id
        )

    async def due(self, due: ReminderDue) -> None:
        self.dues.append(due)
        key = appointment_key(due.practice_id, due.appointment_id)
        await self._send(self.topics.reminders_due, key, encode(due), due.practice_id)

    async def raw(self, topic: str, key: bytes | None, value: bytes, partition: int) -> None:
        await self.producer.send_and_wait(topic, value=value, key=key, partition=partition)

    async def read(
        self, topic: str, *, expect: int | None = None, timeout: float = 60.0
    ) -> list[Any]:
        """Committed records of a topic from the beginning: all there are now, or (with
        `expect`) once at least that many are there, waiting up to `timeout`."""
        consumer = make_consumer(self.kafka, group_id=None)
        await consumer.start()
        try:
            tps = [TopicPartition(topic, p) for p in range(self.kafka.partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            ends = await consumer.end_offsets(tps)
            records: list[Any] = []
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                for batch in (await consumer.getmany(timeout_ms=200)).values():
                    records.extend(batch)
                behind = [tp for tp in tps if await consumer.position(tp) < ends[tp]]
                if not behind and (expect is None or len(records) >= expect):
                    return records
                if not behind:  # more may be committed any moment
                    ends = await consumer.end_offsets(tps)
            return records
        finally:
            await consumer.stop()

    async def outcomes(
        self, *, expect: int | None = None, timeout: float = 60.0
    ) -> list[tuple[Outcome, tuple[int, int]]]:
        """Committed outcomes with the due offset they answer (all now, or once `expect`)."""
        records = await self.read(self.topics.outcomes, expect=expect, timeout=timeout)
        result = []
        for record in records:
            offset = next(int(v) for k, v in record.headers if k == DUE_OFFSET_HEADER)
            # The outcome lands on the partition of the due record it answers.
            result.append((Outcome.model_validate_json(record.value), (record.partition, offset)))
        return result


@pytest.fixture
async def world(kafka_topics: Topics, kafka_settings: KafkaSettings) -> AsyncIterator[World]:
    producer = make_producer(kafka_settings)
    await producer.start()
    try:
        yield World(kafka_settings, producer, kafka_topics)
    finally:
        await producer.stop()


@pytest.fixture(scope="module")
def vapid_key() -> str:
    return generate_vapid_keys()[0]


@dataclass(frozen=True)
class Tls:
    ca: str
    cert: str
    key: str


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    folder = tmp_path_factory.mktemp("notifier-tls")
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    cert.cert_chain_pems[0].write_to_path(str(folder / "cert.pem"))
    cert.private_key_pem.write_to_path(str(folder / "key.pem"))
    return Tls(str(folder / "ca.pem"), str(folder / "cert.pem"), str(folder / "key.pem"))


@pytest.fixture
def smtp_sink() -> Iterator[SmtpSink]:
    with SmtpSink() as sink:
        yield sink


@pytest.fixture
async def push_sink() -> AsyncIterator[PushSink]:
    async with PushSink() as sink:
        yield sink


@contextlib.asynccontextmanager
async def running(service: NotifierService) -> AsyncIterator[NotifierService]:
    await service.start()
    try:
        yield service
    finally:
        await service.stop()


async def wait_for(check: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        await asyncio.sleep(0.05)


def _sub_record(sub: PushSubscription) -> dict[str, Any]:
    return {"endpoint": sub.endpoint, "keys": {"p256dh": sub.p256dh, "auth": sub.auth}}


def _text_of(msg: EmailMessage) -> str:
    part = msg.get_body(preferencelist=("plain",))
    assert part is not None
    return str(part.get_content())  # type: ignore[attr-defined]


def _html_of(msg: EmailMessage) -> str:
    part = msg.get_body(preferencelist=("html",))
    assert part is not None
    return str(part.get_content())  # type: ignore[attr-defined]


def _metric(name: str, **labels: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value(name, labels) or 0.0


def _practice_ids(kafka: KafkaSettings, count: int, first: int = 0) -> list[str]:
    """`count` practice ids spread over the partitions, one per partition in turn."""
    buckets: dict[int, list[str]] = {p: [] for p in range(kafka.partitions)}
    per_partition = -(-count // kafka.partitions)
    n = first
    while any(len(b) < per_partition for b in buckets.values()):
        practice = f"{n:08d}"
        n += 1
        bucket = buckets[partition_for(practice, kafka.partitions)]
        if len(bucket) < per_partition:
            bucket.append(practice)
    spread = [b[i] for i in range(per_partition) for b in buckets.values()]
    return spread[:count]


# --------------------------------------------------------------------------- every outcome


@dataclass
class Case:
    name: str
    due: ReminderDue
    status: str
    reason: str | None = None
    channel: str | None = None
    email: str | None = None  # the address a mail must reach
    push: PushSubscription | None = None


async def test_every_decision_end_to_end_with_starttls_and_web_push(
    world: World,
    kafka_settings: KafkaSettings,
    tls: Tls,
    vapid_key: str,
    push_sink: PushSink,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="services")
    now = datetime.now(UTC)
    start = (now + timedelta(days=1)).replace(second=0, microsecond=0)
    practice, off, only_flu = _practice_ids(kafka_settings, 3)[:3]
    await world.config(sample_config(practice))
    # A config whose template uses a loop is refused: the last valid one stays in force.
    bad_template = {"default": {"nl": {"subject": "{% for x in practice %}x{% endfor %}"}}}
    await world.config(sample_config(practice, templates=bad_template, version=2))
    # Switched off after the reminders were scheduled: the latest config decides.
    await world.config(sample_config(off))
    await world.config(sample_config(off, reminders_enabled=False, version=2))
    flu = {"label": "Griepprik", "with_whom": "de assistent", "instructions": ""}
    c10 = {"label": "Consult 10 minuten", "with_whom": "de huisarts", "instructions": ""}
    await world.config(
        sample_config(
            only_flu,
            remind_only_types=["GRIEP"],
            appointment_types={"GRIEP": flu, "C10": c10},
        )
    )
    cases: list[Case] = []

    async def case(
        name: str,
        status: str,
        reason: str | None = None,
        *,
        practice_id: str = practice,
        prefs: dict[str, Any] | None = None,
        appointment: dict[str, Any] | None = None,
        state: dict[str, Any] | None = None,
        due: dict[str, Any] | None = None,
        publish_appointment: bool = True,
        channel: str | None = None,
        push: PushSubscription | None = None,
    ) -> Case:
        n = len(cases)
        patient = f"pat-{n}"
        fields = dict(appointment or {})
        appt = sample_appointment(
            practice_id,
            f"appt-{n}",
            start=fields.pop("start", start),
            patient_id=patient,
            **fields,
        )
        the_due = sample_due(appt, fired_at=now, **(due or {}))
        if state is not None:
            appt = appt.model_copy(update=state)
        if publish_appointment:
            await world.appointment(appt)
        if prefs is not None:
            await world.preferences(
                sample_preferences(practice_id, patient, updated_at=now, **prefs)
            )
        email = (prefs or {}).get("email", f"{patient}@patient.example.org")
        sent_by_mail = status == "sent" and channel == "email"
        new = Case(
            name,
            the_due,
            status,
            reason,
            channel,
            email=email if sent_by_mail else None,
            push=push,
        )
        cases.append(new)
        return new

    subs = [push_sink.new_subscription() for _ in range(4)]
    await case("email", "sent", prefs={}, channel="email")
    await case(
        "push only",
        "sent",
        prefs={"email": None, "push_subscriptions": [_sub_record(subs[0])]},
        channel="push",
        push=subs[0],
    )
    await case(
        "both",
        "sent",
        prefs={"push_subscriptions": [_sub_record(subs[1])]},
        channel="email",
        push=subs[1],
    )
    await case("english", "sent", prefs={"language": "en"}, channel="email")
    await case(
        "his texts stay out",
        "sent",
        prefs={},
        channel="email",
        appointment={
            "appointment_type": {"code": "ONB", "display": "BSN 123456782 hoofdpijn"},
            "agenda": {"id": "ag-1", "display": "Spreekuur 111222333"},
        },
    )
    await case("no preferences", "suppressed", "no_consent")
    await case("consent off", "suppressed", "no_consent", prefs={"reminders": False})
    await case("no channel", "suppressed", "no_channel", prefs={"email": None})
    await case(
        "meeting flag",
        "suppressed",
        "patient_discussion",
        prefs={},
        appointment={"meeting": {"is_meeting": True, "rule": "kind", "matched": "meeting"}},
    )
    await case(
        "meeting keyword",
        "suppressed",
        "patient_discussion",
        prefs={},
        appointment={"agenda": {"id": "ag-5", "display": "PaTz-overleg"}},
    )
    await case(
        "information-only",
        "suppressed",
        "patient_discussion",
        prefs={},
        appointment={"patient": {"id": "pat-10", "required": "information-only"}},
    )
    await case("cancelled", "suppressed", "cancelled", prefs={}, state={"status": "cancelled"})
    await case(
        "moved",
        "suppressed",
        "moved",
        prefs={},
        state={"start": start + timedelta(hours=3), "end": start + timedelta(hours=3, minutes=10)},
    )
    await case(
        "not remindable", "suppressed", "not_remindable_type", practice_id=only_flu, prefs={}
    )
    await case(
        "booked recently",
        "suppressed",
        "booked_recently",
        prefs={},
        due={"reason": "booked_recently"},
    )
    await case("too late", "suppressed", "too_late", prefs={}, due={"reason": "too_late"})
    near = now + timedelta(minutes=30)
    await case(
        "less than min lead",
        "suppressed",
        "too_late",
        prefs={},
        appointment={"start": near, "end": near + timedelta(minutes=10)},
    )
    await case("practice off", "suppressed", "reminders_disabled", practice_id=off, prefs={})
    await case("unknown", "suppressed", "unknown_appointment", prefs={}, publish_appointment=False)
    push_sink.gone(PushSink.sub_id_of(subs[2]))
    await case(
        "push gone",
        "failed",
        "subscription_gone",
        prefs={"email": None, "push_subscriptions": [_sub_record(subs[2])]},
        channel="push",
    )
    await case(
        "address refused",
        "failed",
        "invalid_address",
        prefs={"email": "weg@patient.example.org"},
        channel="email",
    )

    # Bad input: a due record that is not JSON, and a preference record that is invalid.
    due_partition = partition_for(practice, kafka_settings.partitions)
    await world.raw(world.topics.reminders_due, b"x/y", b"{not json", due_partition)
    await world.raw(
        world.topics.patient_preferences,
        f"{practice}/pat-bad".encode(),
        b'{"practice_id": "' + practice.encode() + b'", "patient_id": "123456782"}',
        due_partition,
    )
    for c in cases:
        await world.due(c.due)
    # The same reminder once more (a redelivery from upstream): a duplicate, not a mail.
    await world.due(cases[0].due)

    with SmtpSink(cert_file=tls.cert, key_file=tls.key) as sink:
        sink.reject_recipients(["weg@patient.example.org"])
        smtp = SmtpSettings(
            host="127.0.0.1", port=sink.port, security="starttls", ca_file=tls.ca, timeout=5.0
        )
        settings = _settings(kafka_settings, smtp, vapid_key)
        async with running(NotifierService(settings)) as service:
            await world.outcomes(expect=len(cases) + 1)
            await wait_for(service.idle, what="notifier idle")
            assert service.readiness()[0]
        committed = await world.outcomes()  # all of them, after the notifier stopped
        messages = sink.messages

    # Exactly one committed outcome per due record, each with the expected reason.
    by_offset = Counter(where for _, where in committed)
    assert all(count == 1 for count in by_offset.values()), by_offset
    outcomes: dict[str, list[Outcome]] = {}
    for outcome, _ in committed:
        outcomes.setdefault(outcome.reminder_id, []).append(outcome)
    assert len(committed) == len(cases) + 1
    for c in cases:
        got = outcomes[c.due.reminder_id]
        first = got[0]
        assert (first.status, first.reason, first.channel) == (c.status, c.reason, c.channel), (
            c.name,
            first,
        )
    repeat = outcomes[cases[0].due.reminder_id]
    assert [(o.status, o.reason) for o in repeat] == [("sent", None), ("suppressed", "duplicate")]
    assert repeat[1].message_id == repeat[0].message_id

    # One mail per consented patient reachable by mail, none for anyone else.
    expected_mail = {c.email for c in cases if c.email is not None}
    received = [m.rcpt_tos[0] for m in messages]
    assert sorted(received) == sorted(expected_mail)
    for c in cases:
        if c.email is None:
            continue
        (msg,) = [m.message for m in messages if m.rcpt_tos[0] == c.email]
        assert msg["Message-ID"] == message_id_for(c.due.reminder_id, DOMAIN)
        assert outcomes[c.due.reminder_id][0].message_id == msg["Message-ID"]
        assert msg["Auto-Submitted"] == "auto-generated"
        assert "portaal.example.org" in msg["List-Unsubscribe"]
        text, html = _text_of(msg), _html_of(msg)
        language = "en" if c.name == "english" else "nl"
        urgent = URGENT_EN if language == "en" else URGENT_NL
        assert urgent in text and urgent in html
        local = start.astimezone(ZoneInfo("Europe/Amsterdam"))
        words = format_date(local.date(), "EEEE d MMMM y", locale=language)
        assert words in text, (words, text)
        assert local.strftime("%H:%M") in text
        shown = f"{msg['Subject']}\n{text}\n{html}"
        assert not re.search(r"(?<!\d)\d{9}(?!\d)", shown), "a BSN-like number in the mail"
        raw = msg.as_string()
        for secret in ("123456782", "hoofdpijn", "111222333"):
            assert secret not in raw

    # Push: the right subscriptions, decrypted, urgent line, TTL up to the start, topic.
    pushed = {r.sub_id: r for r in push_sink.log}
    for c in cases:
        if c.push is None:
            continue
        record = pushed[PushSink.sub_id_of(c.push)]
        payload = json.loads(record.payload)
        assert URGENT_NL in payload["body"]
        assert 0 < record.ttl <= (start - now).total_seconds() + 1
        assert record.topic is not None
    assert set(pushed) == {PushSink.sub_id_of(c.push) for c in cases if c.push is not None}

    # Dead letters: the broken due record and the invalid preference record.
    due_dlq = await world.read(Topics.dlq(world.topics.reminders_due), expect=1)
    pref_dlq = await world.read(Topics.dlq(world.topics.patient_preferences), expect=1)
    assert len(due_dlq) == 1 and len(pref_dlq) == 1
    assert dict(due_dlq[0].headers)["error-reason"] == b"not_json"
    assert dict(pref_dlq[0].headers)["error-reason"] == b"invalid"

    # No address and no BSN in the logs.
    for record in caplog.records:
        line = record.getMessage() + " " + json.dumps(record.__dict__, default=str)
        assert "patient.example.org" not in line, line
        assert "123456782" not in line, line


# --------------------------------------------------------------------------- outages


async def _consented(world: World, practices: list[str], per_practice: int, now: datetime) -> None:
    start = (now + timedelta(days=1)).replace(microsecond=0)
    for practice in practices:
        await world.config(sample_config(practice))
        for i in range(per_practice):
            patient = f"pat-{i}"
            appt = sample_appointment(practice, f"appt-{i}", start=start, patient_id=patient)
            await world.appointment(appt)
            await world.preferences(sample_preferences(practice, patient, updated_at=now))
            await world.due(sample_due(appt, fired_at=now))


async def test_smtp_down_for_a_while_and_back_delivers_every_message_once(
    world: World, kafka_settings: KafkaSettings, smtp_sink: SmtpSink, vapid_key: str
) -> None:
    now = datetime.now(UTC)
    practices = _practice_ids(kafka_settings, 3)
    smtp_sink.set_down(True)
    await _consented(world, practices, 6, now)
    settings = _settings(kafka_settings, _plain_smtp(smtp_sink), vapid_key)
    retries_before = _metric("reminders_notifier_retries_total", channel="email")
    async with running(NotifierService(settings)) as service:
        await wait_for(
            lambda: any(w.state == "blocked" for w in service.workers.values()),
            what="a partition to block on the outage",
        )
        await asyncio.sleep(1.5)  # several back-off rounds while the server is down
        assert smtp_sink.received_count == 0
        smtp_sink.set_down(False)
        await world.outcomes(expect=len(world.dues))
        await wait_for(service.idle, what="notifier idle")
    committed = await world.outcomes()  # all of them, after the notifier stopped
    assert _metric("reminders_notifier_retries_total", channel="email") > retries_before
    assert [o.status for o, _ in committed] == ["sent"] * len(world.dues)
    ids = Counter(m.message["Message-ID"] for m in smtp_sink.messages)
    assert len(ids) == len(world.dues) and set(ids.values()) == {1}


async def test_a_relay_refusing_every_mail_with_4xx_holds_back_instead_of_failing(
    world: World, kafka_settings: KafkaSettings, smtp_sink: SmtpSink, vapid_key: str
) -> None:
    now = datetime.now(UTC)
    (practice,) = _practice_ids(kafka_settings, 1)
    await _consented(world, [practice], 6, now)
    smtp_sink.fail_next(100_000, 454)  # "throttled": every DATA refused for now
    settings = _settings(kafka_settings, _plain_smtp(smtp_sink), vapid_key)
    async with running(NotifierService(settings)) as service:
        await wait_for(
            lambda: any(w.state == "blocked" for w in service.workers.values()),
            what="the partition to hold back",
        )
        smtp_sink.fail_next(0)
        await world.outcomes(expect=6)
    committed = await world.outcomes()
    assert [o.status for o, _ in committed] == ["sent"] * 6
    assert smtp_sink.received_count == 6


async def test_transient_4xx_is_retried_and_a_blocked_outage_fails_after_the_limit(
    world: World, kafka_settings: KafkaSettings, smtp_sink: SmtpSink, vapid_key: str
) -> None:
    now = datetime.now(UTC)
    (practice,) = _practice_ids(kafka_settings, 1)[:1]
    await _consented(world, [practice], 3, now)
    # A bad preference record: dead-lettered once, not again by the next instance.
    await world.raw(
        world.topics.patient_preferences,
        f"{practice}/pat-x".encode(),
        b"[]",
        partition_for(practice, kafka_settings.partitions),
    )
    smtp_sink.fail_next(2, 451)
    settings = _settings(kafka_settings, _plain_smtp(smtp_sink), vapid_key)
    async with running(NotifierService(settings)):
        first = await world.outcomes(expect=3)
    assert [o.status for o, _ in first] == ["sent"] * 3
    assert smtp_sink.received_count == 3

    # Now the server stays away longer than the (short) outage limit: failed, with a reason.
    smtp_sink.set_down(True)
    appt = sample_appointment(
        practice, "appt-late", start=now + timedelta(days=1), patient_id="pat-0"
    )
    await world.appointment(appt)
    await world.due(sample_due(appt, fired_at=now))
    settings = _settings(kafka_settings, _plain_smtp(smtp_sink), vapid_key, outage_max_seconds=1.0)
    async with running(NotifierService(settings)):
        committed = await world.outcomes(expect=4)
    last = committed[-1][0]
    assert (last.status, last.reason, last.channel) == ("failed", "retries_exhausted", "email")
    assert last.detail is not None and "unreachable" in last.detail
    letters = await world.read(Topics.dlq(world.topics.patient_preferences))
    assert len(letters) == 1


async def test_a_reminder_whose_decision_raises_fails_visibly_and_the_partition_goes_on(
    world: World,
    kafka_settings: KafkaSettings,
    smtp_sink: SmtpSink,
    vapid_key: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A record that passed every check but makes a later stage raise (a bug, not bad
    input): its due record goes to the DLQ with the reason, the practice's log gets a
    failed outcome for it (every due reminder ends in an outcome), and the reminders
    after it in the same partition are still sent."""
    import services.notifier.engine as engine

    real = engine.decide

    def decide(due: ReminderDue, *args: Any, **kwargs: Any) -> Any:
        if due.appointment_id == "appt-1":
            raise RuntimeError("a bug in deciding")
        return real(due, *args, **kwargs)

    monkeypatch.setattr(engine, "decide", decide)
    now = datetime.now(UTC)
    (practice,) = _practice_ids(kafka_settings, 1)
    await _consented(world, [practice], 3, now)
    settings = _settings(kafka_settings, _plain_smtp(smtp_sink), vapid_key)
    async with running(NotifierService(settings)):
        committed = await world.outcomes(expect=3)
        letters = await world.read(Topics.dlq(world.topics.reminders_due), expect=1)
    by_appointment = {o.appointment_id: o for o, _ in committed}
    assert len(committed) == 3
    failed = by_appointment["appt-1"]
    assert (failed.status, failed.reason, failed.channel) == ("failed", "processing_failed", None)
    assert failed.detail == "internal error: RuntimeError"
    assert [by_appointment[a].status for a in ("appt-0", "appt-2")] == ["sent", "sent"]
    assert smtp_sink.received_count == 2
    assert len(letters) == 1
    assert dict(letters[0].headers)["error-reason"] == b"processing_failed"


async def test_a_cancel_published_just_before_the_due_reminder_wins(
    world: World, kafka_settings: KafkaSettings, smtp_sink: SmtpSink, vapid_key: str
) -> None:
    """The state at send time decides: the notifier catches up before every batch.

    (The race this guards against is a few milliseconds wide on one machine, so this
    test shows the behaviour rather than proving the catch-up is there.)
    """
    now = datetime.now(UTC)
    practices = _practice_ids(kafka_settings, 3)
    settings = _settings(kafka_settings, _plain_smtp(smtp_sink), vapid_key)
    start = now + timedelta(days=1)
    async with running(NotifierService(settings)) as service:
        for practice in practices:
            await world.config(sample_config(practice))
        await wait_for(service.idle, what="notifier loaded")
        for n in range(12):
            practice = practices[n % 3]
            appt = sample_appointment(practice, f"appt-{n}", start=start, patient_id=f"p-{n}")
            await world.preferences(sample_preferences(practice, f"p-{n}", updated_at=now))
            await world.appointment(appt)
            due = sample_due(appt, fired_at=now)
            if n % 2:
                await world.appointment(appt.model_copy(update={"status": "cancelled"}))
            else:  # consent withdrawn a moment ago
                await world.preferences(
                    sample_preferences(practice, f"p-{n}", updated_at=now, reminders=False)
                )
            await world.due(due)
        await world.outcomes(expect=12)
    committed = await world.outcomes()  # all of them, after the notifier stopped
    reasons = Counter(o.reason for o, _ in committed)
    assert reasons == {"cancelled": 6, "no_consent": 6}
    assert smtp_sink.received_count == 0


# --------------------------------------------------------------------------- restarts


async def test_a_second_instance_takes_over_without_duplicates(
    world: World, kafka_settings: KafkaSettings, smtp_sink: SmtpSink, vapid_key: str
) -> None:
    now = datetime.now(UTC)
    practices = _practice_ids(kafka_settings, 3)
    settings = _settings(kafka_settings, _plain_smtp(smtp_sink), vapid_key)
    await _consented(world, practices, 4, now)
    first = NotifierService(settings)
    second = NotifierService(settings)
    async with running(first):
        await world.outcomes(expect=len(world.dues))
        async with running(second):
            await wait_for(
                lambda: bool(second.workers), what="the second instance to own a partition"
            )
            await _consented(world, _practice_ids(kafka_settings, 3, first=1000), 4, now)
            await wait_for(lambda: second.idle() and first.idle(), what="both idle")
        # The second left: its partitions move back to the first.
        await _consented(world, _practice_ids(kafka_settings, 3, first=2000), 4, now)
        await world.outcomes(expect=len(world.dues))
    committed = await world.outcomes()  # all of them, after the notifier stopped
    assert Counter(o.reminder_id for o, _ in committed) == Counter(
        d.reminder_id for d in world.dues
    )
    assert all(o.status == "sent" for o, _ in committed)
    ids = Counter(m.message["Message-ID"] for m in smtp_sink.messages)
    assert len(ids) == len(world.dues) and set(ids.values()) == {1}


class _CrashingMail:
    """Dies (like kill -9) right after the server accepted the N-th message."""

    def __init__(self, pool: SmtpPool, crash_after: int) -> None:
        self._pool = pool
        self._left = crash_after

    async def send(self, msg: ComposedMail) -> None:
        await self._pool.send(msg)
        self._left -= 1
        if self._left == 0:
            os._exit(17)

    async def close(self) -> None:
        await self._pool.close()


async def _run_crashing_notifier(crash_after: int) -> None:
    settings = Settings()
    pool = SmtpPool(smtp_options(settings.smtp))
    await pool.start()
    service = NotifierService(settings, smtp=_CrashingMail(pool, crash_after))
    await service.start()
    try:
        await asyncio.Event().wait()
    finally:
        await service.stop()
        await pool.close()


async def test_notifier_killed_mid_batch_resends_only_what_was_in_flight(
    world: World, kafka_settings: KafkaSettings, smtp_sink: SmtpSink, vapid_key: str
) -> None:
    now = datetime.now(UTC)
    practices = _practice_ids(kafka_settings, 3)
    await _consented(world, practices, 8, now)
    batch_size = 5
    settings = _settings(kafka_settings, _plain_smtp(smtp_sink), vapid_key, batch_size=batch_size)
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "REMINDERS_KAFKA__BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
        "REMINDERS_KAFKA__TOPIC_PREFIX": kafka_settings.topic_prefix,
        "REMINDERS_KAFKA__PARTITIONS": str(kafka_settings.partitions),
        "REMINDERS_SMTP__HOST": "127.0.0.1",
        "REMINDERS_SMTP__PORT": str(smtp_sink.port),
        "REMINDERS_SMTP__SECURITY": "none",
        "REMINDERS_SMTP__MESSAGE_ID_DOMAIN": DOMAIN,
        "REMINDERS_NOTIFIER__BATCH_SIZE": str(batch_size),
        "REMINDERS_NOTIFIER__SESSION_TIMEOUT_MS": "6000",
        "REMINDERS_METRICS__PORT": "0",
    }
    crash_after = 7  # inside the second batch of some partition
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(Path(__file__)),
        str(crash_after),
        cwd=str(ROOT),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, stderr = await asyncio.wait_for(proc.communicate(), timeout=90)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode == 17, stderr.decode()[-3000:]
    accepted_before_crash = smtp_sink.received_count
    # Other sends of the same moment may have been accepted too, unbeknown to the notifier.
    assert accepted_before_crash >= crash_after
    committed_before = await world.outcomes()

    duplicates_before = _metric("reminders_notifier_possible_duplicates_total")
    async with running(NotifierService(settings)) as service:
        await world.outcomes(expect=len(world.dues))
        await wait_for(service.idle, what="notifier idle")
    committed = await world.outcomes()  # all of them, after the notifier stopped
    counted = _metric("reminders_notifier_possible_duplicates_total") - duplicates_before

    # Every reminder delivered, and exactly one committed outcome per reminder.
    assert Counter(o.reminder_id for o, _ in committed) == Counter(
        d.reminder_id for d in world.dues
    )
    assert all(o.status == "sent" for o, _ in committed)
    ids = Counter(m.message["Message-ID"] for m in smtp_sink.messages)
    assert len(ids) == len(world.dues)
    duplicated = {mid for mid, n in ids.items() if n > 1}
    assert set(ids.values()) <= {1, 2}
    # Duplicates only from the batch in flight at the crash: accepted, not committed.
    assert len(duplicated) == accepted_before_crash - sum(
        1 for o, _ in committed_before if o.status == "sent"
    )
    window = batch_size * kafka_settings.partitions  # one batch in flight per partition
    assert 0 < len(duplicated) <= window
    # ... each of them counted and flagged on its outcome; the count is an upper bound.
    flagged = {o.message_id for o, _ in committed if o.detail and "possible duplicate" in o.detail}
    assert duplicated <= flagged
    assert len(duplicated) <= counted <= window


class _HoldingMail:
    """Hands messages to the pool; the `hold_at`-th waits until `release` is set."""

    def __init__(self, pool: SmtpPool, hold_at: int) -> None:
        self._pool = pool
        self._left = hold_at
        self.holding = asyncio.Event()
        self.release = asyncio.Event()

    async def send(self, msg: ComposedMail) -> None:
        self._left -= 1
        if self._left == 0:
            self.holding.set()
            await self.release.wait()
        await self._pool.send(msg)

    async def close(self) -> None:
        await self._pool.close()


async def test_the_batch_in_flight_is_marked_on_the_broker_by_the_transaction_before_it(
    world: World, kafka_settings: KafkaSettings, smtp_sink: SmtpSink, vapid_key: str
) -> None:
    now = datetime.now(UTC)
    [practice] = _practice_ids(kafka_settings, 1)
    partition = partition_for(practice, kafka_settings.partitions)
    await _consented(world, [practice], 4, now)  # due offsets 0-3 of one partition
    settings = _settings(kafka_settings, _plain_smtp(smtp_sink), vapid_key, batch_size=2)
    pool = SmtpPool(smtp_options(settings.smtp))
    await pool.start()
    mail = _HoldingMail(pool, hold_at=3)  # the first message of the second batch
    tp = TopicPartition(world.topics.reminders_due, partition)
    service = NotifierService(settings, smtp=mail)
    admin = admin_client(kafka_settings)
    await admin.start()

    async def committed() -> InFlight | tuple[int, str]:
        offset = (await admin.list_consumer_group_offsets(service.group_id, partitions=[tp]))[tp]
        return parse_inflight(offset.offset, offset.metadata) or (offset.offset, offset.metadata)

    try:
        async with running(service):
            await asyncio.wait_for(mail.holding.wait(), 60)
            # The first batch's transaction committed offset 2 with the second batch's
            # marker: while that batch sends, a new owner would know 2-3 may be out. (The
            # group coordinator shows a transaction's offsets once the commit markers are
            # written, a moment after the commit returned.)
            seen = await committed()
            for _ in range(100):
                if seen != InFlight(0, 2):
                    break
                await asyncio.sleep(0.05)
                seen = await committed()
            assert seen == InFlight(2, 4)
            mail.release.set()
            await world.outcomes(expect=4)
            await wait_for(service.idle, what="notifier idle")
        # All answered: the plain offset, no marker left behind.
        assert await committed() == (4, "")
    finally:
        mail.release.set()
        await admin.close()
        await pool.close()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(_run_crashing_notifier(int(sys.argv[1])))
