"""Kafka security for real (issue 14, point 6): a broker with only a SASL_SSL listener
(SCRAM-SHA-512, TLS certificates made for the run), the StandardAuthorizer, one principal
per service with only the ACLs of `reminders acl plan`, applied by `reminders acl apply`.

The pipeline runs end to end with each service on its own principal; an HIS connector
may write his.appointments.v1 and is refused everything else; a wrong password is one
clear line.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import KafkaError, TopicAuthorizationFailedError
from pydantic import SecretStr

from devkit.demo.pipeline import Pipeline, ServiceProcess, free_port
from devkit.demo.workload import generate
from devkit.local_kafka import LocalKafka
from schemas.topics import Topics
from services.common.kafka import explain_unreachable, make_consumer, make_producer
from services.common.kafka_acl import ROLES
from services.common.settings import KafkaSettings
from tests.support.ci import unavailable

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = 2
# scheduler's principal is the role name; the plan's default principal names are the roles.
PASSWORDS = {role: secrets.token_urlsafe(15) for role in ROLES}
_SCRATCH = tempfile.mkdtemp(prefix="secure-kafka-test.")


@pytest.fixture(scope="module")
def secure_kafka() -> Iterator[LocalKafka]:
    broker = LocalKafka(secure=True, users=PASSWORDS)
    try:
        broker.start()
    except Exception as exc:
        message = f"no secured local Kafka broker: {exc}"
        unavailable(message)
    try:
        yield broker
    finally:
        broker.stop()


def _kafka(broker: LocalKafka, user: str, password: str, prefix: str = "") -> KafkaSettings:
    assert broker.bootstrap is not None and broker.ca_file is not None
    return KafkaSettings(
        bootstrap_servers=broker.bootstrap,
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username=user,
        sasl_password=SecretStr(password),
        ssl_cafile=str(broker.ca_file),
        topic_prefix=prefix,
        partitions=PARTITIONS,
        client_id=f"test-{user}",
    )


def _env(kafka: KafkaSettings) -> dict[str, str]:
    assert kafka.sasl_password is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("REMINDERS_")}
    env.update(
        {
            "REMINDERS_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "REMINDERS_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
            "REMINDERS_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
            "REMINDERS_KAFKA__SASL_USERNAME": kafka.sasl_username or "",
            "REMINDERS_KAFKA__SASL_PASSWORD": kafka.sasl_password.get_secret_value(),
            "REMINDERS_KAFKA__SSL_CAFILE": kafka.ssl_cafile or "",
            "REMINDERS_KAFKA__TOPIC_PREFIX": kafka.topic_prefix,
            "REMINDERS_KAFKA__PARTITIONS": str(kafka.partitions),
            # `reminders check` also opens the database: never one in the working tree.
            "REMINDERS_DATABASE__URL": f"sqlite+aiosqlite:///{_SCRATCH}/check.sqlite3",
        }
    )
    return env


def _reminders(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def prefix() -> str:
    return f"s{secrets.token_hex(5)}."


@pytest.fixture
def admin(secure_kafka: LocalKafka, prefix: str) -> KafkaSettings:
    password = secure_kafka.admin_password
    assert password is not None
    return _kafka(secure_kafka, "admin", password, prefix)


@pytest.fixture
def acls_applied(admin: KafkaSettings) -> KafkaSettings:
    """Topics created and every principal's ACLs applied, as an operator would."""
    env = _env(admin)
    created = _reminders("topics", "create", env=env)
    assert created.returncode == 0, created.stderr
    first = _reminders("acl", "apply", env=env)
    assert first.returncode == 0, first.stderr
    again = _reminders("acl", "apply", env=env)
    assert again.returncode == 0, again.stderr
    assert "added" not in again.stdout.replace("0 added", "")  # idempotent
    assert "# notifier: 0 added, " in again.stdout
    return admin


def _as(admin: KafkaSettings, role: str, password: str | None = None) -> KafkaSettings:
    secret = SecretStr(password if password is not None else PASSWORDS[role])
    return admin.model_copy(update={"sasl_username": role, "sasl_password": secret})


async def _seed(admin: KafkaSettings, *topics: str) -> None:
    """One record in partition 0 of each topic, so that reading it can succeed."""
    producer = make_producer(admin)
    await producer.start()
    try:
        for topic in topics:
            await producer.send_and_wait(topic, b"seed", key=b"01054321", partition=0)
    finally:
        await producer.stop()


async def _can_read(kafka: KafkaSettings, topic: str) -> bool:
    """True when the (seeded) record arrives, False when the broker refuses the topic."""
    consumer = make_consumer(kafka, group_id=None)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if topic in consumer._client.cluster.unauthorized_topics:
                return False  # no Describe: metadata refused
            try:
                batch = await consumer.getmany(tp, timeout_ms=500)
            except TopicAuthorizationFailedError:
                return False  # Describe but no Read: the fetch refused
            if batch.get(tp):
                return True
        raise AssertionError(f"{topic}: neither a record nor a refusal in 30 s")
    finally:
        await consumer.stop()


async def _can_write(kafka: KafkaSettings, topic: str) -> bool:
    producer = make_producer(kafka, request_timeout_ms=10_000)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"{}", key=b"01054321", partition=0)
    except TopicAuthorizationFailedError:
        return False
    finally:
        await producer.stop()
    return True


async def test_an_his_connector_writes_his_appointments_and_nothing_else(
    acls_applied: KafkaSettings,
) -> None:
    t = Topics(acls_applied.topic_prefix)
    connector = _as(acls_applied, "his-connector")
    await _seed(acls_applied, t.his_appointments, t.patient_preferences)
    assert await _can_write(connector, t.his_appointments)
    assert not await _can_read(connector, t.patient_preferences)
    assert not await _can_write(connector, t.appointments)
    assert not await _can_read(connector, t.his_appointments)


async def test_only_the_notifier_and_practice_admin_read_patient_preferences(
    acls_applied: KafkaSettings,
) -> None:
    topic = Topics(acls_applied.topic_prefix).patient_preferences
    await _seed(acls_applied, topic)
    readers = {role for role in ROLES if await _can_read(_as(acls_applied, role), topic)}
    assert readers == {"notifier", "practice-admin"}


async def test_a_wrong_password_is_one_clear_line(
    secure_kafka: LocalKafka, acls_applied: KafkaSettings
) -> None:
    wrong = "Wrong-" + PASSWORDS["notifier"]
    kafka = _as(acls_applied, "notifier", wrong)
    reason = await explain_unreachable(kafka, KafkaError("Unable to bootstrap"))
    assert reason == (
        f"Kafka at {kafka.bootstrap_servers} rejected the SASL credentials of user 'notifier' "
        "(SCRAM-SHA-512): check REMINDERS_KAFKA__SASL_USERNAME and REMINDERS_KAFKA__SASL_PASSWORD"
    )
    env = _env(kafka)
    check = _reminders("check", env=env)
    assert check.returncode == 1
    assert check.stdout.splitlines()[0] == f"FAIL  kafka     {reason}"
    assert wrong not in check.stdout + check.stderr
    assert PASSWORDS["notifier"] not in check.stdout + check.stderr


async def test_the_pipeline_runs_end_to_end_each_service_on_its_own_principal(
    acls_applied: KafkaSettings, tmp_path: Path
) -> None:
    started = time.monotonic()
    admin = acls_applied
    pipeline = Pipeline(kafka=admin, out_dir=tmp_path / "pipeline")
    try:
        await pipeline.start_infrastructure()  # topics exist already: left as they are
        workload = generate(
            now=datetime.now(UTC),
            practices=2,
            patients=6,
            appointments=6,
            lead=(10.0, 20.0),
            push_factory=None,
            messy=False,
        )
        as_admin_app = replace(pipeline, kafka=_as(admin, "practice-admin"))
        await as_admin_app.publish_configs(workload.practices)
        await as_admin_app.publish_preferences(workload.preferences)
        await replace(pipeline, kafka=_as(admin, "his-connector")).publish_events(workload.events)
        roles = {
            "booking-events": "booking-events",
            "scheduler": "scheduler",
            "notifier": "notifier",
        }
        for name, role in roles.items():
            port = free_port()
            env = pipeline.service_env(name, port)
            env.update(_env(_as(admin, role)))
            pipeline.services[name] = ServiceProcess(
                name=name,
                env=env,
                log_path=pipeline.out_dir / "logs" / f"{name}.log",
                metrics_port=port,
            )
        pipeline.start_services()
        await pipeline.wait_ready(timeout=120)

        want = workload.expected.count("email")
        assert want > 0
        assert pipeline.smtp is not None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if len(pipeline.smtp.messages) >= want:
                break
            await asyncio.sleep(0.5)
        assert len(pipeline.smtp.messages) == want, pipeline.log_lines()[-20:]
        # A mail reaches the sink before the notifier commits its outcome (the outcome is
        # written in the transaction that follows the send): wait for the outcomes too.
        expected_sent = {r for r, ch in workload.expected.deliveries.items() if "email" in ch}
        sent: set[str] = set()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            outcomes = await pipeline.outcomes()
            sent = {o.reminder_id for o in outcomes if o.status == "sent" and o.channel == "email"}
            if sent >= expected_sent:
                break
            await asyncio.sleep(0.5)
        assert sent == expected_sent
        assert len(pipeline.smtp.messages) == want
        assert not any((await pipeline.dlq_counts()).values())
        logs = "\n".join(pipeline.log_lines())
        assert "AuthorizationFailed" not in logs
        for password in PASSWORDS.values():
            assert password not in logs
    finally:
        await pipeline.stop()
    print(f"secured pipeline end to end in {time.monotonic() - started:.1f} s")
