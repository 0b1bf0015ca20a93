"""The insights service against the real broker, on SQLite and PostgreSQL.

- ``reminders run insights`` as a process, killed with SIGKILL twice during catch-up and
  started again: the figures equal an independent count of the workload, no outcome is
  counted twice, and nothing of an aborted transaction appears.
- Two instances in one group split the partitions and together project everything.
- /readyz after a later rebalance: a ready instance is ready again once it caught up with
  what a rebalance handed it (another instance joining, then leaving).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from devkit import insights_samples as samples
from devkit.demo.pipeline import ServiceProcess, free_port
from devkit.insights_samples import OutcomeTruth, Record, _outcome, generate, publish
from schemas.topics import Topics
from services.common.db import create_engine
from services.common.followup import (
    FollowupOutcome,
    FollowupPosition,
    Report,
    build_report,
)
from services.common.settings import InsightsSettings, KafkaSettings, Settings
from services.insights.app import InsightsService
from tests.support.insights_oracle import Figures, last_weeks, oracle

pytestmark = [pytest.mark.kafka, pytest.mark.db, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 12, 1, 11, 0, tzinfo=UTC)
PRACTICES = ("01880000", "01880001", "01880002")


def as_figures(report: Report) -> Figures:
    return {(f.week, f.measure, f.key): (f.count, f.base) for f in report.figures}


def aborted_records() -> list[Record]:
    """Sent reminders in a transaction that is aborted: they must never count."""
    at = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
    return [
        Record(
            "outcome",
            f"01880000/ABORTED{n}",
            _outcome(
                OutcomeTruth(
                    f"01880000/ABORTED{n}/2026-11-21T09:00:00Z",
                    "01880000",
                    f"ABORTED{n}",
                    at,
                    "sent",
                    "email",
                    None,
                    at,
                )
            ),
            "01880000",
        )
        for n in range(20)
    ]


async def stored_positions(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        total = await conn.scalar(select(func.coalesce(func.sum(FollowupPosition.next_offset), 0)))
    return int(total or 0)


async def end_offsets(kafka: KafkaSettings) -> int:
    return sum((await samples.end_offsets(kafka)).values())


@pytest.fixture
def insights_process(
    kafka_settings: KafkaSettings, db_url: str, tmp_path: Path
) -> Iterator[ServiceProcess]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "REMINDERS_KAFKA__BOOTSTRAP_SERVERS": kafka_settings.bootstrap_servers,
        "REMINDERS_KAFKA__TOPIC_PREFIX": kafka_settings.topic_prefix,
        "REMINDERS_KAFKA__PARTITIONS": str(kafka_settings.partitions),
        "REMINDERS_DATABASE__URL": db_url,
        # Small batches: many commits, so a kill lands in the middle of the catch-up.
        "REMINDERS_INSIGHTS__BATCH_SIZE": "30",
        # The killed member leaves the group soon, so the restarted one gets its partitions.
        "REMINDERS_INSIGHTS__SESSION_TIMEOUT_MS": "6000",
        "REMINDERS_INSIGHTS__HEARTBEAT_INTERVAL_MS": "1000",
        "REMINDERS_LOG_FORMAT": "json",
    }
    process = ServiceProcess("insights", env, tmp_path / "insights.log", free_port())
    process.env["REMINDERS_METRICS__PORT"] = str(process.metrics_port)
    try:
        yield process
    finally:
        process.stop()


async def wait_ready(process: ServiceProcess, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            assert process.alive(), process.log_path.read_text()[-3000:]
            if await process.ready(session):
                return
            await asyncio.sleep(0.1)
    raise AssertionError("insights did not become ready: " + process.log_path.read_text()[-3000:])


async def kill_when(
    process: ServiceProcess, engine: AsyncEngine, low: int, high: int, timeout: float = 60
) -> int:
    """SIGKILL once the stored positions pass ``low``; returns the positions then."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.alive(), process.log_path.read_text()[-3000:]
        done = await stored_positions(engine)
        if done >= low:
            process.kill()
            assert done < high, f"caught up before the kill ({done} of {high})"
            return done
        await asyncio.sleep(0.005)
    raise AssertionError("no progress before the kill: " + process.log_path.read_text()[-3000:])


async def test_kill_9_during_catch_up_loses_nothing_and_counts_nothing_twice(
    kafka_topics: Topics,
    kafka_settings: KafkaSettings,
    db_url: str,
    insights_process: ServiceProcess,
) -> None:
    workload = generate(now=NOW, practices=3, appointments=300)
    await publish(kafka_settings, workload.records, transaction_size=250, aborted=aborted_records())
    total = await end_offsets(kafka_settings)
    engine = create_engine(db_url)
    try:
        insights_process.start()
        first = await kill_when(insights_process, engine, total // 5, total)
        insights_process.start()
        second = await kill_when(insights_process, engine, max(first + 1, total // 2), total)
        assert second > first
        insights_process.start()
        await wait_ready(insights_process)
        assert await stored_positions(engine) == total
        async with engine.connect() as conn:
            rows = await conn.scalar(select(func.count()).select_from(FollowupOutcome))
            aborted = await conn.scalar(
                select(func.count())
                .select_from(FollowupOutcome)
                .where(FollowupOutcome.appointment_id.like("ABORTED%"))
            )
            assert rows == len(workload.outcomes)
            assert aborted == 0
            weeks = last_weeks(NOW, 12)
            for practice in PRACTICES:
                report = await build_report(conn, practice, until=NOW, weeks=12)
                assert as_figures(report) == oracle(workload, practice, weeks)
        metrics = urlopen_text(f"http://127.0.0.1:{insights_process.metrics_port}/metrics")
        assert "reminders_insights_rows_written_total" in metrics
        assert 'reminders_service_ready{service="insights"} 1.0' in metrics
        assert "reminders_consumer_lag_records{" in metrics
    finally:
        await engine.dispose()


def urlopen_text(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


async def test_two_instances_split_the_partitions_and_project_everything(
    kafka_topics: Topics, kafka_settings: KafkaSettings, db_url: str
) -> None:
    workload = generate(now=NOW, practices=3, appointments=120, seed=3)
    settings = Settings(
        kafka=kafka_settings,
        database={"url": db_url},  # type: ignore[arg-type]
        insights=InsightsSettings(batch_size=500),
    )
    engines = [create_engine(db_url), create_engine(db_url)]
    services = [InsightsService(settings, engine=e) for e in engines]
    try:
        for service in services:
            await service.start()

        def owned() -> list[int]:
            return [int(str(s.readiness()[1]["partitions"])) for s in services]

        for _ in range(600):  # the group settles: both own partitions
            if sum(owned()) == 2 * kafka_settings.partitions and all(owned()):
                break
            await asyncio.sleep(0.1)
        deadline = time.monotonic() + 60
        await publish(kafka_settings, workload.records)
        total = await end_offsets(kafka_settings)
        while time.monotonic() < deadline:
            if await stored_positions(engines[0]) == total:
                break
            await asyncio.sleep(0.1)
        assert all(s.readiness()[0] for s in services)
        assert sum(owned()) == 2 * kafka_settings.partitions and all(owned()), owned()
        assert await stored_positions(engines[0]) == total
        async with engines[0].connect() as conn:
            weeks = last_weeks(NOW, 12)
            for practice in PRACTICES:
                report = await build_report(conn, practice, until=NOW, weeks=12)
                assert as_figures(report) == oracle(workload, practice, weeks)
    finally:
        for service in services:
            await service.stop()
        for engine in engines:
            await engine.dispose()


async def test_ready_again_after_a_later_rebalance(
    kafka_topics: Topics, kafka_settings: KafkaSettings, db_url: str
) -> None:
    workload = generate(now=NOW, practices=3, appointments=150, seed=5)
    half = len(workload.records) // 2
    settings = Settings(
        kafka=kafka_settings,
        database={"url": db_url},  # type: ignore[arg-type]
        insights=InsightsSettings(
            batch_size=200, session_timeout_ms=6000, heartbeat_interval_ms=1000
        ),
    )
    engines = [create_engine(db_url), create_engine(db_url)]
    first, second = (InsightsService(settings, engine=e) for e in engines)

    async def until(what: str, check: Callable[[], bool], timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if check():
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"not {what} within {timeout:.0f} s")

    def owned(service: InsightsService) -> int:
        return int(str(service.readiness()[1]["partitions"]))

    everything = 2 * kafka_settings.partitions
    try:
        await publish(kafka_settings, workload.records[:half])
        await first.start()
        await until("ready alone", lambda: first.readiness()[0])
        # A second member joins: the partitions are split again, and the second half of
        # the workload arrives while they are.
        await second.start()
        await until(
            "split",
            lambda: owned(first) + owned(second) == everything and owned(second) > 0,
        )
        assert owned(first) and owned(second)
        await publish(kafka_settings, workload.records[half:])
        total = await end_offsets(kafka_settings)
        await until("both ready", lambda: first.readiness()[0] and second.readiness()[0])
        # The second member leaves: the first gets its partitions back and is ready again
        # once it has read what came after their stored positions.
        await second.stop()
        await until("whole again", lambda: owned(first) == everything)
        await until("ready again", lambda: first.readiness()[0])
        assert first.caught_up and first.lag() and not any(first.lag().values())
        assert await stored_positions(engines[0]) == total
        async with engines[0].connect() as conn:
            weeks = last_weeks(NOW, 12)
            for practice in PRACTICES:
                report = await build_report(conn, practice, until=NOW, weeks=12)
                assert as_figures(report) == oracle(workload, practice, weeks)
    finally:
        await first.stop()
        await second.stop()
        for engine in engines:
            await engine.dispose()


async def test_a_failed_write_is_read_again_and_nothing_is_lost_or_counted_twice(
    kafka_topics: Topics,
    kafka_settings: KafkaSettings,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The database refuses two transactions in the middle of the catch-up. The batches
    decoded while those were in flight are dropped and read again from the stored
    positions, so the figures still equal the independent count."""
    from services.insights import app as insights_app

    workload = generate(now=NOW, practices=3, appointments=200, seed=7)
    await publish(kafka_settings, workload.records, transaction_size=100)
    total = await end_offsets(kafka_settings)
    real_write = insights_app.write_batch
    calls = 0

    async def flaky_write(*args: object, **kwargs: object) -> None:
        nonlocal calls
        calls += 1
        if calls in (3, 6):
            raise OSError("connection to the database lost")
        await real_write(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(insights_app, "write_batch", flaky_write)
    settings = Settings(
        kafka=kafka_settings,
        database={"url": db_url},  # type: ignore[arg-type]
        insights=InsightsSettings(batch_size=40),
    )
    engine = create_engine(db_url)
    service = InsightsService(settings, engine=engine)
    try:
        await service.start()
        for _ in range(900):  # up to 90 s
            if service.caught_up:
                break
            await asyncio.sleep(0.1)
        assert service.caught_up
        assert calls > 6  # both failures happened, and writing went on after them
        assert await stored_positions(engine) == total
        async with engine.connect() as conn:
            rows = await conn.scalar(select(func.count()).select_from(FollowupOutcome))
            assert rows == len(workload.outcomes)
            weeks = last_weeks(NOW, 12)
            for practice in PRACTICES:
                report = await build_report(conn, practice, until=NOW, weeks=12)
                assert as_figures(report) == oracle(workload, practice, weeks)
    finally:
        await service.stop()
        await engine.dispose()


BAD_OUTCOMES = (
    Record("outcome", "01880001/BAD1", b"\xff\xfe not json", "01880001"),
    Record("outcome", "01880002/BAD2", b'{"reminder_id": 5, "status": "sent"}', "01880002"),
    Record("outcome", "01880001/BAD3", b"[]", "01880001"),
)


async def dead_letters(kafka: KafkaSettings, topic: str) -> list[dict[str, str]]:
    """The headers of every record on `topic`'s DLQ."""
    from aiokafka import TopicPartition

    from services.common.kafka import make_consumer

    consumer = make_consumer(kafka, group_id=None)
    await consumer.start()
    try:
        dlq = Topics.dlq(topic)
        parts = [TopicPartition(dlq, p) for p in range(kafka.partitions)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        letters: list[dict[str, str]] = []
        for tp in parts:
            while await consumer.position(tp) < ends[tp]:
                for records in (await consumer.getmany(tp, timeout_ms=1000)).values():
                    letters += [{k: v.decode() for k, v in r.headers} for r in records]
        return letters
    finally:
        await consumer.stop()


async def test_an_outcome_it_cannot_read_is_parked_once_and_the_rest_projected(
    kafka_topics: Topics,
    kafka_settings: KafkaSettings,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Insights is the one reader of notifications.outcomes.v1: an outcome it cannot read
    goes to that topic's DLQ with its reason before the stored position passes it. The
    first dead letter the broker does not take fails its batch, which is read again; a
    replay from the beginning (positions lost) parks nothing a second time."""
    from aiokafka.errors import KafkaTimeoutError

    from services.common import dead_letters as common_letters

    workload = generate(now=NOW, practices=3, appointments=120, seed=11)
    records = list(workload.records)
    for n, bad in enumerate(BAD_OUTCOMES):  # among the others, not at the end
        records.insert((n + 1) * len(records) // 4, bad)
    await publish(kafka_settings, records, transaction_size=50)
    total = await end_offsets(kafka_settings)
    real_send = common_letters.send_dead_letter
    calls = 0

    async def refused_once(*args: object, **kwargs: object) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise KafkaTimeoutError("the broker did not answer")
        await real_send(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(common_letters, "send_dead_letter", refused_once)
    settings = Settings(
        kafka=kafka_settings,
        database={"url": db_url},  # type: ignore[arg-type]
        insights=InsightsSettings(batch_size=40),
    )
    engine = create_engine(db_url)
    try:
        for replay in (False, True):
            service = InsightsService(settings, engine=engine)
            try:
                await service.start()
                for _ in range(900):  # up to 90 s
                    if service.caught_up:
                        break
                    await asyncio.sleep(0.1)
                assert service.caught_up
            finally:
                await service.stop()
            assert await stored_positions(engine) == total
            letters = await dead_letters(kafka_settings, kafka_topics.outcomes)
            assert len(letters) == len(BAD_OUTCOMES), (replay, letters)
            assert {letter["source-topic"] for letter in letters} == {kafka_topics.outcomes}
            assert all(letter["error-reason"] for letter in letters)
            async with engine.connect() as conn:
                rows = await conn.scalar(select(func.count()).select_from(FollowupOutcome))
                assert rows == len(workload.outcomes)
                for practice in PRACTICES:
                    report = await build_report(conn, practice, until=NOW, weeks=12)
                    assert as_figures(report) == oracle(workload, practice, last_weeks(NOW, 12))
            async with engine.begin() as conn:  # positions lost: read all again
                await conn.execute(FollowupPosition.__table__.delete())
        assert calls == 1 + len(BAD_OUTCOMES)  # refused once, then each parked once
    finally:
        await engine.dispose()
