"""Benchmark: the follow-up projection of 1,000,000 outcomes and their appointments.

    .venv/bin/python bench/insights.py [--outcomes 1000000] [--practices 40]
        [--bootstrap HOST:PORT] [--postgres-url postgresql+asyncpg://...] [--only sqlite]

Without --bootstrap a local broker is started (deploy/kafka/kafka-local), without
--postgres-url a local PostgreSQL (deploy/postgres/pg-local); both are stopped again.
The synthetic workload (devkit/insights_samples.py: bookings, final states, moves,
cancellations, stale retries, tombstones, repeated outcomes) is published once, in Kafka
transactions as the services write it. Then, in the same run:

- a raw aiokafka read of both topics, read_committed, to their end: the ceiling;
- per database, a fresh schema and one InsightsService projecting everything: records/s
  from its first committed batch until it caught up, the database size, and the time of
  the report of one practice's 12 weeks (median of 7, warm).

Each rate is printed on one line with the raw aiokafka read of the same run (the floor)
and the ratio, then the issue's target and that ratio; the report time with its ceiling.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiokafka import TopicPartition
from sqlalchemy import text

from devkit.insights_samples import FollowupWorkload, end_offsets, publish, stream
from schemas.topics import Topics
from services.common.db import create_engine, upgrade
from services.common.followup import build_report
from services.common.kafka import create_topics, make_consumer
from services.common.settings import DatabaseSettings, InsightsSettings, KafkaSettings, Settings
from services.insights.app import InsightsService

FLOOR_PG = 20_000  # records/s on PostgreSQL (issue 18)
CEILING_REPORT_MS = 200.0
NOW = datetime(2026, 12, 1, 11, 0, tzinfo=UTC)
# Outcomes per appointment in the generator (a moved appointment has two).
_OUTCOMES_PER_APPOINTMENT = 1.05


def _load() -> str:
    return f"load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"


def line(label: str, figure: float, unit: str, bound: float, kind: str = "floor") -> str:
    """Figure, target (floor or ceiling) and ratio on one line, with the machine's load
    beside: the numbers of a shared two-core box move with what else runs."""
    ratio = figure / bound if bound else float("inf")
    ok = figure >= bound if kind == "floor" else figure <= bound
    return (
        f"{label}: {figure:,.1f} {unit} ({kind} {bound:,.0f} {unit}, ratio {ratio:.2f}"
        f"{'' if ok else ', MISSED'}; {_load()})"
    )


def rate_line(label: str, rate: float, raw: float, target: float) -> str:
    """The projection's rate, the raw aiokafka read of the same records in the same run
    (the floor under any consumer of these topics) and the ratio, then the issue's target."""
    ok = rate >= target
    return (
        f"{label}: {rate:,.0f} records/s; raw aiokafka read floor {raw:,.0f} records/s, "
        f"ratio {rate / raw:.2f}; target {target:,.0f} records/s, ratio {rate / target:.2f}"
        f"{'' if ok else ', MISSED'}; {_load()}"
    )


async def raw_read(kafka: KafkaSettings, ends: dict[TopicPartition, int]) -> tuple[int, float]:
    """Every record of both topics with a bare aiokafka consumer, no group, no decoding."""
    consumer = make_consumer(kafka, max_partition_fetch_bytes=4 * 1024 * 1024)
    await consumer.start()
    try:
        consumer.assign(list(ends))
        await consumer.seek_to_beginning(*ends)
        count = 0
        started = time.monotonic()
        pending = {tp for tp, end in ends.items() if end > 0}
        while pending:
            batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for records in batches.values():
                count += len(records)
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
        return count, time.monotonic() - started
    finally:
        await consumer.stop()


async def database_size(engine_url: str) -> int:
    if engine_url.startswith("sqlite"):
        path = Path(engine_url.split("///", 1)[1])
        return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
    engine = create_engine(engine_url)
    try:
        async with engine.connect() as conn:
            return int(await conn.scalar(text("SELECT pg_database_size(current_database())")))
    finally:
        await engine.dispose()


async def project(
    label: str, url: str, kafka: KafkaSettings, raw: float, outcomes: int, batch: int
) -> float:
    engine = create_engine(url)
    await upgrade(engine)
    settings = Settings(
        kafka=kafka,
        database=DatabaseSettings(url=url),  # type: ignore[arg-type]
        insights=InsightsSettings(group_id=f"bench-{uuid.uuid4().hex[:6]}", batch_size=batch),
    )
    service = InsightsService(settings, engine=engine)
    cpu_started = time.process_time()
    await service.start()
    try:
        for _ in range(72_000):  # up to an hour
            if service.caught_up:
                break
            await asyncio.sleep(0.05)
        # The service runs in this process: its CPU time, whatever else shares the cores.
        cpu = time.process_time() - cpu_started
        assert service.first_batch_at is not None and service.caught_up_at is not None
        elapsed = service.caught_up_at - service.first_batch_at
        records = service.records_projected
    finally:
        await service.stop()
    rate = records / elapsed
    size = await database_size(url)
    print(
        f"{label}: projected {records:,} records ({outcomes:,} outcomes) in {elapsed:.1f} s; "
        f"database {size / 1e6:,.0f} MB ({size / max(1, outcomes):,.0f} bytes per outcome)",
        flush=True,
    )
    floor = _target(label)
    print(rate_line(f"{label} projection", rate, raw, floor), flush=True)
    print(
        f"{label} projection, client CPU: {cpu / records * 1e6:.1f} µs per record "
        f"({records / cpu:,.0f} records per CPU-second of the insights process; "
        f"{'SQLite works in it too' if label == 'sqlite' else 'the server is not in it'})",
        flush=True,
    )
    print(line(f"{label} projection, outcomes", outcomes / elapsed, "outcomes/s", floor / 3))
    timings = []
    async with engine.connect() as conn:
        for _ in range(8):
            started = time.perf_counter()
            report = await build_report(conn, "01880000", until=NOW, weeks=12)
            timings.append((time.perf_counter() - started) * 1000)
    appointments = sum(f.count for f in report.by_measure("appointments"))
    median = statistics.median(timings[1:])
    print(
        line(
            f"{label} report, one practice ({appointments:,} appointments), 12 weeks",
            median,
            "ms",
            CEILING_REPORT_MS,
            "ceiling",
        ),
        flush=True,
    )
    await engine.dispose()
    return rate


async def main(args: argparse.Namespace) -> None:
    kafka = KafkaSettings(
        bootstrap_servers=args.bootstrap,
        topic_prefix=f"bench{uuid.uuid4().hex[:6]}.",
        partitions=args.partitions,
    )
    await create_topics(kafka)
    per_practice = round(args.outcomes / _OUTCOMES_PER_APPOINTMENT / args.practices)
    workload = FollowupWorkload(keep=False)
    started = time.monotonic()
    produced = await publish(
        kafka,
        stream(workload, now=NOW, practices=args.practices, appointments=per_practice),
        transaction_size=5_000,
    )
    print(f"produced {produced:,} records in {time.monotonic() - started:.1f} s", flush=True)
    ends = await end_offsets(kafka)
    topics = Topics(kafka.topic_prefix)
    outcomes_end = sum(end for tp, end in ends.items() if tp.topic == topics.outcomes)
    count, elapsed = await raw_read(kafka, ends)
    raw_rate = count / elapsed
    print(f"raw aiokafka read: {count:,} records in {elapsed:.1f} s: {raw_rate:,.0f} records/s")
    # Offsets include the transactions' control records; the outcome count is close.
    outcomes = outcomes_end
    rates: dict[str, float] = {}
    if args.only in (None, "sqlite"):
        folder = Path(tempfile.mkdtemp(prefix="bench-insights-"))
        url = f"sqlite+aiosqlite:///{folder / 'insights.sqlite3'}"
        try:
            rates["sqlite"] = await project("sqlite", url, kafka, raw_rate, outcomes, args.batch)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    if args.only in (None, "postgresql"):
        rates["postgresql"] = await project(
            "postgresql", args.postgres_url, kafka, raw_rate, outcomes, args.batch
        )
    for label, rate in rates.items():
        print(rate_line(f"{label} projection (again, together)", rate, raw_rate, _target(label)))


def _target(label: str) -> float:
    return FLOOR_PG if label == "postgresql" else FLOOR_PG / 2


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outcomes", type=int, default=1_000_000)
    parser.add_argument("--practices", type=int, default=40)
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--bootstrap", default=None)
    parser.add_argument("--postgres-url", default=None)
    parser.add_argument("--only", choices=("sqlite", "postgresql"), default=None)
    args = parser.parse_args()
    stoppers = []
    if args.bootstrap is None:
        from devkit.local_kafka import LocalKafka

        broker = LocalKafka()
        args.bootstrap = broker.start()
        stoppers.append(broker.stop)
    if args.postgres_url is None and args.only != "sqlite":
        from devkit.local_postgres import LocalPostgres

        server = LocalPostgres()
        server.start()
        stoppers.append(server.stop)
        args.postgres_url = server.create_database(f"bench_{uuid.uuid4().hex[:8]}")
    try:
        asyncio.run(main(args))
    finally:
        for stop in reversed(stoppers):
            stop()


if __name__ == "__main__":
    cli()
