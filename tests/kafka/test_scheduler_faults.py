"""The scheduler as a process, killed at the worst moments (real broker, real clock).

- The test-only hook ``REMINDERS_SCHEDULER__CRASH_AFTER_SEND=1`` makes the process exit
  (status 137, as after SIGKILL) after it produced a firing transaction and before it
  committed it. The restarted scheduler fences the dead one's transactional id (which
  aborts the open transaction) and fires again: exactly one committed ReminderDue.
- Two instances split the partitions; one is killed with SIGKILL while reminders are
  falling due; the other takes over its partitions after the session timeout and fires
  what is due, once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from schemas.models import ReminderDue
from schemas.topics import Topics
from services.common.kafka import create_topics, make_producer
from services.common.settings import KafkaSettings
from services.domain.codec import decode, encode
from services.domain.partition import partition_for
from services.notifier.samples import sample_config
from services.reminder_scheduler.samples import appointment_value, publish, read_committed

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
PRACTICES = {partition_for(f"0{n:07d}", 3): f"0{n:07d}" for n in range(2000, 2100)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Scheduler:
    """``python -m services.reminder_scheduler`` with settings in its environment."""

    def __init__(self, kafka: KafkaSettings, log: Path, **env: str) -> None:
        self.port = _free_port()
        self.log = log
        environment = {
            **os.environ,
            "REMINDERS_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "REMINDERS_KAFKA__TOPIC_PREFIX": kafka.topic_prefix,
            "REMINDERS_KAFKA__PARTITIONS": str(kafka.partitions),
            "REMINDERS_METRICS__PORT": str(self.port),
            "REMINDERS_SCHEDULER__TICK_SECONDS": "0.1",
            "REMINDERS_SCHEDULER__SESSION_TIMEOUT_MS": "6000",
            "REMINDERS_SCHEDULER__HEARTBEAT_INTERVAL_MS": "500",
            "REMINDERS_LOG_LEVEL": "INFO",
            **env,
        }
        self._log_file = log.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "services.reminder_scheduler"],
            cwd=ROOT,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
        )

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=1) as r:
                return bool(json.loads(r.read())["ready"])
        except (OSError, ValueError):
            return False

    async def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while not await asyncio.to_thread(self.ready):
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"scheduler not ready; log:\n{self.log.read_text()[-3000:]}")
            await asyncio.sleep(0.2)

    async def wait_exit(self, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while (code := self.process.poll()) is None:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"scheduler did not exit; log:\n{self.log.read_text()[-3000:]}"
                )
            await asyncio.sleep(0.1)
        return code

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log_file.close()


@pytest.fixture
async def producer(kafka_settings: KafkaSettings) -> AsyncIterator[AIOKafkaProducer]:
    await create_topics(kafka_settings)
    p = make_producer(kafka_settings)
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


@pytest.fixture
def schedulers(kafka_settings: KafkaSettings, tmp_path: Path) -> Iterator[list[Scheduler]]:
    started: list[Scheduler] = []
    yield started
    for scheduler in started:
        scheduler.close()


async def _setup(
    producer: AIOKafkaProducer, kafka: KafkaSettings, starts: dict[str, datetime]
) -> None:
    """Configs without quiet hours (the tests run at any hour) and the appointments."""
    topics = Topics(kafka.topic_prefix)
    for practice_id in {key.split("/")[0] for key in starts}:
        await producer.send_and_wait(
            topics.practice_config,
            encode(sample_config(practice_id, quiet_hours=None)),
            practice_id.encode(),
            partition=partition_for(practice_id, kafka.partitions),
        )
    booked = datetime.now(UTC) - timedelta(days=3)
    await publish(
        producer,
        topics.appointments,
        [
            (key, appointment_value(*key.split("/"), start=start, booked_at=booked))
            for key, start in starts.items()
        ],
        partitions=kafka.partitions,
    )


async def test_crash_between_producing_and_committing_gives_one_reminder(
    kafka_settings: KafkaSettings,
    producer: AIOKafkaProducer,
    schedulers: list[Scheduler],
    tmp_path: Path,
) -> None:
    key = f"{PRACTICES[1]}/crash-1"
    start = (datetime.now(UTC) + timedelta(hours=24, seconds=8)).replace(microsecond=0)
    await _setup(producer, kafka_settings, {key: start})
    topic = Topics(kafka_settings.topic_prefix).reminders_due

    crashing = Scheduler(
        kafka_settings, tmp_path / "first.log", REMINDERS_SCHEDULER__CRASH_AFTER_SEND="1"
    )
    schedulers.append(crashing)
    assert await crashing.wait_exit(timeout=90) == 137
    assert "crash hook" in crashing.log.read_text()
    produced = await read_committed(
        kafka_settings, topic, expect=1, settle=0, isolation_level="read_uncommitted"
    )
    assert len(produced) == 1  # written, inside the transaction that never committed
    assert await read_committed(kafka_settings, topic, timeout=1, settle=1) == []

    restarted = Scheduler(kafka_settings, tmp_path / "second.log")
    schedulers.append(restarted)
    committed = await read_committed(kafka_settings, topic, expect=1, timeout=60, settle=4)
    assert len(committed) == 1, committed
    due = decode(ReminderDue, committed[0].value)
    assert due.reason is None and due.start == start and committed[0].key == key
    everything = await read_committed(
        kafka_settings, topic, expect=2, settle=0, isolation_level="read_uncommitted"
    )
    assert len(everything) == 2  # the aborted one and the committed one
    await restarted.wait_ready()


async def test_an_instance_killed_mid_stream_its_partitions_fire_once(
    kafka_settings: KafkaSettings,
    producer: AIOKafkaProducer,
    schedulers: list[Scheduler],
    tmp_path: Path,
) -> None:
    base = (datetime.now(UTC) + timedelta(hours=24, seconds=12)).replace(microsecond=0)
    starts = {
        f"{PRACTICES[n % 3]}/kill-{n}": base + timedelta(milliseconds=700 * n) for n in range(36)
    }
    await _setup(producer, kafka_settings, starts)
    first = Scheduler(kafka_settings, tmp_path / "first.log")
    schedulers.append(first)
    await first.wait_ready()
    second = Scheduler(kafka_settings, tmp_path / "second.log")
    schedulers.append(second)
    await second.wait_ready()
    await first.wait_ready()
    topic = Topics(kafka_settings.topic_prefix).reminders_due
    # kill the first instance while reminders are falling due
    await read_committed(kafka_settings, topic, expect=6, timeout=60, settle=0)
    first.kill()
    committed = await read_committed(kafka_settings, topic, expect=len(starts), timeout=90)
    counted = Counter(r.key for r in committed)
    assert counted == dict.fromkeys(starts, 1), counted
    await second.wait_ready()
