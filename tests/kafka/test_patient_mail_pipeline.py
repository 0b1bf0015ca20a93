"""The patient's side of the reminder mail, end to end against the real broker.

The notifier runs with DKIM on and sends to the SMTP sink; the one-click router runs in
a real HTTPS server (uvicorn, a test CA) on loopback, reading and writing the real
``patient.preferences.v1``. Read back from the sink, each mail verifies with dkimpy
against the public key, its calendar part gives the appointment's local start in
Europe/Amsterdam on both sides of the 2027-03-28 change, and the one-click URL in its
``List-Unsubscribe`` switches the patient's reminders off: the next reminder of that
patient is suppressed with ``no_consent``. GET and a tampered token change nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import email
import email.policy
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import dkim
import httpx
import pytest
import trustme
import uvicorn
from aiokafka import AIOKafkaProducer, TopicPartition
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI
from icalendar import Calendar

from devkit.sinks.smtp_sink import ReceivedMessage, SmtpSink
from schemas.models import Appointment, Outcome, PatientPreferences, appointment_key
from schemas.topics import Topics
from services.common.kafka import make_consumer, make_producer
from services.common.settings import (
    AdminSettings,
    KafkaSettings,
    MetricsSettings,
    NotifierSettings,
    Settings,
    SmtpSettings,
)
from services.domain.codec import encode
from services.domain.partition import partition_for
from services.notifier.app import NotifierService
from services.notifier.dkim import dns_record, load_dkim_key
from services.notifier.samples import (
    sample_appointment,
    sample_config,
    sample_due,
    sample_preferences,
)
from services.practice_admin.unsubscribe import install, open_kafka_patient_links

pytestmark = pytest.mark.kafka

AMS = ZoneInfo("Europe/Amsterdam")
PRACTICE = "01054321"
PATIENT = "pt-7c2e9a"
DKIM_DOMAIN = "delinde.example.org"


async def _wait_for(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def _read(kafka: KafkaSettings, topic: str, expect: int, timeout: float = 60.0) -> list[Any]:
    """Committed records of a topic, once at least ``expect`` are there."""
    consumer = make_consumer(kafka, group_id=None)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(kafka.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        records: list[Any] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for batch in (await consumer.getmany(timeout_ms=200)).values():
                records.extend(batch)
            ends = await consumer.end_offsets(tps)
            done = all([await consumer.position(tp) >= ends[tp] for tp in tps])
            if done and len(records) >= expect:
                return records
        return records
    finally:
        await consumer.stop()


@contextlib.asynccontextmanager
async def _https_server(app: FastAPI, cert: str, key: str) -> AsyncIterator[int]:
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=0,
        ssl_certfile=cert,
        ssl_keyfile=key,
        log_level="warning",
        lifespan="off",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        await _wait_for(lambda: server.started, "the HTTPS server", timeout=20)
        port: int = server.servers[0].sockets[0].getsockname()[1]
        yield port
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10)


def _messages(sink: SmtpSink) -> list[ReceivedMessage]:
    return list(sink.messages)


def _parsed(raw: bytes) -> EmailMessage:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    return msg


def _calendar_start(msg: EmailMessage) -> datetime:
    [part] = [p for p in msg.walk() if p.get_content_type() == "text/calendar"]
    assert part.get_param("method") == "PUBLISH"
    payload = part.get_payload(decode=True)
    assert isinstance(payload, bytes)
    calendar = Calendar.from_ical(payload)
    [event] = calendar.walk("VEVENT")
    assert event["dtstart"].params["TZID"] == "Europe/Amsterdam"
    assert [str(tz["tzid"]) for tz in calendar.walk("VTIMEZONE")] == ["Europe/Amsterdam"]
    start = event.decoded("dtstart")
    assert isinstance(start, datetime)
    return start


async def test_dkim_calendar_and_one_click_unsubscribe_through_the_running_pipeline(
    kafka_topics: Topics, kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    topics = kafka_topics
    # DKIM key and the public half as the DNS would answer it.
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    key_file = tmp_path / "dkim.pem"
    key_file.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    # HTTPS for practice-admin, so the mail carries the RFC 8058 one-click header.
    ca = trustme.CA()
    issued = ca.issue_cert("127.0.0.1")
    cert, tls_key, ca_file = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    issued.cert_chain_pems[0].write_to_path(str(cert))
    issued.private_key_pem.write_to_path(str(tls_key))
    ca.cert_pem.write_to_path(str(ca_file))
    client_tls = ssl.create_default_context(cafile=str(ca_file))

    producer: AIOKafkaProducer = make_producer(kafka_settings)
    await producer.start()

    async def publish(topic: str, key: str, value: bytes) -> None:
        partition = partition_for(PRACTICE, kafka_settings.partitions)
        await producer.send_and_wait(topic, value=value, key=key.encode(), partition=partition)

    now = datetime.now(UTC)
    config = sample_config(PRACTICE, sender={"email": f"noreply@{DKIM_DOMAIN}", "name": "De Linde"})
    prefs = sample_preferences(
        PRACTICE, PATIENT, updated_at=now - timedelta(days=2), email="patient@example.org"
    )
    before = sample_appointment(
        PRACTICE, "appt-before", start=datetime(2027, 3, 26, 9, 30, tzinfo=AMS), patient_id=PATIENT
    )
    after = sample_appointment(
        PRACTICE, "appt-after", start=datetime(2027, 3, 29, 9, 30, tzinfo=AMS), patient_id=PATIENT
    )
    later = sample_appointment(
        PRACTICE, "appt-later", start=datetime(2027, 4, 6, 14, 0, tzinfo=AMS), patient_id=PATIENT
    )
    await publish(topics.practice_config, PRACTICE, encode(config))
    await publish(topics.patient_preferences, prefs.key, encode(prefs))
    for appointment in (before, after, later):
        await publish(topics.appointments, appointment.key, encode(appointment))

    admin_settings = AdminSettings(secret_key="pipeline-test-secret")  # type: ignore[arg-type]
    app = FastAPI()
    try:
        async with open_kafka_patient_links(
            Settings(kafka=kafka_settings, admin=admin_settings)
        ) as links:
            install(app, links)
            async with _https_server(app, str(cert), str(tls_key)) as port:
                public_url = f"https://127.0.0.1:{port}"
                with SmtpSink() as sink:
                    smtp = SmtpSettings(
                        host="127.0.0.1",
                        port=sink.port,
                        security="none",
                        timeout=2.0,
                        message_id_domain="reminders.example.org",
                        dkim_domain=DKIM_DOMAIN,
                        dkim_selector="rem2027",
                        dkim_private_key_file=str(key_file),
                    )
                    settings = Settings(
                        kafka=kafka_settings,
                        smtp=smtp,
                        metrics=MetricsSettings(port=0),
                        notifier=NotifierSettings(
                            batch_size=5, session_timeout_ms=6000, heartbeat_interval_ms=500
                        ),
                        admin=admin_settings.model_copy(update={"public_url": public_url}),
                    )
                    service = NotifierService(settings)
                    await service.start()
                    try:
                        await _run_the_story(
                            settings,
                            topics,
                            sink,
                            publish,
                            client_tls,
                            public_url,
                            (before, after, later),
                            prefs,
                        )
                    finally:
                        await service.stop()
    finally:
        await producer.stop()


async def _run_the_story(
    settings: Settings,
    topics: Topics,
    sink: SmtpSink,
    publish: Callable[[str, str, bytes], Awaitable[None]],
    client_tls: ssl.SSLContext,
    public_url: str,
    appointments: tuple[Appointment, Appointment, Appointment],
    prefs: PatientPreferences,
) -> None:
    before, after, later = appointments
    kafka = settings.kafka
    fired = datetime.now(UTC)
    for appointment in (before, after):
        due = sample_due(appointment, fired_at=fired)
        await publish(
            topics.reminders_due,
            appointment_key(due.practice_id, due.appointment_id),
            encode(due),
        )
    await _wait_for(lambda: len(_messages(sink)) >= 2, "two reminder mails")

    key = load_dkim_key(settings.smtp)
    assert key is not None
    name, record = dns_record(key)

    def dns(query: bytes, timeout: int = 5) -> bytes:
        assert query.decode().rstrip(".") == name
        return record.encode()

    starts: dict[str, datetime] = {}
    urls: set[str] = set()
    for received in _messages(sink):
        # DKIM: the bytes as the sink got them verify against the public key.
        assert received.raw.startswith(b"DKIM-Signature: v=1; a=rsa-sha256;")
        assert dkim.verify(received.raw, dnsfunc=dns), "DKIM does not verify"
        msg = _parsed(received.raw)
        assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        header = str(msg["List-Unsubscribe"])
        assert header.startswith(f"<{public_url}/u/") and header.endswith(">")
        assert "patient@example.org" not in header
        urls.add(header[1:-1])
        body = msg.get_body(("plain",))
        assert body is not None and "https://portaal.example.org/voorkeuren" in body.get_content()
        start = _calendar_start(msg)
        starts[start.astimezone(UTC).isoformat()] = start

    # The calendar: 09:30 local on both sides of the change, 08:30 and 07:30 UTC.
    assert sorted(starts) == ["2027-03-26T08:30:00+00:00", "2027-03-29T07:30:00+00:00"]
    for start in starts.values():
        assert (start.hour, start.minute) == (9, 30)
        assert start.utcoffset() in (timedelta(hours=1), timedelta(hours=2))

    url = sorted(urls)[0]
    prefs_topic = topics.patient_preferences
    assert len(await _read(kafka, prefs_topic, expect=1)) == 1

    async with httpx.AsyncClient(verify=client_tls, timeout=20) as client:
        # GET: a page with one button, nothing written.
        page = await client.get(url)
        assert page.status_code == 200 and 'name="List-Unsubscribe"' in page.text
        # A tampered token: refused, nothing written.
        tampered = url[:-3] + ("AAA" if not url.endswith("AAA") else "BBB")
        refused = await client.post(tampered, data={"List-Unsubscribe": "One-Click"})
        assert refused.status_code == 400
        await asyncio.sleep(0.5)
        assert len(await _read(kafka, prefs_topic, expect=1)) == 1

        # The one-click POST as a mail client sends it.
        done = await client.post(url, data={"List-Unsubscribe": "One-Click"})
        assert done.status_code == 200, done.text
        records = await _read(kafka, prefs_topic, expect=2)
        assert len(records) == 2
        switched = PatientPreferences.model_validate_json(records[-1].value)
        assert records[-1].key == prefs.key.encode()
        assert switched.reminders is False
        assert switched.email == prefs.email and switched.language == prefs.language

        # A second POST is a no-op.
        again = await client.post(url, data={"List-Unsubscribe": "One-Click"})
        assert again.status_code == 200
        await asyncio.sleep(0.5)
        assert len(await _read(kafka, prefs_topic, expect=2)) == 2

    # The next reminder of that patient: suppressed with no_consent, no mail.
    due = sample_due(later, fired_at=datetime.now(UTC))
    await publish(
        topics.reminders_due, appointment_key(due.practice_id, due.appointment_id), encode(due)
    )
    outcomes = [
        Outcome.model_validate_json(r.value) for r in await _read(kafka, topics.outcomes, expect=3)
    ]
    by_id = {o.reminder_id: o for o in outcomes}
    assert by_id[due.reminder_id].status == "suppressed"
    assert by_id[due.reminder_id].reason == "no_consent"
    assert len(_messages(sink)) == 2


async def test_practice_admin_serves_the_patient_links(
    kafka_topics: Topics, kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    """The router as practice-admin installs it: its app, its security headers."""
    from services.common.patient_links import PatientLinkSigner
    from services.practice_admin.app import AdminService

    prefs = sample_preferences(PRACTICE, PATIENT, updated_at=datetime.now(UTC))
    producer = make_producer(kafka_settings)
    await producer.start()
    try:
        await producer.send_and_wait(
            kafka_topics.patient_preferences,
            key=prefs.key.encode(),
            value=encode(prefs),
            partition=partition_for(PRACTICE, kafka_settings.partitions),
        )
    finally:
        await producer.stop()
    settings = Settings(
        kafka=kafka_settings,
        database={"url": f"sqlite+aiosqlite:///{tmp_path / 'admin.sqlite3'}"},  # type: ignore[arg-type]
        admin=AdminSettings(secret_key="admin-wiring-secret"),  # type: ignore[arg-type]
    )
    service = AdminService(settings)
    try:
        await service._start_patient_links()
        token = PatientLinkSigner("admin-wiring-secret").issue(PRACTICE, PATIENT, datetime.now(UTC))
        transport = httpx.ASGITransport(app=service.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            page = await client.get(f"/u/{token}")
            assert page.status_code == 200 and 'name="List-Unsubscribe"' in page.text
            assert page.headers["x-content-type-options"] == "nosniff"
            done = await client.post(f"/u/{token}", data={"List-Unsubscribe": "One-Click"})
            assert done.status_code == 200
        records = await _read(kafka_settings, kafka_topics.patient_preferences, expect=2)
        assert PatientPreferences.model_validate_json(records[-1].value).reminders is False
    finally:
        await service.stop()
