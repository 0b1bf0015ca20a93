"""A synthetic follow-up workload: appointments with their final states and the outcomes
of their reminders, as the records the pipeline writes. For the tests and the benchmark.

Records are built as JSON directly (orjson), so a million of them are made in seconds;
they match ``schemas.models.Appointment`` and ``Outcome`` (the tests validate samples).
Besides the records, :class:`FollowupWorkload` keeps the ground truth (``truths``): the
last state of each appointment and each outcome, for an oracle to count from.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiokafka import TopicPartition

from schemas.topics import Topics
from services.common.kafka import make_consumer, make_producer
from services.common.settings import KafkaSettings
from services.domain.partition import partition_for

__all__ = [
    "AppointmentTruth",
    "FollowupWorkload",
    "OutcomeTruth",
    "Record",
    "end_offsets",
    "generate",
    "publish",
    "stream",
]

TYPES = (("C10", "Consult 10 minuten"), ("C20", "Dubbel consult"), ("OOR", "Oren uitspuiten"))
SUPPRESS_REASONS = ("no_consent", "no_channel", "not_remindable_type")
FAIL_REASONS = ("invalid_address", "permanent_failure", "subscription_gone")


@dataclass(frozen=True)
class Record:
    """One record to publish: ``kind`` is ``appointment`` or ``outcome``."""

    kind: str
    key: str
    value: bytes | None
    practice_id: str


@dataclass(frozen=True)
class AppointmentTruth:
    practice_id: str
    appointment_id: str
    start: datetime
    booked_at: datetime
    status: str
    type_code: str
    is_meeting: bool
    cancelled_at: datetime | None
    cancelled_via: str | None


@dataclass(frozen=True)
class OutcomeTruth:
    reminder_id: str
    practice_id: str
    appointment_id: str
    start: datetime
    status: str
    channel: str | None
    reason: str | None
    at: datetime


@dataclass
class FollowupWorkload:
    records: list[Record] = field(default_factory=list)
    appointments: dict[tuple[str, str], AppointmentTruth] = field(default_factory=dict)
    outcomes: dict[str, OutcomeTruth] = field(default_factory=dict)
    # False: a stream too big to remember (the benchmark); records and truths not kept.
    keep: bool = True

    def count(self, kind: str) -> int:
        return sum(1 for r in self.records if r.kind == kind)


def _t(moment: datetime) -> str:
    return moment.isoformat()


def _appointment(
    pid: str,
    aid: str,
    *,
    sequence: int,
    status: str,
    start: datetime,
    booked_at: datetime,
    updated_at: datetime,
    code: str,
    display: str,
    patient: str,
    meeting: bool,
    via: str,
) -> bytes:
    value: dict[str, Any] = {
        "source_system": "medicom",
        "practice_id": pid,
        "appointment_id": aid,
        "sequence": sequence,
        "status": status,
        "start": _t(start),
        "end": _t(start + timedelta(minutes=10)),
        "appointment_type": {"code": code, "display": display},
        "agenda": {"id": "AG-DR", "display": "Spreekuur huisarts"},
        "practitioner": {"id": "PR-1", "display": "dr. A. Huisarts", "role": "huisarts"},
        "location": None,
        "booked_via": via,
        "patient": {"id": patient, "required": "required"},
        "kind": "meeting" if meeting else None,
        "booked_at": _t(booked_at),
        "updated_at": _t(updated_at),
        "meeting": {
            "is_meeting": meeting,
            "rule": "kind" if meeting else None,
            "matched": None,
        },
        "last_event_id": None,
    }
    return orjson.dumps(value)


def _outcome(truth: OutcomeTruth) -> bytes:
    return orjson.dumps(
        {
            "reminder_id": truth.reminder_id,
            "practice_id": truth.practice_id,
            "appointment_id": truth.appointment_id,
            "channel": truth.channel,
            "status": truth.status,
            "reason": truth.reason,
            "at": _t(truth.at),
            "message_id": None,
            "detail": None,
        }
    )


def _rid(pid: str, aid: str, start: datetime) -> str:
    return f"{pid}/{aid}/{start.astimezone(UTC).strftime('%Y-%m-%dT%H:%M:%SZ')}"


def _iter_practice(
    rng: random.Random, w: FollowupWorkload, pid: str, now: datetime, weeks: int, count: int
) -> Iterator[Record]:
    span = weeks * 7 * 86400
    for k in range(count):
        aid = f"A{k:07d}"
        patient = f"pt-{pid[-4:]}-{rng.randrange(5000):05d}"
        # Starts spread over the weeks before now, on quarter hours.
        start = now - timedelta(seconds=rng.uniform(3600, span))
        start = start.replace(minute=(start.minute // 15) * 15, second=0, microsecond=0)
        lead = rng.choice((0.2, 0.7, 1.0, 1.5, 3.0, 5.0, 6.5, 9.0, 20.0))
        booked_at = (start - timedelta(days=lead)).replace(microsecond=0)
        code, display = rng.choice(TYPES)
        meeting = rng.random() < 0.04
        via = rng.choice(("portal", "portal", "phone", "desk"))
        original = start
        moved = not meeting and rng.random() < 0.05
        if moved:  # booked at another time first, moved later: two reminder ids
            original = start - timedelta(hours=rng.choice((2, 26, 50)))
        first = _appointment(
            pid,
            aid,
            sequence=1,
            status="booked",
            start=original,
            booked_at=booked_at,
            updated_at=booked_at,
            code=code,
            display=display,
            patient=patient,
            meeting=meeting,
            via=via,
        )
        key = f"{pid}/{aid}"
        yield Record("appointment", key, first, pid)
        if moved:
            o = OutcomeTruth(
                _rid(pid, aid, original),
                pid,
                aid,
                original,
                "suppressed",
                None,
                "moved",
                original - timedelta(hours=24),
            )
            if w.keep:
                w.outcomes[o.reminder_id] = o
            yield Record("outcome", key, _outcome(o), pid)

        # The reminder for the (last) start.
        rid = _rid(pid, aid, start)
        due = max(start - timedelta(hours=24), booked_at + timedelta(minutes=5))
        roll = rng.random()
        if meeting:
            o = OutcomeTruth(rid, pid, aid, start, "suppressed", None, "patient_discussion", due)
        elif roll < 0.55:
            o = OutcomeTruth(rid, pid, aid, start, "sent", "email", None, due)
        elif roll < 0.68:
            o = OutcomeTruth(rid, pid, aid, start, "sent", "push", None, due)
        elif roll < 0.72:
            o = OutcomeTruth(rid, pid, aid, start, "failed", "email", rng.choice(FAIL_REASONS), due)
        else:
            o = OutcomeTruth(
                rid, pid, aid, start, "suppressed", None, rng.choice(SUPPRESS_REASONS), due
            )
        reminded = o.status == "sent"

        # The final state, after the appointment time (or a cancellation before it).
        fate = rng.random()
        cancelled_at: datetime | None = None
        if meeting:
            status = "fulfilled"
        elif fate < 0.08:
            status = "cancelled"
            # Some before the reminder went out, most after it: hours before the start.
            hours = rng.choice((0.5, 1.5, 3.0, 8.0, 20.0, 30.0, 48.0))
            cancelled_at = max(booked_at + timedelta(minutes=1), start - timedelta(hours=hours))
            cancelled_at = cancelled_at.replace(microsecond=0)
            if o.status == "sent" and cancelled_at < due:
                # A reminder is not sent for a cancelled appointment: it went out first.
                o = OutcomeTruth(rid, pid, aid, start, "suppressed", None, "cancelled", due)
                reminded = False
        else:
            noshow_rate = 0.04 if reminded else 0.09
            status = "noshow" if rng.random() < noshow_rate else "fulfilled"
        if w.keep:
            w.outcomes[rid] = o
        if rng.random() < 0.5:
            yield Record("outcome", key, _outcome(o), pid)
            if rng.random() < 0.05:  # a repeat: must not count twice
                yield Record("outcome", key, _outcome(o), pid)
            outcome_done = True
        else:
            outcome_done = False
        updated = cancelled_at or (start + timedelta(minutes=30))
        if w.keep:
            w.appointments[(pid, aid)] = AppointmentTruth(
                pid,
                aid,
                start,
                booked_at,
                status,
                code,
                meeting,
                cancelled_at,
                via if status == "cancelled" else None,
            )
        last = _appointment(
            pid,
            aid,
            sequence=2,
            status=status,
            start=start,
            booked_at=booked_at,
            updated_at=updated,
            code=code,
            display=display,
            patient=patient,
            meeting=meeting,
            via=via,
        )
        yield Record("appointment", key, last, pid)
        if not outcome_done:
            yield Record("outcome", key, _outcome(o), pid)
        if rng.random() < 0.05:  # a stale retry of the first state: must not roll back
            yield Record("appointment", key, first, pid)
        if rng.random() < 0.3:  # bounded state upstream: must not delete the final state
            yield Record("appointment", key, None, pid)


def stream(
    workload: FollowupWorkload,
    *,
    now: datetime,
    practices: int = 3,
    appointments: int = 200,
    weeks: int = 12,
    seed: int = 18,
) -> Iterator[Record]:
    """The records, practices interleaved as a shared topic holds them; the truths go
    into ``workload`` when it keeps them."""
    rng = random.Random(seed)
    live = [
        _iter_practice(rng, workload, f"0188{i:04d}", now, weeks, appointments)
        for i in range(practices)
    ]
    while live:
        for practice in list(live):
            try:
                yield next(practice)
            except StopIteration:
                live.remove(practice)


def generate(
    *,
    now: datetime,
    practices: int = 3,
    appointments: int = 200,
    weeks: int = 12,
    seed: int = 18,
) -> FollowupWorkload:
    """``appointments`` per practice over the ``weeks`` before ``now``, with outcomes."""
    workload = FollowupWorkload()
    workload.records = list(
        stream(
            workload,
            now=now,
            practices=practices,
            appointments=appointments,
            weeks=weeks,
            seed=seed,
        )
    )
    return workload


async def publish(
    kafka: KafkaSettings,
    records: Iterable[Record],
    *,
    transaction_size: int = 1_000,
    aborted: Iterable[Record] = (),
) -> int:
    """Publish in Kafka transactions, as the services do (so the topics hold control
    records); ``aborted`` records go in a transaction that is aborted, which a
    read_committed consumer must never see."""
    topics = Topics(kafka.topic_prefix)
    topic = {"appointment": topics.appointments, "outcome": topics.outcomes}
    producer = make_producer(
        kafka, transactional_id=f"{kafka.topic_prefix}insights-samples-{uuid.uuid4().hex[:8]}"
    )
    await producer.start()
    count = 0
    try:

        async def send(batch: list[Record]) -> None:
            # Record batches per partition: a million records in seconds, not minutes.
            by_partition: dict[tuple[str, int], list[Record]] = {}
            for r in batch:
                partition = partition_for(r.practice_id, kafka.partitions)
                by_partition.setdefault((topic[r.kind], partition), []).append(r)
            futures = []
            for (name, partition), records in by_partition.items():
                chunk = producer.create_batch()
                for r in records:
                    key = r.key.encode()
                    if chunk.append(key=key, value=r.value, timestamp=None) is None:
                        futures.append(await producer.send_batch(chunk, name, partition=partition))
                        chunk = producer.create_batch()
                        chunk.append(key=key, value=r.value, timestamp=None)
                futures.append(await producer.send_batch(chunk, name, partition=partition))
            await asyncio.gather(*futures)

        batch: list[Record] = []
        for record in records:
            batch.append(record)
            if len(batch) >= transaction_size:
                async with producer.transaction():
                    await send(batch)
                count += len(batch)
                batch = []
        if batch:
            async with producer.transaction():
                await send(batch)
            count += len(batch)
        doomed = list(aborted)
        if doomed:
            await producer.begin_transaction()
            await send(doomed)
            await producer.flush()
            await producer.abort_transaction()
    finally:
        await producer.stop()
    return count


async def end_offsets(kafka: KafkaSettings) -> dict[TopicPartition, int]:
    """The read_committed end of every partition of the two topics insights reads."""
    topics = Topics(kafka.topic_prefix)
    consumer = make_consumer(kafka)
    await consumer.start()
    try:
        tps = [
            TopicPartition(t, p)
            for t in (topics.appointments, topics.outcomes)
            for p in range(kafka.partitions)
        ]
        return dict(await consumer.end_offsets(tps))
    finally:
        await consumer.stop()
