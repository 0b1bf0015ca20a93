"""Start-up an orchestrator can live with (issue 14, point 5), and `reminders check`.

The services run as processes (`reminders run NAME`), as an orchestrator runs them: no
broker means /healthz alive and /readyz 503 with the reason, retrying; a refusal means one
JSON log line and exit code 2, never a traceback.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from devkit.sinks.smtp_sink import SmtpSink
from schemas.topics import Topics
from services.common.kafka import create_topics
from services.common.settings import KafkaSettings
from services.domain.partition import partition_for

pytestmark = pytest.mark.kafka

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(tmp_path: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REMINDERS_")}
    env.update(
        {
            "REMINDERS_METRICS__PORT": "0",
            "REMINDERS_DATABASE__URL": f"sqlite+aiosqlite:///{tmp_path}/check.sqlite3",
            **settings,
        }
    )
    return env


def _reminders(
    *args: str, env: dict[str, str], timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _get(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture
def split_topics(kafka_settings: KafkaSettings) -> Iterator[KafkaSettings]:
    """Every topic with 2 partitions except appointments.v1, which has 3."""
    import asyncio

    specs = Topics(kafka_settings.topic_prefix).specs()
    odd = [s for s in specs if s.name == Topics(kafka_settings.topic_prefix).appointments]
    rest = [s for s in specs if s not in odd]
    asyncio.run(create_topics(kafka_settings.model_copy(update={"partitions": 2}), rest))
    asyncio.run(create_topics(kafka_settings.model_copy(update={"partitions": 3}), odd))
    yield kafka_settings


def test_without_a_broker_a_service_keeps_trying_and_says_why_on_readyz(tmp_path: Path) -> None:
    dead = f"127.0.0.1:{_free_port()}"
    port = _free_port()
    env = _env(
        tmp_path,
        REMINDERS_KAFKA__BOOTSTRAP_SERVERS=dead,
        REMINDERS_METRICS__PORT=str(port),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "run", "notifier"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        status, body = 0, {}
        while time.monotonic() < deadline:
            try:
                status, body = _get(f"http://127.0.0.1:{port}/readyz")
                break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.2)
        assert status == 503
        assert body["ready"] is False
        assert body["reason"] == (
            f"cannot reach Kafka at {dead}: connection refused; check "
            "REMINDERS_KAFKA__BOOTSTRAP_SERVERS and that the broker runs"
        )
        assert _get(f"http://127.0.0.1:{port}/healthz") == (
            200,
            {"status": "alive", "service": "notifier"},
        )
        time.sleep(4)  # several attempts (1 s, 2 s, ...): still alive, still saying why
        assert proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert "Traceback" not in err
    lines = _json_lines(err)  # every line is JSON
    waiting = [e for e in lines if str(e["msg"]).startswith("waiting for Kafka:")]
    assert len(waiting) == 1, "one line per reason, not one per attempt"


def test_topics_that_disagree_are_a_refusal_in_one_json_line(
    split_topics: KafkaSettings, tmp_path: Path
) -> None:
    env = _env(
        tmp_path,
        REMINDERS_KAFKA__BOOTSTRAP_SERVERS=split_topics.bootstrap_servers,
        REMINDERS_KAFKA__TOPIC_PREFIX=split_topics.topic_prefix,
        REMINDERS_KAFKA__PARTITIONS="2",
    )
    result = _reminders("run", "booking-events", env=env)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    refusals = [e for e in _json_lines(result.stderr) if e["level"] == "error"]
    assert len(refusals) == 1
    msg = str(refusals[0]["msg"])
    assert msg.startswith("refusing to start: topics must all have the same partition count")
    assert f"{split_topics.topic_prefix}appointments.v1=3" in msg


def test_topics_create_says_when_existing_topics_disagree(
    split_topics: KafkaSettings, tmp_path: Path
) -> None:
    env = _env(
        tmp_path,
        REMINDERS_KAFKA__BOOTSTRAP_SERVERS=split_topics.bootstrap_servers,
        REMINDERS_KAFKA__TOPIC_PREFIX=split_topics.topic_prefix,
    )
    result = _reminders("topics", "create", "--partitions", "3", env=env)
    assert result.returncode == 1
    prefix = split_topics.topic_prefix
    assert f"DIFFERS  {prefix}his.appointments.v1 has 2 partitions, not 3" in result.stdout
    assert f"existing {prefix}appointments.v1 (3 partitions)" in result.stdout
    assert "have 2 partitions, not the 3 asked for" in result.stderr


async def test_partition_uses_the_topics_real_count(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    five = kafka_settings.model_copy(update={"partitions": 5})
    await create_topics(five)
    env = _env(
        tmp_path,
        REMINDERS_KAFKA__BOOTSTRAP_SERVERS=kafka_settings.bootstrap_servers,
        REMINDERS_KAFKA__TOPIC_PREFIX=kafka_settings.topic_prefix,
        REMINDERS_KAFKA__PARTITIONS="12",
    )
    practices = ["01054321", "01999002", "01999003", "01000004", "01000005"]
    for practice in practices:
        result = _reminders("partition", practice, env=env)
        assert result.returncode == 0, result.stderr
        assert int(result.stdout) == partition_for(practice, 5)
    assert any(partition_for(p, 5) != partition_for(p, 12) for p in practices)


async def test_a_bad_vapid_key_is_a_refusal(kafka_settings: KafkaSettings, tmp_path: Path) -> None:
    await create_topics(kafka_settings)
    with SmtpSink() as relay:
        env = _env(
            tmp_path,
            REMINDERS_KAFKA__BOOTSTRAP_SERVERS=kafka_settings.bootstrap_servers,
            REMINDERS_KAFKA__TOPIC_PREFIX=kafka_settings.topic_prefix,
            REMINDERS_KAFKA__PARTITIONS=str(kafka_settings.partitions),
            REMINDERS_SMTP__PORT=str(relay.port),
            REMINDERS_PUSH__VAPID_PRIVATE_KEY="not-a-key",
        )
        result = _reminders("run", "notifier", env=env)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [e for e in _json_lines(result.stderr) if e["level"] == "error"]
    assert len(errors) == 1
    assert str(errors[0]["msg"]).startswith("refusing to start: Web Push (REMINDERS_PUSH__VAPID_*)")
    assert "not-a-key" not in result.stderr


async def test_check_prints_one_line_per_thing_and_exits_0_when_all_answer(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    await create_topics(kafka_settings)
    base = {
        "REMINDERS_KAFKA__BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
        "REMINDERS_KAFKA__TOPIC_PREFIX": kafka_settings.topic_prefix,
        "REMINDERS_KAFKA__PARTITIONS": str(kafka_settings.partitions),
    }
    upgrade = _reminders("db", "upgrade", env=_env(tmp_path, **base))
    assert upgrade.returncode == 0, upgrade.stderr
    with SmtpSink() as relay:
        env = _env(tmp_path, **base, REMINDERS_SMTP__PORT=str(relay.port))
        healthy = _reminders("check", env=env)
        wrong_partitions = _reminders("check", env={**env, "REMINDERS_KAFKA__PARTITIONS": "7"})
    print(healthy.stdout)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    lines = healthy.stdout.splitlines()
    topics = Topics(kafka_settings.topic_prefix).specs()
    assert [line.split()[1] for line in lines] == (
        ["kafka"] + ["topic"] * len(topics) + ["smtp", "dkim", "push", "database"]
    )
    assert all(line.startswith(("ok ", "skip ")) for line in lines)
    assert lines[-4].startswith(f"ok    smtp      127.0.0.1:{relay.port} answers (security=auto)")
    assert wrong_partitions.returncode == 1
    assert (
        f"FAIL  topic     {kafka_settings.topic_prefix}his.appointments.v1: "
        f"{kafka_settings.partitions} partitions, but REMINDERS_KAFKA__PARTITIONS=7"
    ) in wrong_partitions.stdout
