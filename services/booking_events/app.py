"""booking_events: HIS events in, the current state of every appointment out.

Reads ``his.appointments.v1`` (native AppointmentEvent JSON or FHIR R4 Appointment),
drops duplicates and stale updates by ``sequence``, classifies meetings and writes the
current state to the compacted ``appointments.v1``; bad input goes to
``his.appointments.v1.dlq.v1`` with the reason in its headers, and the next record is
processed. It is also the DLQ writer of ``practice.config.v1`` for its partitions.

Delivery: exactly once, by Kafka transactions, on the partition-ownership runtime
(services/common/partitions.py): the service is the handler of a ``GroupMember``, and per
owned partition p a ``TransactionalPartition`` writes a fetched batch (appointment
states, tombstones, dead letters) and commits its consumer offsets in one transaction
(the ack policy, see ``_commit``). So:

* nothing accepted is lost: offsets only move together with the states they produced;
  a crash before the commit aborts both and the events are read again;
* a restart, a rebalance or a connector's retry is harmless: the last-seen state (rebuilt
  from ``appointments.v1``) turns the redelivered events into duplicates;
* a zombie cannot roll an appointment back: a new owner of p opens its producer (same
  transactional id, an empty transaction) *before* it loads p, which fences the old
  owner and aborts whatever it left open. Plain at-least-once (flush, then commit
  offsets) would leave one hole: an old owner that stalled and was replaced could
  still land a late write of an older state after the new owner's newer one, and
  compaction would keep the older one.

The consumer is aiokafka rather than a FastStream subscriber because FastStream does not
wrap transactions (DESIGN.md); the FastStream broker documents the topics, and
:func:`create_app` makes the service a FastStream app with /metrics, /healthz and /readyz.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable
from datetime import timedelta
from typing import Final

from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from faststream import FastStream
from faststream.kafka import KafkaBroker

from schemas.models import Appointment, AppointmentEvent, MeetingRules
from schemas.topics import Topics
from services.booking_events import metrics
from services.booking_events.batch import Decisions, Work, decide_config, decide_event
from services.booking_events.ledger import Ledger
from services.common.clock import Clock, SystemClock
from services.common.health import loops_alive
from services.common.kafka import check_partitions, make_consumer, transactional_id
from services.common.partitions import (
    Batches,
    GroupMember,
    Output,
    PartitionBroken,
    PartitionFenced,
    TransactionalPartition,
)
from services.common.practice_config import practice_config_table
from services.common.runtime import make_app, make_broker, module_app
from services.common.settings import Settings
from services.common.table import TopicFollower

__all__ = ["NAME", "BookingEventsService", "create_app"]

log = logging.getLogger(__name__)

# The service's name: its default group id, its transactional ids and its labels.
NAME: Final = "booking-events"

_RETRY_SECONDS = 1.0
_BATCH_BYTES = 512 * 1024
_TXN_TIMEOUT_MS = 30_000
_TOMBSTONES_PER_TXN = 10_000
_YIELD_EVERY = 64  # records decided between two yields to the event loop


class BookingEventsService:
    """The service; ``start``/``stop``/``readiness`` are usable directly in tests. It is
    the :class:`PartitionHandler` of its :class:`GroupMember`."""

    name = NAME

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock | None = None,
        broker: KafkaBroker | None = None,
    ) -> None:
        self.settings = settings
        self._kafka = settings.kafka
        self._options = settings.booking_events
        self.topics = Topics(settings.kafka.topic_prefix)
        self.clock: Clock = clock or SystemClock()
        self.broker = broker if broker is not None else make_broker(settings, NAME)
        self.group_id = f"{settings.kafka.topic_prefix}{self._options.group_id}"
        # Every instance reads every practice's config; rejected configs are logged by
        # the table and dead-lettered by the owner of their partition (decide_config).
        self._config = practice_config_table(settings.kafka)
        self._member: GroupMember | None = None
        self._owned: dict[int, TransactionalPartition] = {}
        self._ledgers: dict[int, Ledger] = {}
        self._loading: set[int] = set()
        self._partitions = 0
        # The batch whose transactions are committing, and its works by partition.
        self._inflight: asyncio.Task[dict[int, bool]] | None = None
        self._unsettled: dict[int, Work] = {}
        self._retries: set[asyncio.Task[None]] = set()
        self._started = False
        self._config_loaded = False
        self._next_sweep = 0.0
        self._declare_topics()

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        topics = self.topics
        self._partitions = await check_partitions(
            self._kafka,
            [
                topics.his_appointments,
                topics.appointments,
                topics.practice_config,
                topics.dlq(topics.his_appointments),
                topics.dlq(topics.practice_config),
            ],
        )
        if self._partitions != self._kafka.partitions:
            log.warning(
                "the topics' partition count differs from REMINDERS_KAFKA__PARTITIONS; the "
                "topics' count is used",
                extra={"topics": self._partitions, "settings": self._kafka.partitions},
            )
        await self._config.start()
        await self._config.wait_loaded()
        self._config_loaded = True
        # Range assignment gives this instance the same partition numbers of both topics:
        # config partition p is DLQ'd by the owner of event partition p.
        consumer = make_consumer(
            self._kafka,
            group_id=self.group_id,
            max_poll_records=self._options.batch_size,
            fetch_max_bytes=32 * 1024 * 1024,
            max_partition_fetch_bytes=4 * 1024 * 1024,
            partition_assignment_strategy=(RangePartitionAssignor,),
            session_timeout_ms=self._options.session_timeout_ms,
            heartbeat_interval_ms=self._options.heartbeat_interval_ms,
        )
        self._member = GroupMember(
            consumer,
            [topics.his_appointments, topics.practice_config],
            self,
            name=NAME,
            retry_seconds=_RETRY_SECONDS,
        )
        await self._member.start()
        self._started = True
        log.info(
            "booking_events started",
            extra={"group_id": self.group_id, "partitions": self._partitions},
        )

    async def stop(self, *, graceful: bool = True) -> None:
        """Stop; ``graceful`` lets the batch in flight commit first, otherwise it is cut
        off wherever it is (its transaction is then aborted or left to be fenced)."""
        self._started = False
        self._cancel_retries()
        for owned in self._owned.values():
            owned.stopping = True  # a retriable commit error: a few tries only
        member = self._member
        if member is not None:
            if graceful:
                async with member.lock:
                    with contextlib.suppress(Exception):
                        await self._settle()
                    member.cancel()
            elif self._inflight is not None:
                self._inflight.cancel()
            await member.stop()
        if self._inflight is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._inflight
            self._inflight, self._unsettled = None, {}
        await self._release(set(self._owned) | set(self._ledgers))
        await self._config.stop()

    @property
    def failed(self) -> BaseException | None:
        return self._member.failed if self._member is not None else None

    @property
    def lag_topics(self) -> list[str]:
        """Topics whose consumer lag the runtime reports (reminders_consumer_lag_records)."""
        return [self.topics.his_appointments]

    def readiness(self) -> tuple[bool, dict[str, object]]:
        ready = (
            self._started
            and self._config_loaded
            and self.failed is None
            and not self._loading
            and self._member is not None
        )
        details: dict[str, object] = {
            "config_loaded": self._config_loaded,
            "partitions": sorted(self._ledgers),
            "loading": sorted(self._loading),
        }
        if self.failed is not None:
            details["error"] = str(self.failed)
        return ready, details

    def liveness(self) -> tuple[bool, dict[str, object]]:
        """/healthz: fails once the processing loop or the config table has died."""
        return loops_alive({NAME: self.failed, "practice-config": self._config.follower.failed})

    @property
    def owned(self) -> frozenset[int]:
        """Partitions whose last-seen state is loaded and whose events are processed."""
        return frozenset(self._ledgers)

    def appointment_count(self) -> int:
        return sum(len(ledger) for ledger in self._ledgers.values())

    # ------------------------------------------------------------------ the handler
    def fetch_timeout_ms(self) -> int:
        return 10 if self._inflight is not None else 200

    async def revoked(self, partitions: set[int]) -> None:
        await self._settle_and_rewind()
        await self._release(partitions)

    async def assigned(self, partitions: set[int]) -> None:
        member = self._member
        assert member is not None
        self._cancel_retries()
        await self._settle_and_rewind()
        # Every assignment rebuilds the state of every assigned partition from
        # appointments.v1: nothing of an earlier ownership is trusted.
        await self._release(set(self._owned) | set(self._ledgers))
        tps = self._tps(partitions)
        member.consumer.pause(*tps)
        try:
            await self._acquire(partitions)
        except Exception:
            log.exception("loading assigned partitions failed; retrying")
            self._acquire_later(partitions)
            return
        member.consumer.resume(*tps)

    def _tps(self, partitions: set[int]) -> list[TopicPartition]:
        member = self._member
        assert member is not None
        return [tp for tp in member.consumer.assignment() if tp.partition in partitions]

    def _cancel_retries(self) -> None:
        for task in self._retries:
            task.cancel()
        self._retries.clear()

    def _acquire_later(self, partitions: set[int]) -> None:
        """Load ``partitions`` again later, while this ownership lasts (the ownership
        path: a new producer is opened only while the group still assigns them)."""
        member = self._member
        assert member is not None
        generation = member.generation

        async def later() -> None:
            while True:
                await asyncio.sleep(_RETRY_SECONDS)
                async with member.lock:
                    if generation != member.generation or not self._started:
                        return
                    try:
                        await self._acquire(partitions)
                    except Exception:
                        log.exception("loading assigned partitions failed; retrying")
                        continue
                    member.consumer.resume(*self._tps(partitions))
                    return

        task = asyncio.create_task(later(), name=f"{NAME}-reload")
        self._retries.add(task)
        task.add_done_callback(self._retries.discard)

    async def _acquire(self, partitions: set[int]) -> None:
        """Fence earlier owners, then load the last-seen state, then sweep."""
        if not partitions:
            return
        started = time.monotonic()
        self._loading |= partitions
        owned: dict[int, TransactionalPartition] = {}
        follower: TopicFollower | None = None
        try:
            for p in sorted(partitions):
                owned[p] = TransactionalPartition(
                    self._kafka,
                    self._options.group_id,
                    p,
                    transaction_timeout_ms=_TXN_TIMEOUT_MS,
                    max_batch_size=_BATCH_BYTES,
                    linger_ms=2,
                )
            await asyncio.gather(*(partition.open() for partition in owned.values()))
            ledgers = {p: Ledger() for p in partitions}

            def apply(
                partition: int, key: str, value: bytes | None, _: ConsumerRecord[bytes, bytes]
            ) -> None:
                ledgers[partition].apply(key, value)

            follower = TopicFollower(
                self._kafka, self.topics.appointments, apply, name="appointments-state"
            )
            await follower.start()
            await follower.add(partitions)
            await follower.wait_loaded(partitions)
        except BaseException:
            for partition in owned.values():
                await partition.close()
            self._loading -= partitions
            raise
        finally:
            if follower is not None:
                await follower.stop()
        self._owned.update(owned)
        self._ledgers.update(ledgers)
        elapsed = time.monotonic() - started
        metrics.PARTITION_LOAD_SECONDS.observe(elapsed)
        for p in partitions:
            metrics.PARTITION_LOADED.labels(partition=str(p)).set(1)
        log.info(
            "partitions loaded",
            extra={
                "partitions": sorted(partitions),
                "appointments": sum(len(ledgers[p]) for p in partitions),
                "seconds": round(elapsed, 3),
            },
        )
        try:
            for p in sorted(partitions):
                await self._sweep(p)
        finally:
            self._loading -= partitions

    async def _release(self, partitions: Iterable[int]) -> None:
        for p in sorted(set(partitions)):
            self._ledgers.pop(p, None)
            metrics.PARTITION_LOADED.labels(partition=str(p)).set(0)
            partition = self._owned.pop(p, None)
            if partition is not None:
                await partition.close()

    def _transactional_id(self, partition: int) -> str:
        return transactional_id(self._kafka, self._options.group_id, partition)

    async def handle(self, batches: Batches) -> None:
        """Build, settle, commit, in a two-stage pipeline: while the transactions of one
        batch are committing, the next batch is built on top of the first one's pending
        state. A batch is settled (its state applied to the ledger) only once committed;
        if a commit fails, the batch built on it is discarded too and both are read again.
        """
        member = self._member
        assert member is not None
        fetched = time.monotonic()
        works = await self._build(batches, fetched)
        for partition, failed in (await self._settle()).items():
            newer = works.pop(partition, None)
            if newer is not None:
                member.seek(newer.first)
            member.seek(failed.first)  # the older offsets win
        await self._maybe_sweep()  # nothing in flight here
        if works:
            self._unsettled = works
            self._inflight = asyncio.create_task(self._commit_all(works))

    async def _build(self, batches: Batches, fetched: float) -> dict[int, Work]:
        """Decide every record of the batch: one Work per partition.

        CPU only, but it yields now and then, so that the transactions of the batch in
        flight make progress meanwhile (their requests and responses need the loop).
        """
        member = self._member
        assert member is not None
        works: dict[int, Work] = {}
        decisions = Decisions(
            cutoff=self._cutoff(), partitions=self._partitions, rules_of=self._meeting_rules
        )
        for tp, records in batches.items():
            if not records:
                continue
            partition = tp.partition
            ledger = self._ledgers.get(partition)
            if ledger is None or partition not in self._owned:
                # Not loaded (yet): never decide without the state. Read it again later.
                member.seek({tp: records[0].offset})
                continue
            work = works.get(partition)
            if work is None:
                earlier = self._unsettled.get(partition)
                work = works[partition] = Work(
                    partition, fetched=fetched, earlier=earlier.pending if earlier else {}
                )
            work.first[tp] = records[0].offset
            work.offsets[tp] = records[-1].offset + 1
            if tp.topic == self.topics.his_appointments:
                for start in range(0, len(records), _YIELD_EVERY):
                    for record in records[start : start + _YIELD_EVERY]:
                        decide_event(record, ledger, work, decisions)
                    await asyncio.sleep(0)
            else:
                for record in records:
                    decide_config(record, work)
        return works

    def _meeting_rules(self, practice_id: str) -> MeetingRules | None:
        config = self._config.get(practice_id)
        return config.meeting_rules if config is not None else None

    async def _settle(self) -> dict[int, Work]:
        """Wait for the batch in flight; apply what committed to the ledgers. Returns the
        works that did not commit (their partitions must be read again from their start)."""
        task, works = self._inflight, self._unsettled
        if task is None:
            return {}
        self._inflight, self._unsettled = None, {}
        committed = await task
        failed: dict[int, Work] = {}
        for partition, work in works.items():
            ledger = self._ledgers.get(partition)
            if committed.get(partition) and ledger is not None:
                ledger.update(work.pending)
                self._count(work)
            else:
                failed[partition] = work
        return failed

    async def _settle_and_rewind(self) -> None:
        member = self._member
        for work in (await self._settle()).values():
            if member is not None:
                member.seek(work.first)

    # ------------------------------------------------------------------ writing
    async def _commit_all(self, works: dict[int, Work]) -> dict[int, bool]:
        done = await asyncio.gather(*(self._commit(work) for work in works.values()))
        return dict(zip(works, done, strict=True))

    async def _commit(self, work: Work) -> bool:
        """Write the batch's output and commit its offsets in one transaction.

        The ack policy: offsets are committed only inside the transaction that writes
        what the records produced (exactly once); the runtime retries a transient error
        on the same producer. A fenced partition is left to its new owner; a partition
        whose transaction cannot go on is given up and loaded again while the group
        still assigns it. Either way nothing of the batch is applied to the ledger and
        its records are read again by whoever owns the partition.
        """
        member = self._member
        owned = self._owned.get(work.partition)
        assert member is not None
        if owned is None:
            return False
        topic = self.topics.appointments
        outputs = [Output(topic, work.partition, key, value) for key, value in work.states]
        try:
            await owned.commit(outputs, work.offsets, (*work.event_letters, *work.config_letters))
        except (PartitionFenced, PartitionBroken) as exc:
            tps = self._tps({work.partition})
            member.consumer.pause(*tps)
            if self._owned.get(work.partition) is owned:
                await self._release([work.partition])
            if isinstance(exc, PartitionBroken) and self._started:
                self._acquire_later({work.partition})
            return False
        work.committed = time.monotonic()
        return True

    def _count(self, work: Work) -> None:
        for (source, result), n in work.results.items():
            metrics.EVENTS.labels(source_system=source, result=result).inc(n)
        for rule, n in work.meetings.items():
            metrics.MEETINGS.labels(rule=rule).inc(n)
        if work.config_letters:
            metrics.CONFIG_INVALID.inc(len(work.config_letters))
        committed = work.committed or time.monotonic()
        metrics.PROCESSING_SECONDS.observe(committed - work.fetched)
        if work.oldest_ms is not None:
            lag = time.time() - (time.monotonic() - committed) - work.oldest_ms / 1000
            metrics.EVENT_AGE_SECONDS.observe(max(0.0, lag))

    # ------------------------------------------------------------------ bounded state
    def _cutoff(self) -> float:
        retention = timedelta(days=self._options.retention_days)
        return (self.clock.now() - retention).timestamp()

    async def _maybe_sweep(self) -> None:
        """Called by the loop with the lock held and no batch in flight."""
        now = time.monotonic()
        if now < self._next_sweep:
            return
        self._next_sweep = now + self._options.sweep_interval_seconds
        for p in sorted(self._ledgers):
            await self._sweep(p)

    async def sweep(self) -> int:
        """Tombstone every appointment past the retention now (also runs on a timer)."""
        member = self._member
        if member is None:
            return 0
        async with member.lock:
            await self._settle_and_rewind()
            return sum([await self._sweep(p) for p in sorted(self._ledgers)])

    async def _sweep(self, partition: int) -> int:
        """A tombstone for each appointment of ``partition`` that ended more than the
        retention ago, so a reload costs the near future plus a week, not years."""
        ledger = self._ledgers.get(partition)
        owned = self._owned.get(partition)
        if ledger is None or owned is None:
            return 0
        topic = self.topics.appointments
        expired = ledger.ended_before(self._cutoff())
        written = 0
        for start in range(0, len(expired), _TOMBSTONES_PER_TXN):
            keys = expired[start : start + _TOMBSTONES_PER_TXN]
            try:
                await owned.commit([Output(topic, partition, key.encode(), None) for key in keys])
            except (PartitionFenced, PartitionBroken):
                log.warning(
                    "writing tombstones failed; the next sweep tries again",
                    extra={"partition": partition},
                    exc_info=True,
                )
                return written
            for key in keys:
                ledger.forget(key)
            written += len(keys)
            metrics.TOMBSTONES.inc(len(keys))
        if written:
            log.info(
                "tombstoned appointments past the retention",
                extra={"partition": partition, "tombstones": written},
            )
        return written

    # ------------------------------------------------------------------ documentation
    def _declare_topics(self) -> None:
        """Publishers for the AsyncAPI document (``faststream docs gen``); the service
        itself writes through its transactional producers."""
        self.broker.publisher(
            self.topics.appointments,
            title="appointments.v1",
            description="Current state of every appointment (compacted), key "
            "{practice_id}/{appointment_id}, partition = partition_for(practice_id).",
            schema=Appointment,
        )
        self.broker.publisher(
            self.topics.dlq(self.topics.his_appointments),
            title="his.appointments.v1.dlq.v1",
            description="HIS events that were refused; headers error-reason, error-detail, "
            "source-topic, source-partition, source-offset.",
            schema=AppointmentEvent,
        )


def create_app(settings: Settings, *, clock: Clock | None = None) -> FastStream:
    """The FastStream app of ``reminders run booking-events`` (and of
    ``faststream run services.booking_events.app:app``)."""
    return make_app(BookingEventsService(settings, clock=clock), settings)


# ``faststream run services.booking_events.app:app``
__getattr__ = module_app(create_app)
