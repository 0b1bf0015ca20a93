"""Benchmarks of the reminder scheduler; each prints its figures.

    .venv/bin/python bench/scheduler.py memory [--count 1000000] [--ids short|long]
    .venv/bin/python bench/scheduler.py kafka [--bootstrap HOST:PORT] [--count 1000000]
        [--changes 200000] [--burst 100000] [--steady-rate 1000] [--steady-seconds 60]
        [--prefix PREFIX] [--steps raw,load,firing] [--rounds 1]

``memory``: the pending reminders through the real path (read_appointment, Planner,
PartitionTimers, each table sized as a load sizes it), 12 partitions, in this process:
resident memory above the baseline,
per pending reminder (target: at most 200 bytes). ``--ids long`` uses UUIDs for the
appointment and patient ids (the worst realistic case), ``short`` an AGB code, a
10-digit HIS id and a 19-character portal id.

``kafka`` (real broker; without --bootstrap a local one is started and stopped):

1. fills appointments.v1 (12 partitions) with ``--count`` booked appointments over the
   next days (every one a pending reminder); ``--prefix`` reuses an earlier fill;
2. raw: how fast aiokafka alone reads that topic (the floor under the load time), with
   the fetch sizes of the scheduler's consumer and the garbage collector settings the
   scheduler sets at start (heap frozen, a young collection every 50,000 allocations):
   they make aiokafka's own read a third faster, so a floor read with Python's defaults
   flattered the ratio (before 2026-12-03 12:30 it was read that way);
3. load: a SchedulerService in this process, from start() until it reports ready
   (target: 1,000,000 in at most 30 s); then ingest: ``--changes`` reschedules published
   while the service's consumer is paused, and the time until it has applied them all
   after it resumes (target: at least 20,000 per second). With both raw and load, each of
   ``--rounds N`` (default 1) rounds is a raw read with Python's collector defaults, one
   with the scheduler's, and a load, so that all meet the same load of a shared machine;
   a line per round with the ratios against both reads, then (N > 1) the medians; the
   changes are ingested after the last load;
4. firing, by ``python -m services.reminder_scheduler`` (its own process, loaded with
   everything above): ``--burst`` reminders due in the same second (target: all emitted
   within 10 s), then ``--steady-rate`` per second for ``--steady-seconds`` (target: p99
   lateness under 1 s). Lateness is ``fired_at - due_at`` of the committed records and,
   end to end, the moment a read_committed consumer saw them minus ``due_at``. The
   burst's floors: raw aiokafka ``send`` per record in transactions of 1,000, and raw
   aiokafka's batch API (``create_batch``/``send_batch``, as the scheduler writes) with
   1,000 and 10,000 reminders per transaction.

CPU seconds are printed beside wall-clock seconds: on a shared machine the wall clock
also counts other processes (and the broker shares the cores). The load line also
gives the seconds the garbage collector took of that CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, NamedTuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aiokafka import TopicPartition  # noqa: E402

from bench.proc import cpu_seconds, rss_bytes  # noqa: E402
from schemas.topics import Topics  # noqa: E402
from services.common.kafka import create_topics, make_consumer, make_producer  # noqa: E402
from services.common.settings import (  # noqa: E402
    KafkaSettings,
    MetricsSettings,
    SchedulerSettings,
    Settings,
)
from services.domain.codec import encode  # noqa: E402
from services.domain.partition import partition_for  # noqa: E402
from services.notifier.samples import sample_config  # noqa: E402
from services.reminder_scheduler.due_time import DEFAULT_POLICY  # noqa: E402
from services.reminder_scheduler.planner import Planner  # noqa: E402
from services.reminder_scheduler.records import read_appointment  # noqa: E402
from services.reminder_scheduler.samples import appointment_value, publish  # noqa: E402
from services.reminder_scheduler.service import (  # noqa: E402
    FETCH_SIZES,
    SchedulerService,
    freeze_heap,
)
from services.reminder_scheduler.timers import PartitionTimers  # noqa: E402

PARTITIONS = 12
PRACTICES = 2000


def practice(n: int) -> str:
    return f"0{1_000_000 + n % PRACTICES:07d}"  # an AGB code: 8 digits


def ids(n: int, shape: str) -> tuple[str, str]:
    """(appointment id, patient id) of appointment n."""
    if shape == "long":
        return str(uuid.UUID(int=n)), str(uuid.UUID(int=n + 2**100))
    return f"{n:010d}", f"pt-{n * 7919:016x}"


def appointments(count: int, now: datetime, *, shape: str = "short") -> Iterator[tuple[str, bytes]]:
    """Booked appointments every 10 minutes over the next 2 to 8 days, booked before."""
    first = (now + timedelta(days=2)).replace(minute=0, second=0, microsecond=0)
    for n in range(count):
        practice_id = practice(n)
        appointment_id, patient_id = ids(n, shape)
        start = first + timedelta(minutes=10 * ((n // PRACTICES) % 864))
        booked = now - timedelta(days=10, seconds=n)  # each booked at its own moment
        value = appointment_value(
            practice_id, appointment_id, start=start, patient_id=patient_id, booked_at=booked
        )
        yield f"{practice_id}/{appointment_id}", value


# --------------------------------------------------------------------------- memory


def bench_memory(count: int, shape: str) -> None:
    now = datetime.now(UTC)
    planners = [Planner(PartitionTimers(), lambda _: DEFAULT_POLICY) for _ in range(PARTITIONS)]
    # as a load sizes each partition's table from its offsets (here: its appointments)
    of_practice = {n: partition_for(practice(n), PARTITIONS) for n in range(PRACTICES)}
    per_partition = [0] * PARTITIONS
    for n in range(count):
        per_partition[of_practice[n % PRACTICES]] += 1
    gc.collect()
    baseline = rss_bytes()
    for planner, records in zip(planners, per_partition, strict=True):
        planner.timers.reserve(records)
    started = time.perf_counter()
    for key, value in appointments(count, now, shape=shape):
        state = read_appointment(value)
        planners[partition_for(state.practice_id, PARTITIONS)].appointment(key.encode(), state, now)
    elapsed = time.perf_counter() - started
    gc.collect()
    held = rss_bytes() - baseline
    pending = sum(p.timers.pending for p in planners)
    key, _ = next(appointments(1, now, shape=shape))
    print(f"memory: {pending:,} pending reminders ({shape} ids, e.g. key {key})")
    print(f"  resident memory above the baseline: {held / 2**20:,.1f} MiB")
    print(f"  per pending reminder: {held / pending:,.1f} bytes (target <= 200)")
    print(f"  generate + decode + plan: {elapsed / count * 1e6:,.1f} us per appointment")


# --------------------------------------------------------------------------- kafka


class GcTime:
    """Seconds this process spent in the garbage collector while counting."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._since = 0.0
        self.counting = False
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, _info: dict[str, int]) -> None:
        if not self.counting:
            return
        if phase == "start":
            self._since = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._since


# What this process started with (CPython's (700, 10, 10)), before a SchedulerService's
# start() changes it.
DEFAULT_GC_THRESHOLDS = gc.get_threshold()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def until(done: Callable[[], bool], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark step did not finish")
        await asyncio.sleep(0.02)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def fill(kafka: KafkaSettings, count: int) -> None:
    topics = Topics(kafka.topic_prefix)
    producer = make_producer(kafka, linger_ms=50, max_batch_size=1024 * 1024)
    await producer.start()
    try:
        for n in range(PRACTICES):
            practice_id = practice(n)
            await producer.send(
                topics.practice_config,
                encode(sample_config(practice_id, quiet_hours=None)),
                practice_id.encode(),
                partition=partition_for(practice_id, kafka.partitions),
            )
        started = time.perf_counter()
        sent = await publish(
            producer,
            topics.appointments,
            appointments(count, datetime.now(UTC)),
            partitions=kafka.partitions,
        )
        elapsed = time.perf_counter() - started
        print(f"fill: {sent:,} appointments published in {elapsed:,.1f} s")
    finally:
        await producer.stop()


def default_collector() -> None:
    """Python's own garbage collector settings, nothing frozen: what a fresh process has
    (a SchedulerService's start() tunes both, for the rest of the process)."""
    gc.unfreeze()
    gc.set_threshold(*DEFAULT_GC_THRESHOLDS)


async def raw_read(
    kafka: KafkaSettings, *, collector: Literal["default", "scheduler"] = "default"
) -> tuple[float, float]:
    """How fast aiokafka alone reads appointments.v1: (wall-clock, CPU) seconds, with the
    fetch sizes of the scheduler's appointment consumer. ``collector``: "default" reads
    with Python's garbage collector settings, "scheduler" with the ones a SchedulerService
    sets at start (heap frozen, a young collection every 50,000 allocations instead of
    700), which make aiokafka's own read a third faster."""
    topic = Topics(kafka.topic_prefix).appointments
    default_collector()
    if collector == "scheduler":
        freeze_heap()
    consumer = make_consumer(kafka, group_id=None, **FETCH_SIZES)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(kafka.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        started = time.perf_counter()
        cpu = time.process_time()
        read = 0
        while read < sum(ends.values()):
            batches = await consumer.getmany(timeout_ms=200)
            read += sum(len(r) for r in batches.values())
        elapsed = time.perf_counter() - started
        cpu = time.process_time() - cpu
        print(
            f"raw read ({collector} garbage collector settings): {read:,} records in "
            f"{elapsed:,.1f} s ({read / elapsed:,.0f}/s; {cpu:,.1f} s of CPU)"
        )
        return elapsed, cpu
    finally:
        await consumer.stop()


def _burst_values(count: int) -> list[tuple[bytes, bytes]]:
    """The scheduler's own ReminderDue and FiredMarker bytes for ``count`` reminders due
    now (what the floors write)."""
    from services.reminder_scheduler.records import fired_values

    now = datetime.now(UTC)
    return [
        fired_values(
            practice_id=practice(n),
            appointment_id=f"burst-{n}",
            patient_id=f"pt-{n:016x}",
            start=now + timedelta(days=1),
            end=now + timedelta(days=1, minutes=10),
            sequence=1,
            due_at=now,
            fired_at=now,
            reason=None,
        )
        for n in range(count)
    ]


async def raw_emit(kafka: KafkaSettings, count: int) -> tuple[float, float]:
    """The floor under a burst: (wall-clock, CPU) seconds for raw aiokafka to write
    ``count`` ReminderDue and ``count`` FiredMarker values (the scheduler's own bytes) in
    transactions of 1,000."""
    from aiokafka.admin import NewTopic

    from services.common.kafka import admin_client

    target = f"{kafka.topic_prefix}bench.raw-emit.{uuid.uuid4().hex[:6]}"
    admin = admin_client(kafka)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(target, kafka.partitions, 1)])
    finally:
        await admin.close()
    values = _burst_values(count)
    producer = make_producer(kafka, transactional_id=f"{target}-tx", linger_ms=5)
    await producer.start()
    try:
        started = time.perf_counter()
        cpu = time.process_time()
        for first in range(0, count, 1000):
            async with producer.transaction():
                for n in range(first, min(first + 1000, count)):
                    key = f"{practice(n)}/burst-{n}".encode()
                    part = partition_for(practice(n), kafka.partitions)
                    due, marker = values[n]
                    await producer.send(target, due, key=key, partition=part)
                    await producer.send(target, marker, key=key, partition=part)
        return time.perf_counter() - started, time.process_time() - cpu
    finally:
        await producer.stop()


async def raw_emit_batched(
    kafka: KafkaSettings, count: int, per_transaction: int = 1000
) -> tuple[float, float]:
    """The floor with aiokafka's batch API: (wall-clock, CPU) seconds to write ``count``
    ReminderDue and ``count`` FiredMarker values (pre-encoded: only the write is timed)
    with ``create_batch``/``append``/``send_batch``, one batch per topic and partition,
    ``per_transaction`` reminders per transaction (one producer)."""
    from aiokafka.admin import NewTopic

    from services.common.kafka import admin_client

    topics = [f"{kafka.topic_prefix}bench.raw-batch-{t}.{uuid.uuid4().hex[:6]}" for t in "df"]
    admin = admin_client(kafka)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, kafka.partitions, 1) for t in topics])
    finally:
        await admin.close()
    records = []
    for n, (due, marker) in enumerate(_burst_values(count)):
        key = f"{practice(n)}/burst-{n}".encode()
        records.append((partition_for(practice(n), kafka.partitions), key, due, marker))
    producer = make_producer(kafka, transactional_id=f"{topics[0]}-tx", linger_ms=5)
    await producer.start()
    try:
        started = time.perf_counter()
        cpu = time.process_time()
        for first in range(0, count, per_transaction):
            async with producer.transaction():
                batches: dict[tuple[int, int], Any] = {}
                futures = []
                for part, key, due, marker in records[first : first + per_transaction]:
                    for topic, value in ((0, due), (1, marker)):
                        batch = batches.get((topic, part))
                        if batch is None:
                            batch = batches[(topic, part)] = producer.create_batch()
                        if batch.append(key=key, value=value, timestamp=None) is None:
                            futures.append(
                                await producer.send_batch(batch, topics[topic], partition=part)
                            )
                            batch = batches[(topic, part)] = producer.create_batch()
                            batch.append(key=key, value=value, timestamp=None)
                for (topic, part), batch in batches.items():
                    futures.append(await producer.send_batch(batch, topics[topic], partition=part))
                await asyncio.gather(*futures)
        return time.perf_counter() - started, time.process_time() - cpu
    finally:
        await producer.stop()


def settings_for(kafka: KafkaSettings) -> Settings:
    return Settings(
        kafka=kafka,
        metrics=MetricsSettings(port=0),
        scheduler=SchedulerSettings(),
        log_format="text",
    )


def changes_of(count: int) -> list[tuple[str, bytes]]:
    """The first ``count`` appointments, moved an hour later (sequence 2)."""
    changed = []
    for key, value in appointments(count, datetime.now(UTC)):
        doc = json.loads(value)
        start = datetime.fromisoformat(doc["start"]) + timedelta(hours=1)
        doc.update(
            sequence=2, start=start.isoformat(), end=(start + timedelta(minutes=10)).isoformat()
        )
        changed.append((key, json.dumps(doc).encode()))
    return changed


class Loaded(NamedTuple):
    seconds: float  # wall clock, from start() to ready
    cpu: float  # CPU seconds of this process in that time
    pending: int  # pending reminders after it


async def load_and_ingest(kafka: KafkaSettings, changes: int, *, ingest: bool = True) -> Loaded:
    """The load and, with ``ingest``, the changes after it."""
    # Made before the service starts: building them while it runs would block its event
    # loop (and its group heartbeats) for seconds.
    changed = changes_of(changes) if ingest else []
    default_collector()  # as in a fresh process: start() sets the scheduler's own
    gc.collect()
    baseline = rss_bytes()
    service = SchedulerService(settings_for(kafka))
    gc_time = GcTime()
    started = time.perf_counter()
    cpu = time.process_time()
    gc_time.counting = True
    await service.start()
    await until(lambda: service.readiness()[0])
    gc_time.counting = False
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu
    pending = sum(w.planner.timers.pending for w in service.workers.values())
    slowest = max(w.load_seconds or 0 for w in service.workers.values())
    gc.collect()
    held = rss_bytes() - baseline
    print(
        f"load: {pending:,} pending reminders loaded in {elapsed:,.1f} s from start() to ready "
        f"(target <= 30 s; slowest partition {slowest:,.1f} s; {cpu:,.1f} s of CPU, "
        f"{gc_time.seconds:,.1f} s of it in the garbage collector); "
        f"{held / 2**20:,.0f} MiB resident above the baseline ({held / pending:,.0f} B each, "
        "with the clients' buffers)"
    )
    try:
        if ingest:
            await _ingest(kafka, service, changed)
    finally:
        await service.stop()
    return Loaded(elapsed, cpu, pending)


async def _ingest(
    kafka: KafkaSettings, service: SchedulerService, changed: list[tuple[str, bytes]]
) -> None:
    """``changed`` published while the service's consumer is paused, then the time until
    it has applied them all after it resumes."""
    consumer = service._consumer
    assert consumer is not None
    tps = sorted(consumer.assignment())
    consumer.pause(*tps)
    producer = make_producer(kafka, linger_ms=50, max_batch_size=1024 * 1024)
    await producer.start()
    try:
        topic = Topics(kafka.topic_prefix).appointments
        await publish(producer, topic, changed, partitions=kafka.partitions)
    finally:
        await producer.stop()
    ends = await consumer.end_offsets(tps)
    started = time.perf_counter()
    cpu = time.process_time()
    consumer.resume(*tps)
    for tp in tps:
        position = await consumer.position(tp)
        while position < ends[tp]:
            await asyncio.sleep(0.01)
            position = await consumer.position(tp)
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu
    print(
        f"ingest: {len(changed):,} appointment changes applied in {elapsed:,.2f} s "
        f"({len(changed) / elapsed:,.0f}/s; target >= 20,000/s; {cpu:,.2f} s of CPU)"
    )


class Process:
    def __init__(self, kafka: KafkaSettings) -> None:
        self.port = free_port()
        env = {
            **os.environ,
            "REMINDERS_KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "REMINDERS_KAFKA__TOPIC_PREFIX": kafka.topic_prefix,
            "REMINDERS_KAFKA__PARTITIONS": str(kafka.partitions),
            "REMINDERS_METRICS__PORT": str(self.port),
            "REMINDERS_LOG_LEVEL": "WARNING",
        }
        self.started = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "services.reminder_scheduler"],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
        )

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as r:
                return bool(json.loads(r.read())["ready"])
        except (OSError, ValueError):
            return False

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


async def observe(
    kafka: KafkaSettings, expect: int, timeout: float
) -> list[tuple[float, datetime, datetime]]:
    """(seen at, due_at, fired_at) of every new committed ReminderDue. The values are
    parsed after the last one came: the 2-core machine's CPU is the scheduler's and the
    broker's while they come."""
    topic = Topics(kafka.topic_prefix).reminders_due
    consumer = make_consumer(kafka, group_id=None, max_poll_records=10000)
    await consumer.start()
    received: list[tuple[float, bytes]] = []
    try:
        tps = [TopicPartition(topic, p) for p in range(kafka.partitions)]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        deadline = time.time() + timeout
        while len(received) < expect and time.time() < deadline:
            batches = await consumer.getmany(timeout_ms=100)
            at = time.time()
            for records in batches.values():
                for record in records:
                    assert record.value is not None
                    received.append((at, record.value))
    finally:
        await consumer.stop()
    seen: list[tuple[float, datetime, datetime]] = []
    for at, value in received:
        doc = json.loads(value)
        seen.append(
            (at, datetime.fromisoformat(doc["due_at"]), datetime.fromisoformat(doc["fired_at"]))
        )
    return seen


def report(
    name: str, seen: list[tuple[float, datetime, datetime]], expected: int
) -> tuple[float, float]:
    """Prints the lateness figures; returns the p99 of fired_at - due_at and the p99 of
    when a read_committed consumer saw the records (fired_at is taken as a batch is
    picked, before its transaction commits: the second is what a notifier sees)."""
    fired = [(f - d).total_seconds() for _, d, f in seen]
    visible = [at - d.timestamp() for at, d, _ in seen]
    print(
        f"{name}: {len(seen):,}/{expected:,} emitted; lateness fired_at-due_at "
        f"p50 {percentile(fired, 0.5):.3f} s, p99 {percentile(fired, 0.99):.3f} s, "
        f"max {max(fired):.3f} s; seen by a read_committed consumer p50 "
        f"{percentile(visible, 0.5):.3f} s, p99 {percentile(visible, 0.99):.3f} s, "
        f"max {max(visible):.3f} s after due"
    )
    return percentile(fired, 0.99), percentile(visible, 0.99)


def burst_records(count: int, start: datetime, booked: datetime) -> list[tuple[str, bytes]]:
    out = []
    for n in range(count):
        practice_id, appointment_id = practice(n), f"burst-{n}"
        value = appointment_value(practice_id, appointment_id, start=start, booked_at=booked)
        out.append((f"{practice_id}/{appointment_id}", value))
    return out


def steady_records(
    rate: int, seconds: int, first: datetime, booked: datetime
) -> list[tuple[str, bytes]]:
    out = []
    for n in range(rate * seconds):
        practice_id, appointment_id = practice(n), f"steady-{n}"
        start = first + timedelta(seconds=n / rate)
        value = appointment_value(practice_id, appointment_id, start=start, booked_at=booked)
        out.append((f"{practice_id}/{appointment_id}", value))
    return out


async def firing(kafka: KafkaSettings, burst: int, rate: int, seconds: int) -> None:
    topics = Topics(kafka.topic_prefix)
    process = Process(kafka)
    try:
        while not process.ready():
            if process.process.poll() is not None:
                raise SystemExit("the scheduler process exited")
            await asyncio.sleep(0.2)
        elapsed = time.perf_counter() - process.started
        rss = rss_bytes(process.process.pid)
        print(
            f"process: loaded and ready {elapsed:,.1f} s after it was started "
            f"(interpreter start included), RSS {rss / 2**20:,.0f} MiB"
        )
        producer = make_producer(kafka, linger_ms=50, max_batch_size=1024 * 1024)
        await producer.start()
        try:
            booked = datetime.now(UTC) - timedelta(days=10)
            burst_due = (datetime.now(UTC) + timedelta(seconds=45)).replace(microsecond=0)
            records = burst_records(burst, burst_due + timedelta(hours=24), booked)
            await publish(producer, topics.appointments, records, partitions=kafka.partitions)
            print(f"burst: {burst:,} reminders published, all due at {burst_due:%H:%M:%S}")
            pid = process.process.pid
            await asyncio.sleep(max(0.0, burst_due.timestamp() - time.time() - 5))
            cpu_before = cpu_seconds(pid)  # the appointments are planned by now
            seen = await observe(kafka, burst, timeout=120)
            cpu = cpu_seconds(pid) - cpu_before
            last = max(at for at, _, _ in seen) - burst_due.timestamp()
            print(f"burst: all {len(seen):,} emitted within {last:.2f} s of their due time")
            p99, p99_seen = report("burst", seen, burst)
            floor, floor_cpu = await raw_emit(kafka, burst)
            batched = {n: await raw_emit_batched(kafka, burst, n) for n in (1000, 10_000)}
            print(
                f"burst: {burst:,} due in the same second, all out within {last:.2f} s "
                f"(p99 lateness {p99:.2f} s by fired_at, {p99_seen:.2f} s as a read_committed "
                f"consumer sees them, target < 2 s; scheduler CPU {cpu:.2f} s, "
                f"{cpu / burst * 1e6:.1f} us per reminder), floor raw aiokafka transactional "
                f"write of the same {2 * burst:,} records {floor:.2f} s ({floor_cpu:.2f} s CPU), "
                f"ratio {last / floor:.2f}x wall, {cpu / floor_cpu:.2f}x CPU"
            )
            for per, (wall, wall_cpu) in batched.items():
                print(
                    f"burst floor, batch API: raw aiokafka create_batch/send_batch of the same "
                    f"{2 * burst:,} records, {per:,} reminders per transaction, {wall:.2f} s "
                    f"({wall_cpu:.2f} s CPU); the scheduler's {last:.2f} s is "
                    f"{last / wall:.2f}x that"
                )

            steady_due = (datetime.now(UTC) + timedelta(seconds=45)).replace(microsecond=0)
            records = steady_records(rate, seconds, steady_due + timedelta(hours=24), booked)
            await publish(producer, topics.appointments, records, partitions=kafka.partitions)
            print(
                f"steady: {len(records):,} reminders published, {rate:,}/s from "
                f"{steady_due:%H:%M:%S} for {seconds} s"
            )
            seen = await observe(kafka, len(records), timeout=seconds + 120)
            report("steady", seen, len(records))
        finally:
            await producer.stop()
    finally:
        process.stop()


async def reload_rounds(kafka: KafkaSettings, changes: int, rounds: int) -> None:
    """``rounds`` rounds of a raw read with Python's collector defaults, one with the
    scheduler's and a load, so that all three meet the same load of a shared machine: a
    line per round and, for more than one, the medians (a ratio is the median of each
    round's load over its own raw read). The changes are ingested after the last load."""
    walls: list[float] = []
    cpus: list[float] = []
    default_walls: list[float] = []
    loads: list[float] = []
    raws: list[float] = []
    for number in range(rounds):
        plain = await raw_read(kafka)
        raw = await raw_read(kafka, collector="scheduler")
        load = await load_and_ingest(kafka, changes, ingest=number == rounds - 1)
        loads.append(load.seconds)
        raws.append(raw[0])
        walls.append(load.seconds / raw[0])
        cpus.append(load.cpu / raw[1])
        default_walls.append(load.seconds / plain[0])
        # CPU beside wall clock: on a shared machine the wall clock counts other processes.
        print(
            f"round {number + 1}/{rounds}: reload of {load.pending:,} appointments "
            f"{load.seconds:,.1f} s ({load.cpu:,.1f} s CPU, "
            f"{load.cpu / load.pending * 1e6:,.1f} us per appointment) vs raw read "
            f"{raw[0]:,.1f} s ({raw[1]:,.1f} s CPU) with the scheduler's garbage collector "
            f"settings: {walls[-1]:,.2f}x wall, {cpus[-1]:,.2f}x CPU (target <= 2x); vs raw "
            f"read {plain[0]:,.1f} s with Python's defaults: {default_walls[-1]:,.2f}x wall"
        )
    if rounds > 1:
        print(
            f"reload, median of {rounds} alternating rounds: {statistics.median(loads):,.1f} s "
            f"from start() to ready vs a raw aiokafka read of {statistics.median(raws):,.1f} s "
            f"(the same garbage collector settings), ratio "
            f"{statistics.median(walls):,.2f}x wall ({min(walls):,.2f}-{max(walls):,.2f}), "
            f"{statistics.median(cpus):,.2f}x CPU ({min(cpus):,.2f}-{max(cpus):,.2f}) "
            f"(target <= 2x); against a raw read with Python's defaults "
            f"{statistics.median(default_walls):,.2f}x wall"
        )


async def bench_kafka(args: argparse.Namespace) -> None:
    broker: Any = None
    bootstrap = args.bootstrap
    if bootstrap is None:
        from devkit.local_kafka import LocalKafka

        broker = LocalKafka()
        bootstrap = broker.start()
    try:
        kafka = KafkaSettings(
            bootstrap_servers=bootstrap,
            topic_prefix=args.prefix or f"bench{uuid.uuid4().hex[:6]}.",
            partitions=PARTITIONS,
            client_id="bench-scheduler",
        )
        if args.prefix is None:
            await create_topics(kafka)
            await fill(kafka, args.count)
        print(f"topics: {kafka.topic_prefix}*")
        if "raw" in args.steps and "load" in args.steps:
            await reload_rounds(kafka, args.changes, args.rounds)
        elif "raw" in args.steps:
            await raw_read(kafka, collector="scheduler")
        elif "load" in args.steps:
            await load_and_ingest(kafka, args.changes)
        if "firing" in args.steps:
            await firing(kafka, args.burst, args.steady_rate, args.steady_seconds)
    finally:
        if broker is not None:
            with contextlib.suppress(Exception):
                broker.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    memory = sub.add_parser("memory")
    memory.add_argument("--count", type=int, default=1_000_000)
    memory.add_argument("--ids", choices=("short", "long"), default="short")
    kafka = sub.add_parser("kafka")
    kafka.add_argument("--bootstrap")
    kafka.add_argument(
        "--prefix", help="reuse the topics of an earlier run (printed as 'topics:'); no fill"
    )
    kafka.add_argument("--count", type=int, default=1_000_000)
    kafka.add_argument("--changes", type=int, default=200_000)
    kafka.add_argument("--burst", type=int, default=100_000)
    kafka.add_argument("--steady-rate", type=int, default=1000)
    kafka.add_argument("--steady-seconds", type=int, default=60)
    kafka.add_argument("--steps", default="raw,load,firing", help="comma-separated subset")
    kafka.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="with raw and load: that many rounds (two raw reads and a load), and the medians",
    )
    args = parser.parse_args()
    if args.command == "memory":
        bench_memory(args.count, args.ids)
    else:
        asyncio.run(bench_kafka(args))


if __name__ == "__main__":
    main()
