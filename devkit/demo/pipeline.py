"""The whole pipeline on one machine: broker, sinks and the three services as processes.

Used by ``reminders demo``, the end-to-end tests and the fault suite. Each service runs
as ``reminders run NAME`` in its own process (as in production), configured by
``REMINDERS_*`` environment variables, with its JSON log in ``<out>/logs/NAME.log``, so a
test can kill -9 one and start it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiokafka import TopicPartition
from pydantic import BaseModel

from devkit.sinks.push_sink import PushSink
from devkit.sinks.smtp_sink import SmtpSink
from schemas import (
    AppointmentEvent,
    Outcome,
    PatientPreferences,
    PracticeConfig,
    PushSubscriptionRecord,
)
from schemas.topics import Topics
from services.common.kafka import create_topics, make_consumer, make_producer
from services.common.settings import KafkaSettings
from services.domain.codec import encode
from services.domain.partition import partition_for
from services.notifier.push import generate_vapid_keys

__all__ = ["SERVICE_NAMES", "Pipeline", "ServiceProcess", "free_port"]

SERVICE_NAMES = ("booking-events", "scheduler", "notifier")
MESSAGE_ID_DOMAIN = "reminders.demo.invalid"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ServiceProcess:
    """One service in its own process (``reminders run NAME``)."""

    name: str
    env: dict[str, str]
    log_path: Path
    metrics_port: int
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def start(self) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        self.starts += 1
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "run", self.name],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        log.close()

    def kill(self) -> None:
        """kill -9: no goodbye, no flush, no commit."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self, timeout: float = 20.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    async def ready(self, session: aiohttp.ClientSession) -> bool:
        try:
            url = f"http://127.0.0.1:{self.metrics_port}/readyz"
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as response:
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False


@dataclass
class Pipeline:
    kafka: KafkaSettings
    out_dir: Path
    extra_env: Mapping[str, str] = field(default_factory=dict)
    smtp: SmtpSink | None = None
    push: PushSink | None = None
    services: dict[str, ServiceProcess] = field(default_factory=dict)
    vapid_public_key: str = ""
    _vapid_private: str = ""
    # practice-admin's port and secret are fixed up front, so the notifier signs the
    # one-click unsubscribe links that practice-admin serves.
    admin_port: int = field(default_factory=lambda: free_port())
    admin_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))

    @property
    def topics(self) -> Topics:
        return Topics(self.kafka.topic_prefix)

    @property
    def mbox_path(self) -> Path:
        return self.out_dir / "mail.mbox"

    # ------------------------------------------------------------------ lifecycle
    async def start_infrastructure(self) -> None:
        (self.out_dir / "logs").mkdir(parents=True, exist_ok=True)
        await create_topics(self.kafka)
        self.smtp = SmtpSink(mbox_path=str(self.mbox_path))
        self.smtp.start()
        self.push = PushSink()
        await self.push.start()
        self._vapid_private, self.vapid_public_key = generate_vapid_keys()

    def service_env(self, name: str, metrics_port: int) -> dict[str, str]:
        assert self.smtp is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith("REMINDERS_")}
        env.update(
            {
                "REMINDERS_KAFKA__BOOTSTRAP_SERVERS": self.kafka.bootstrap_servers,
                "REMINDERS_KAFKA__TOPIC_PREFIX": self.kafka.topic_prefix,
                "REMINDERS_KAFKA__PARTITIONS": str(self.kafka.partitions),
                "REMINDERS_KAFKA__CLIENT_ID": f"demo-{name}",
                "REMINDERS_METRICS__HOST": "127.0.0.1",
                "REMINDERS_METRICS__PORT": str(metrics_port),
                "REMINDERS_SMTP__HOST": "127.0.0.1",
                "REMINDERS_SMTP__PORT": str(self.smtp.port),
                "REMINDERS_SMTP__SECURITY": "none",
                "REMINDERS_SMTP__MESSAGE_ID_DOMAIN": MESSAGE_ID_DOMAIN,
                "REMINDERS_PUSH__VAPID_PRIVATE_KEY": self._vapid_private,
                "REMINDERS_PUSH__VAPID_SUBJECT": "mailto:beheer@example.invalid",
                "REMINDERS_PUSH__ALLOW_INSECURE_LOOPBACK": "true",
                "REMINDERS_ADMIN__PUBLIC_URL": f"http://127.0.0.1:{self.admin_port}",
                "REMINDERS_ADMIN__SECRET_KEY": self.admin_secret,
                "REMINDERS_LOG_FORMAT": "json",
                "REMINDERS_LOG_LEVEL": "INFO",
                "PYTHONUNBUFFERED": "1",
            }
        )
        env.update(self.extra_env)
        return env

    def start_services(self, names: Iterable[str] = SERVICE_NAMES) -> None:
        for name in names:
            service = self.services.get(name)
            if service is None:
                port = free_port()
                service = ServiceProcess(
                    name=name,
                    env=self.service_env(name, port),
                    log_path=self.out_dir / "logs" / f"{name}.log",
                    metrics_port=port,
                )
                self.services[name] = service
            service.start()

    def start_practice_admin(
        self, database_url: str, secret_key: str | None = None, demo: bool = False
    ) -> str:
        """practice-admin as ``reminders run practice-admin`` on a free port; returns its URL.

        Its /readyz is on the same port as its pages. The database must be migrated.
        """
        name = "practice-admin"
        service = self.services.get(name)
        if service is None:
            port = self.admin_port
            env = self.service_env(name, free_port())
            env.update(
                {
                    "REMINDERS_DATABASE__URL": database_url,
                    "REMINDERS_ADMIN__HOST": "127.0.0.1",
                    "REMINDERS_ADMIN__PORT": str(port),
                    "REMINDERS_ADMIN__PUBLIC_URL": f"http://127.0.0.1:{port}",
                    "REMINDERS_ADMIN__SECRET_KEY": secret_key or self.admin_secret,
                    "REMINDERS_ADMIN__DEMO": "true" if demo else "false",
                }
            )
            service = ServiceProcess(
                name=name,
                env=env,
                log_path=self.out_dir / "logs" / f"{name}.log",
                metrics_port=port,
            )
            self.services[name] = service
        service.start()
        return f"http://127.0.0.1:{service.metrics_port}"

    def start_insights(self, database_url: str) -> ServiceProcess:
        """insights as ``reminders run insights`` on ``database_url`` (migrated): the
        projection that practice-admin's verzendlog and follow-up pages read."""
        name = "insights"
        service = self.services.get(name)
        if service is None:
            port = free_port()
            env = self.service_env(name, port) | {"REMINDERS_DATABASE__URL": database_url}
            service = ServiceProcess(
                name=name,
                env=env,
                log_path=self.out_dir / "logs" / f"{name}.log",
                metrics_port=port,
            )
            self.services[name] = service
        service.start()
        return service

    async def wait_ready(self, names: Iterable[str] = SERVICE_NAMES, timeout: float = 90) -> None:
        names = list(names)
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while True:
                pending = [n for n in names if not await self.services[n].ready(session)]
                if not pending:
                    return
                dead = [n for n in pending if not self.services[n].alive()]
                if dead:
                    raise RuntimeError(
                        f"service {dead[0]} exited; see {self.services[dead[0]].log_path}"
                    )
                if time.monotonic() > deadline:
                    raise TimeoutError(f"not ready after {timeout:.0f} s: {', '.join(pending)}")
                await asyncio.sleep(0.3)

    async def stop(self) -> None:
        # All at once: each service drains on SIGTERM, and they need not wait for each other.
        await asyncio.gather(*(asyncio.to_thread(s.stop) for s in self.services.values()))
        if self.push is not None:
            await self.push.stop()
        if self.smtp is not None:
            self.smtp.stop()

    # ------------------------------------------------------------------ inputs
    def push_subscription(self) -> PushSubscriptionRecord:
        """A fresh "browser" subscribed at the local push service."""
        assert self.push is not None
        sub = self.push.new_subscription(self.vapid_public_key)
        return PushSubscriptionRecord.model_validate(
            {"endpoint": sub.endpoint, "keys": {"p256dh": sub.p256dh, "auth": sub.auth}}
        )

    async def publish(
        self,
        topic: str,
        records: Iterable[tuple[str, BaseModel | bytes | None, str]],
        headers: list[tuple[str, bytes]] | None = None,
    ) -> int:
        """Publish (key, value, practice id) records on the practice's partition."""
        producer = make_producer(self.kafka)
        await producer.start()
        count = 0
        try:
            for key, value, practice_id in records:
                payload = value if isinstance(value, bytes | None) else encode(value)
                await producer.send(
                    topic,
                    key=key.encode(),
                    value=payload,
                    partition=partition_for(practice_id, self.kafka.partitions),
                    headers=headers,
                )
                count += 1
            await producer.flush()
        finally:
            await producer.stop()
        return count

    async def publish_configs(self, configs: Iterable[PracticeConfig]) -> int:
        return await self.publish(
            self.topics.practice_config, ((c.practice_id, c, c.practice_id) for c in configs)
        )

    async def publish_preferences(self, prefs: Iterable[PatientPreferences]) -> int:
        return await self.publish(
            self.topics.patient_preferences, ((p.key, p, p.practice_id) for p in prefs)
        )

    async def publish_events(self, events: Iterable[AppointmentEvent]) -> int:
        """What an HIS connector does: key = practice id, value = the event JSON."""
        return await self.publish(
            self.topics.his_appointments,
            ((e.practice_id, e.model_dump_json().encode(), e.practice_id) for e in events),
        )

    # ------------------------------------------------------------------ outputs
    async def read_topic(self, topic: str) -> list[tuple[bytes | None, bytes | None]]:
        """Every committed record of a topic, from the beginning to the current end."""
        consumer = make_consumer(self.kafka, group_id=None)
        out: list[tuple[bytes | None, bytes | None]] = []
        try:
            await consumer.start()
            parts = [TopicPartition(topic, p) for p in range(self.kafka.partitions)]
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
            ends = await consumer.end_offsets(parts)
            while True:
                positions = {tp: await consumer.position(tp) for tp in parts}
                if all(positions[tp] >= ends[tp] for tp in parts):
                    break
                batch = await consumer.getmany(timeout_ms=300)
                for records in batch.values():
                    out.extend((r.key, r.value) for r in records)
        finally:
            await consumer.stop()
        return out

    async def outcomes(self) -> list[Outcome]:
        return [
            Outcome.model_validate_json(v)
            for _, v in await self.read_topic(self.topics.outcomes)
            if v is not None
        ]

    async def count(self, topic: str) -> int:
        consumer = make_consumer(self.kafka, group_id=None)
        try:
            await consumer.start()
            parts = [TopicPartition(topic, p) for p in range(self.kafka.partitions)]
            begins = await consumer.beginning_offsets(parts)
            ends = await consumer.end_offsets(parts)
            return sum(ends[tp] - begins[tp] for tp in parts)
        finally:
            await consumer.stop()

    async def dlq_counts(self) -> dict[str, int]:
        counts = {}
        for topic in self.topics.inputs():
            dlq = Topics.dlq(topic)
            counts[dlq] = len(await self.read_topic(dlq))
        return counts

    async def metrics_text(self, name: str) -> str:
        async with aiohttp.ClientSession() as session:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(self.services[name].metrics_url) as response:
                    return await response.text()
        return ""

    def log_lines(self) -> list[str]:
        lines: list[str] = []
        for path in sorted((self.out_dir / "logs").glob("*.log")):
            lines.extend(path.read_text(encoding="utf-8", errors="replace").splitlines())
        return lines


def outcome_summary(outcomes: Iterable[Outcome]) -> dict[str, dict[str, int]]:
    """Last outcome per reminder, counted by status and by reason/channel."""
    last: dict[str, Outcome] = {}
    for outcome in outcomes:
        last[outcome.reminder_id] = outcome
    summary: dict[str, dict[str, int]] = {"sent": {}, "suppressed": {}, "failed": {}}
    for outcome in last.values():
        bucket = summary[outcome.status]
        label = outcome.channel or "-" if outcome.status == "sent" else outcome.reason or "-"
        bucket[label] = bucket.get(label, 0) + 1
    return summary


def dump_json(data: object) -> str:
    return json.dumps(data, indent=2, sort_keys=True, default=str)
