"""Benchmark: HIS events through one booking_events instance against the real broker.

    .venv/bin/python bench/booking_events.py [--events 200000] [--bootstrap HOST:PORT]

Without --bootstrap a local broker is started (deploy/kafka/kafka-local) and stopped
again. A child process first fills his.appointments.v1 with a realistic mix: bookings,
reschedules and cancellations of many appointments across practices, about 5% FHIR,
3% connector retries (duplicates), 2% out-of-order deliveries (stale), 1% bad records
and a share of meetings. Then one BookingEventsService (this process, so its peak RSS
is the service's own) processes the backlog; the figures are printed: events/s from
the first fetched batch to the last committed one, peak RSS, the results by kind, and the
time to rebuild the state from appointments.v1 on a restart.

The floor, in the same run: a raw aiokafka consume-transform-produce of the same events
(read_committed consumer, ``json.loads``/``json.dumps`` of each value, one
transactional producer per partition, offsets committed in the transaction, batches of
the service's size) into a scratch topic. One line: figure, floor, ratio (target >= 50%).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from schemas.topics import Topics
from services.common.settings import KafkaSettings, Settings
from services.domain.partition import partition_for

FHIR = b"application/fhir+json"


# --------------------------------------------------------------------------- the events


def _native(
    practice: str, appointment: str, sequence: int, status: str, start: datetime, meeting: bool
) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "occurred_at": datetime.now(UTC).isoformat(),
        "source_system": random.choice(("medicom", "promedico", "microhis", "cgm")),
        "practice_id": practice,
        "appointment_id": appointment,
        "sequence": sequence,
        "status": status,
        "start": start.isoformat(),
        "end": (start + timedelta(minutes=10)).isoformat(),
        "appointment_type": (
            {"code": "MDO", "display": "MDO ouderenzorg"}
            if meeting
            else {"code": "C10", "display": "1 klacht, 10 minuten"}
        ),
        "agenda": {"id": "AG-1", "display": "Spreekuur dr. Jansen"},
        "practitioner": {"id": "P-17", "display": "dr. E. Jansen", "role": "huisarts"},
        "location": {"display": "Huisartsenpraktijk De Linde"},
        "booked_via": "portal",
        "patient": {"id": f"pt-{appointment}", "required": "required"},
        "kind": "consult",
        "comment": "knie doet pijn",
    }


def _fhir(event: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Appointment",
        "id": event["appointment_id"],
        "meta": {"versionId": str(event["sequence"]), "source": "urn:his:hix"},
        "status": event["status"],
        "appointmentType": {"coding": [event["appointment_type"]]},
        "start": event["start"],
        "end": event["end"],
        "participant": [
            {"actor": {"reference": f"Patient/{event['patient']['id']}"}, "required": "required"},
            {"actor": {"reference": "Practitioner/P-17", "display": "dr. E. Jansen"}},
            {
                "actor": {
                    "reference": "Location/L1",
                    "display": "Huisartsenpraktijk De Linde",
                    "identifier": {
                        "system": "http://fhir.nl/fhir/NamingSystem/agb-z",
                        "value": event["practice_id"],
                    },
                }
            },
        ],
    }


def _stream(count: int, practices: int, seed: int) -> list[tuple[str, bytes, bool]]:
    """(practice, value, is_fhir) in publishing order."""
    rng = random.Random(seed)
    random.seed(seed)
    ids = [f"0{1000001 + i}" for i in range(practices)]
    now = datetime.now(UTC).replace(microsecond=0)
    out: list[tuple[str, bytes, bool]] = []
    n = 0
    while len(out) < count:
        n += 1
        practice = rng.choice(ids)
        appointment = f"A{n}"
        start = now + timedelta(days=rng.randint(1, 30), minutes=10 * rng.randint(0, 50))
        meeting = rng.random() < 0.03
        fhir = rng.random() < 0.05
        steps = [("booked", start)]
        if rng.random() < 0.4:
            steps.append(("booked", start + timedelta(days=rng.randint(1, 5))))
        if rng.random() < 0.2:
            steps.append(("cancelled", steps[-1][1]))
        events = []
        for sequence, (status, when) in enumerate(steps, start=1):
            event = _native(practice, appointment, sequence, status, when, meeting)
            body = _fhir(event) if fhir else event
            events.append(json.dumps(body).encode())
        if len(events) > 1 and rng.random() < 0.05:
            events[-1], events[-2] = events[-2], events[-1]  # out of order -> stale
        if rng.random() < 0.08:
            events.append(events[-1])  # a connector retry -> duplicate
        if rng.random() < 0.01:
            events.append(b'{"event_id": "broken", "practice_id": "' + practice.encode() + b'"}')
        out.extend(
            (practice, value, fhir and value.startswith(b'{"resourceType"')) for value in events
        )
    return out[:count]


async def _produce(settings: KafkaSettings, count: int, practices: int, seed: int) -> None:
    from services.common.kafka import make_producer

    topic = Topics(settings.topic_prefix).his_appointments
    producer = make_producer(settings, max_batch_size=512 * 1024, linger_ms=20)
    await producer.start()
    try:
        started = time.monotonic()
        stream = _stream(count, practices, seed)
        futures = []
        batches: dict[int, Any] = {}
        for practice, value, fhir in stream:
            partition = partition_for(practice, settings.partitions)
            batch = batches.get(partition)
            if batch is None:
                batch = batches[partition] = producer.create_batch()
            headers = [("content-type", FHIR)] if fhir else []
            key = practice.encode()
            if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:
                futures.append(await producer.send_batch(batch, topic, partition=partition))
                batch = batches[partition] = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None, headers=headers)
        for partition, batch in batches.items():
            futures.append(await producer.send_batch(batch, topic, partition=partition))
        await asyncio.gather(*futures)
        print(f"produced {count} events in {time.monotonic() - started:.1f} s", flush=True)
    finally:
        await producer.stop()


# --------------------------------------------------------------------------- measuring


def _results() -> dict[str, int]:
    from services.booking_events.metrics import EVENTS

    out: dict[str, int] = {}
    for metric in EVENTS.collect():
        for sample in metric.samples:
            if sample.name == "reminders_booking_events_total":
                result = sample.labels["result"]
                out[result] = out.get(result, 0) + int(sample.value)
    return out


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def _ready(service: Any) -> None:
    while True:
        if service.readiness()[0] and service.owned:
            return
        await asyncio.sleep(0.02)


async def _raw_floor(settings: Settings, count: int, batch_size: int) -> float:
    """Events/s of a raw aiokafka consume-transform-produce of his.appointments.v1."""
    from aiokafka import TopicPartition
    from aiokafka.admin import NewTopic

    from services.common.kafka import admin_client, make_consumer, make_producer

    kafka = settings.kafka
    source = Topics(kafka.topic_prefix).his_appointments
    target = f"{kafka.topic_prefix}bench.raw-ctp.v1"
    group = f"{kafka.topic_prefix}bench-raw-ctp"
    admin = admin_client(kafka)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(target, kafka.partitions, 1)])
    finally:
        await admin.close()
    partitions = [TopicPartition(source, p) for p in range(kafka.partitions)]
    consumer = make_consumer(kafka, max_partition_fetch_bytes=4 * 1024 * 1024)
    producers = {
        tp.partition: make_producer(kafka, transactional_id=f"{group}-{tp.partition}")
        for tp in partitions
    }
    await consumer.start()
    await asyncio.gather(*(p.start() for p in producers.values()))
    consumer.assign(partitions)
    done = 0
    started = time.monotonic()
    try:

        async def one(tp: TopicPartition, records: list[Any]) -> None:
            producer = producers[tp.partition]
            async with producer.transaction():
                for record in records:
                    value = json.dumps(json.loads(record.value)).encode()
                    await producer.send(target, value, key=record.key, partition=tp.partition)
                offsets = {tp: records[-1].offset + 1}
                await producer.send_offsets_to_transaction(offsets, group)

        while done < count:
            batches = await consumer.getmany(timeout_ms=500, max_records=batch_size)
            await asyncio.gather(*(one(tp, records) for tp, records in batches.items()))
            done += sum(len(records) for records in batches.values())
        return done / (time.monotonic() - started)
    finally:
        await consumer.stop()
        await asyncio.gather(*(p.stop() for p in producers.values()))


async def _run_service(settings: Settings, count: int) -> None:
    from services.booking_events.app import BookingEventsService

    service = BookingEventsService(settings)
    started = time.monotonic()
    await service.start()
    await _ready(service)
    ready = time.monotonic()
    cpu_ready = time.process_time()
    first: float | None = None
    while True:
        done = sum(_results().values())
        if done and first is None:
            first = time.monotonic()
        if done >= count:
            break
        if service.failed is not None:
            raise SystemExit(f"the service failed: {service.failed}")
        await asyncio.sleep(0.05)
    finished = time.monotonic()
    cpu = time.process_time() - cpu_ready
    results = _results()
    appointments = service.appointment_count()
    await service.stop()

    # The first batch is counted only after it committed, so time from readiness.
    elapsed = finished - ready
    print(f"startup (topics checked, config loaded, partitions loaded): {ready - started:.2f} s")
    print(f"processed {count} events in {elapsed:.2f} s: {count / elapsed:,.0f} events/s")
    print(
        f"CPU time of the service process: {cpu:.2f} s ({count / cpu:,.0f} events per CPU "
        f"second; the broker shares the machine)"
    )
    print(f"peak RSS: {_peak_rss_mb():.0f} MB")
    print("results: " + ", ".join(f"{k}={v}" for k, v in sorted(results.items())))
    print(f"appointments in state: {appointments}")

    # A restart rebuilds the state from appointments.v1.
    service = BookingEventsService(settings)
    started = time.monotonic()
    await service.start()
    await _ready(service)
    reload_seconds = time.monotonic() - started
    print(
        f"restart: state of {service.appointment_count()} appointments rebuilt from "
        f"appointments.v1 in {reload_seconds:.2f} s"
    )
    await service.stop()
    print(f"peak RSS after the restart: {_peak_rss_mb():.0f} MB")

    floor = await _raw_floor(settings, count, settings.booking_events.batch_size)
    rate = count / elapsed
    print(
        f"booking_events {rate:,.0f} events/s, floor raw aiokafka consume-transform-produce "
        f"{floor:,.0f} events/s (same events, same batch size, transactional), ratio "
        f"{rate / floor:.1%} (target >= 50%); service CPU {cpu / count * 1e6:,.0f} us/event"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--practices", type=int, default=60)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=Settings().booking_events.batch_size)
    parser.add_argument("--seed", type=int, default=20261201)
    parser.add_argument("--bootstrap", help="an existing broker (default: start a local one)")
    parser.add_argument("--produce-only", metavar="PREFIX", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.produce_only is not None:
        kafka = KafkaSettings(
            bootstrap_servers=args.bootstrap,
            topic_prefix=args.produce_only,
            partitions=args.partitions,
        )
        asyncio.run(_produce(kafka, args.events, args.practices, args.seed))
        return 0

    broker = None
    bootstrap = args.bootstrap or os.environ.get("REMINDERS_BENCH_KAFKA_BOOTSTRAP")
    if not bootstrap:
        from devkit.local_kafka import LocalKafka

        broker = LocalKafka()
        bootstrap = broker.start()
    try:
        prefix = f"bench{uuid.uuid4().hex[:8]}."
        kafka = KafkaSettings(
            bootstrap_servers=bootstrap, topic_prefix=prefix, partitions=args.partitions
        )
        settings = Settings(kafka=kafka)
        settings = settings.model_copy(
            update={
                "booking_events": settings.booking_events.model_copy(
                    update={"batch_size": args.batch_size}
                )
            }
        )

        from services.common.kafka import create_topics

        asyncio.run(create_topics(kafka))
        print(
            f"broker {bootstrap}, {args.partitions} partitions, {args.events} events, "
            f"{args.practices} practices"
        )
        subprocess.run(
            [
                sys.executable,
                __file__,
                "--produce-only",
                prefix,
                "--bootstrap",
                bootstrap,
                "--events",
                str(args.events),
                "--practices",
                str(args.practices),
                "--partitions",
                str(args.partitions),
                "--seed",
                str(args.seed),
            ],
            check=True,
        )
        asyncio.run(_run_service(settings, args.events))
    finally:
        if broker is not None:
            broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
