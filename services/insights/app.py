"""The insights service: outcomes and appointments into the follow-up projection.

A member of the consumer group (id from settings, behind the topic prefix) on
``appointments.v1`` and ``notifications.outcomes.v1``, read_committed. The positions live
in the database, committed in the same transaction as the rows they cover: on every
assignment each partition is sought to its stored position (the beginning when there is
none), and Kafka offsets are never committed. While one batch's transaction is in the
database the next batch is fetched and decoded (one write in flight, in order). A kill -9
at any moment therefore replays at most those two batches, and the writes are idempotent
(store.py), so nothing is lost or counted twice. Partitions spread over instances like in
the other services: membership, the rebalance listener and the fetch loop are the
partition-ownership runtime's (services/common/partitions.py ``GroupMember``); insights
uses no Kafka transactions, so it has no ``TransactionalPartition``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Final

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import IllegalStateError
from faststream import FastStream
from faststream.kafka import KafkaBroker
from sqlalchemy.ext.asyncio import AsyncEngine

from schemas.topics import Topics
from services.common.db import create_engine, require_current_schema
from services.common.dead_letters import ParkOnce
from services.common.kafka import check_partitions, make_consumer, make_producer
from services.common.metrics import CONSUMER_LAG, LAG_UPDATED
from services.common.partitions import Batches, GroupMember
from services.common.runtime import make_app, make_broker, module_app
from services.common.settings import Settings
from services.domain.codec import DecodeError
from services.insights.metrics import BAD_RECORDS, BATCH_SECONDS, CAUGHT_UP, ROWS_WRITTEN
from services.insights.projection import (
    Row,
    appointment_row,
    dedupe_appointments,
    dedupe_outcomes,
    outcome_row,
)
from services.insights.store import (
    is_data_error,
    load_positions,
    write_batch,
    write_batch_isolating,
)

__all__ = ["NAME", "InsightsService", "create_app"]

log = logging.getLogger(__name__)

# The service's name: its default group id and its labels.
NAME: Final = "insights"

Key = tuple[str, int]


@dataclass(frozen=True, slots=True)
class _Prepared:
    """A decoded batch on its way to the database."""

    appointments: list[Row]
    outcomes: list[Row]
    positions: dict[Key, int]
    records: int
    fetched_at: float
    started: float


class InsightsService:
    """Projects the two topics into the database, positions in the same transaction; the
    :class:`~services.common.partitions.PartitionHandler` of its group member."""

    name = NAME

    def __init__(self, settings: Settings, engine: AsyncEngine | None = None) -> None:
        self.settings = settings
        self.topics = Topics(settings.kafka.topic_prefix)
        self.group_id = f"{settings.kafka.topic_prefix}{settings.insights.group_id}"
        self.broker: KafkaBroker = make_broker(settings, self.name)
        self._engine = engine
        self._own_engine = engine is None
        self._consumer: AIOKafkaConsumer | None = None
        # Outcomes it cannot read go to their DLQ (insights is their one reader).
        self._dlq_producer: AIOKafkaProducer | None = None
        self._probe: AIOKafkaConsumer | None = None
        self._letters: ParkOnce | None = None
        # The batch in hand and a rebalance never overlap (the member's lock).
        self._member: GroupMember | None = None
        self._assigned: set[TopicPartition] = set()
        self._positions: dict[Key, int] = {}  # committed in the database
        self._claimed: dict[Key, int] = {}  # covered by a batch handed to the writer
        self._writing: asyncio.Task[None] | None = None  # at most one write in flight
        self._targets: dict[Key, int] = {}
        self._caught_up = False
        self._joined = False
        self._started = False
        self._stopping = False
        self._seen_lag: set[Key] = set()
        self.records_projected = 0
        # Monotonic times of the first committed batch and of catching up (benchmarks).
        self.first_batch_at: float | None = None
        self.caught_up_at: float | None = None

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        topics = self.topics
        kafka = self.settings.kafka
        await check_partitions(
            kafka, [topics.appointments, topics.outcomes, Topics.dlq(topics.outcomes)]
        )
        if self._engine is None:
            self._engine = create_engine(self.settings.database)
        await require_current_schema(self._engine)
        self._dlq_producer = make_producer(kafka)
        await self._dlq_producer.start()
        self._probe = make_consumer(kafka, group_id=None)
        await self._probe.start()
        self._letters = ParkOnce(topics.outcomes, self._dlq_producer, self._probe)
        self._consumer = make_consumer(
            self.settings.kafka,
            group_id=self.group_id,
            session_timeout_ms=self.settings.insights.session_timeout_ms,
            heartbeat_interval_ms=self.settings.insights.heartbeat_interval_ms,
            max_poll_records=self.settings.insights.batch_size,
        )
        self._member = GroupMember(
            self._consumer, [topics.appointments, topics.outcomes], self, name=NAME
        )
        await self._member.start()
        self._started = True
        log.info("insights started", extra={"group_id": self.group_id})

    async def stop(self) -> None:
        self._stopping = True
        if self._member is not None:
            await self._member.stop()
            self._member = self._consumer = None
        try:
            await self._settle()
        except Exception:
            log.exception("the last batch was not written; it is read again at the next start")
        for client in (self._probe, self._dlq_producer):
            if client is not None:
                await client.stop()
        self._probe = self._dlq_producer = self._letters = None
        if self._engine is not None and self._own_engine:
            await self._engine.dispose()
            self._engine = None
        self._started = False

    def readiness(self) -> tuple[bool, dict[str, object]]:
        running = self._member is not None and self._member.running
        lag = self.lag()
        ready = self._started and not self._stopping and running and self._caught_up
        return ready, {
            "caught_up": self._caught_up,
            "partitions": len(self._assigned),
            "lag": sum(lag.values()),
        }

    # ------------------------------------------------------------------ views
    @property
    def caught_up(self) -> bool:
        return self._caught_up

    def lag(self) -> dict[Key, int]:
        """Records after the stored position, per owned partition (as last fetched)."""
        consumer = self._consumer
        lags: dict[Key, int] = {}
        if consumer is None:
            return lags
        for tp in self._assigned:
            end = consumer.last_stable_offset(tp)
            if end is None:
                end = self._targets.get((tp.topic, tp.partition))
            if end is None:
                continue
            lags[(tp.topic, tp.partition)] = max(
                0, end - self._positions.get((tp.topic, tp.partition), 0)
            )
        return lags

    # ------------------------------------------------------------------ the handler
    def fetch_timeout_ms(self) -> int:
        return 500

    async def revoked(self, partitions: set[int]) -> None:
        # Called with the member's lock held: the write in flight settles first.
        try:
            await self._settle()
        except Exception:
            log.exception("projecting a batch failed; the next owner reads it again")
            self._rewind_to_stored()
        revoked = {tp for tp in self._assigned if tp.partition in partitions}
        self._assigned -= revoked
        for tp in revoked:
            if self._letters is not None and tp.topic == self.topics.outcomes:
                self._letters.forget(tp.partition)
            self._positions.pop((tp.topic, tp.partition), None)
            self._claimed.pop((tp.topic, tp.partition), None)
            self._targets.pop((tp.topic, tp.partition), None)

    async def assigned(self, partitions: set[int]) -> None:
        consumer, engine = self._consumer, self._engine
        assert consumer is not None and engine is not None
        assigned = {tp for tp in consumer.assignment() if tp.partition in partitions}
        async with engine.connect() as connection:
            stored = await load_positions(connection, {tp.topic for tp in assigned})
        for tp in assigned:
            key = (tp.topic, tp.partition)
            if key in stored:
                consumer.seek(tp, stored[key])
                self._positions[key] = stored[key]
            else:
                await consumer.seek_to_beginning(tp)
                self._positions[key] = 0
            self._claimed[key] = self._positions[key]
        if self._letters is not None:
            for tp in assigned:
                if tp.topic == self.topics.outcomes:
                    await self._letters.prepare(tp.partition)
        ends = await consumer.end_offsets(list(assigned)) if assigned else {}
        self._targets = {(tp.topic, tp.partition): off for tp, off in ends.items()}
        self._assigned = set(assigned)
        self._joined = True
        # Ready means caught up with what this instance owns now: partitions handed
        # over by a rebalance may have records after their stored position, so
        # readiness is decided again against the ends at this assignment.
        self._caught_up = False
        CAUGHT_UP.set(0)
        self._check_caught_up()
        log.info(
            "partitions assigned",
            extra={"partitions": sorted(f"{tp.topic}:{tp.partition}" for tp in assigned)},
        )

    def _check_caught_up(self) -> None:
        if self._caught_up or not self._joined:
            return
        if all(self._positions.get(k, 0) >= end for k, end in self._targets.items()):
            self._caught_up = True
            self.caught_up_at = time.monotonic()
            CAUGHT_UP.set(1)
            log.info("insights caught up", extra={"records": self.records_projected})

    # ------------------------------------------------------------------ projecting
    async def handle(self, batches: Batches) -> None:
        """Decode this batch while the previous one's transaction is still in the
        database, then hand it to the writer: one write in flight at a time, in fetch
        order, so the positions in the database only move forward. A failed write drops
        what was decoded after it and reads again from the stored positions."""
        consumer = self._consumer
        assert consumer is not None
        try:
            prepared = await self._prepare(consumer, batches)
            await self._settle()  # raises what the previous write raised
            if prepared is not None:
                self._writing = asyncio.create_task(self._write(prepared))
        except asyncio.CancelledError:
            raise
        except Exception:
            # Nothing after the stored positions was committed: read it again.
            log.exception("projecting a batch failed; retrying from stored positions")
            self._rewind_to_stored()
            await asyncio.sleep(1.0)
        self._measure_lag()

    async def _settle(self) -> None:
        """Wait for the write in flight (shielded: a cancelled caller does not cut a
        transaction short) and raise its error, if any."""
        task, self._writing = self._writing, None
        if task is not None:
            await asyncio.shield(task)

    def _rewind_to_stored(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        for tp in self._assigned:
            consumer.seek(tp, self._positions.get((tp.topic, tp.partition), 0))
        self._claimed = dict(self._positions)

    async def _skip(
        self, record: ConsumerRecord[bytes, bytes], error: DecodeError, *, park: bool
    ) -> None:
        """Leave a record out of the projection, counted and logged. An outcome goes to
        its DLQ first (insights is the one service that reads outcomes): should the
        broker not take it, the batch fails and is read again, so the position never
        moves past an outcome that is neither projected nor parked. An appointment is
        parked by the scheduler, which owns that topic's invalid records."""
        if park and self._letters is not None:
            await self._letters(record, error)
        BAD_RECORDS.labels(record.topic, error.reason).inc()
        log.warning(
            "record skipped",
            extra={
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "error_reason": error.reason,
            },
        )

    async def _prepare(
        self,
        consumer: AIOKafkaConsumer,
        batches: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]],
    ) -> _Prepared | None:
        started = time.perf_counter()
        batch_at = time.monotonic()
        appointments: list[Row] = []
        outcomes: list[Row] = []
        count = 0
        for tp, records in batches.items():
            if tp not in self._assigned:
                continue
            is_outcome = tp.topic == self.topics.outcomes
            for record in records:
                count += 1
                if record.value is None:
                    continue  # a tombstone: the last state stays
                try:
                    if is_outcome:
                        outcomes.append(outcome_row(record.value))
                    else:
                        appointments.append(appointment_row(record.value))
                except DecodeError as exc:
                    await self._skip(record, exc, park=is_outcome)
        # Positions after what was consumed, control records of transactions included,
        # beyond what the batches already handed to the writer cover.
        moved: dict[Key, int] = {}
        for tp in self._assigned:
            try:
                position = await consumer.position(tp)
            except IllegalStateError:
                continue
            key = (tp.topic, tp.partition)
            if position > self._claimed.get(key, self._positions.get(key, -1)):
                moved[key] = position
        if not moved:
            return None
        self._claimed.update(moved)
        return _Prepared(
            appointments=dedupe_appointments(appointments),
            outcomes=dedupe_outcomes(outcomes),
            positions=moved,
            records=count,
            fetched_at=batch_at,
            started=started,
        )

    async def _write(self, batch: _Prepared) -> None:
        engine = self._engine
        assert engine is not None
        try:
            async with engine.begin() as connection:
                await write_batch(
                    connection,
                    appointments=batch.appointments,
                    outcomes=batch.outcomes,
                    positions=batch.positions,
                )
        except Exception as error:
            if not is_data_error(error):
                raise  # read again from the stored positions, after a pause
            # Retrying would fail the same way for ever, for every practice: write the
            # batch row by row and leave out only what the database refuses.
            log.warning(
                "the database refused a batch; writing it row by row",
                extra={"error": type(error).__name__},
            )
            async with engine.begin() as connection:
                skipped = await write_batch_isolating(
                    connection,
                    appointments=batch.appointments,
                    outcomes=batch.outcomes,
                    positions=batch.positions,
                )
            for table, refused in skipped:
                BAD_RECORDS.labels(self._topic_of(table), "unstorable").inc()
                log.error(
                    "row skipped: the database refused it",
                    extra={"table": table, "error": type(refused).__name__},
                )
        self._positions.update(batch.positions)
        if self.first_batch_at is None and batch.records:
            self.first_batch_at = batch.fetched_at
        self.records_projected += batch.records
        ROWS_WRITTEN.labels("insights_appointments").inc(len(batch.appointments))
        ROWS_WRITTEN.labels("insights_outcomes").inc(len(batch.outcomes))
        BATCH_SECONDS.observe(time.perf_counter() - batch.started)
        self._check_caught_up()

    def _topic_of(self, table: str) -> str:
        return self.topics.outcomes if table == "insights_outcomes" else self.topics.appointments

    def _measure_lag(self) -> None:
        lags = self.lag()
        for topic, partition in self._seen_lag - lags.keys():
            with contextlib.suppress(KeyError):
                CONSUMER_LAG.remove(self.group_id, topic, str(partition))
        for (topic, partition), lag in lags.items():
            CONSUMER_LAG.labels(self.group_id, topic, str(partition)).set(lag)
        self._seen_lag = set(lags)
        LAG_UPDATED.labels(self.group_id).set_to_current_time()


def create_app(settings: Settings, *, engine: AsyncEngine | None = None) -> FastStream:
    """The FastStream app of ``reminders run insights``."""
    return make_app(InsightsService(settings, engine=engine), settings)


# ``faststream run services.insights.app:app``
__getattr__ = module_app(create_app)
