"""One owned partition: fence, load, fire and record atomically.

Per partition ``p`` this instance owns, a :class:`PartitionWorker`:

1. opens the partition's ``TransactionalPartition`` (services/common/partitions.py), id
   ``{prefix}{scheduler.group_id}-p{p}``. Its empty first transaction fences any earlier
   owner of ``p`` (a zombie after a rebalance, or the process that was killed) and
   aborts that owner's open transaction, so a reminder the old owner produced but did
   not commit is never seen (every reader is ``read_committed``) and cannot be
   committed any more;
2. reads ``reminders.fired.v1`` ``p`` to its end (what fired already) while the service's
   group consumer reads ``appointments.v1`` ``p`` from its beginning to its end;
3. only then fires: each batch of due reminders goes out in one transaction, the
   ``ReminderDue`` records on ``reminders.due.v1`` and their ``FiredMarker`` records on
   ``reminders.fired.v1`` (same key, partition ``p``), together with the marker
   tombstones that keep ``reminders.fired.v1`` bounded. A crash at any moment leaves
   either both or neither. Records of ``appointments.v1`` that cannot be used go to its
   DLQ in a transaction of the same producer (:meth:`PartitionWorker.park`).

The runtime retries a transient commit error on the same producer. A transaction that
cannot go on drops the partition's state and loads it again from Kafka (the committed
markers say what fired), while the group still assigns the partition here. A fenced
producer means another instance owns the partition now: the worker stops firing and
only tries again if the group still gives it the partition after
``fenced_retry_seconds``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import IllegalStateError
from prometheus_client import Counter

from schemas.topics import Topics
from services.common.clock import Clock
from services.common.containment import contain, is_about_the_record, record_error
from services.common.kafka import DeadLetter, make_consumer, transactional_id
from services.common.partitions import (
    FENCED,
    KeyValue,
    PartitionBroken,
    PartitionFenced,
    TransactionalPartition,
    dead_letter_watermark,
)
from services.common.settings import Settings
from services.domain.codec import DecodeError
from services.domain.partition import partition_for
from services.reminder_scheduler import metrics
from services.reminder_scheduler.due_time import Policy
from services.reminder_scheduler.planner import Event, Fire, Planner
from services.reminder_scheduler.records import (
    fired_values_of,
    read_appointment,
    read_marker_us,
    to_ms,
    to_us,
)
from services.reminder_scheduler.timers import PartitionTimers

__all__ = ["CRASH_EXIT_CODE", "PartitionWorker", "SchedulerContext", "WorkerState"]

log = logging.getLogger(__name__)

WorkerState = Literal["loading", "loaded", "fenced", "stopped"]
# The exit status of the test-only crash hook (as if killed with SIGKILL).
CRASH_EXIT_CODE = 137
_FENCED: tuple[type[Exception], ...] = (PartitionFenced, *FENCED)
_RETRY_SECONDS = 2.0
# How long a fetch of the loader (fired markers, the DLQ watermark) waits for data, and
# its back-off before it asks again.
_LOADER_WAIT_MS = 20
# reminders_scheduler_timers_total{event}, looked up once per event
_TIMER_COUNTERS: dict[str, Counter] = {}


@dataclass
class SchedulerContext:
    """What the partition workers of one scheduler instance share."""

    settings: Settings
    topics: Topics
    clock: Clock
    partitions: int
    consumer: AIOKafkaConsumer  # the group consumer of appointments.v1
    policy_of: Callable[[str], Policy]
    # called when a partition has loaded (the service freezes the loaded heap)
    on_loaded: Callable[[], None] = lambda: None
    # set once every practice's config is read: the workers plan nothing before
    configs_loaded: asyncio.Event = field(default_factory=asyncio.Event)

    _partition_of: dict[str, int] = field(default_factory=dict)

    def transactional_id(self, partition: int) -> str:
        settings = self.settings
        return transactional_id(settings.kafka, settings.scheduler.group_id, partition)

    def partition_of(self, practice_id: str) -> int:
        partition = self._partition_of.get(practice_id)
        if partition is None:
            if len(self._partition_of) > 100_000:
                self._partition_of.clear()
            partition = self._partition_of[practice_id] = partition_for(
                practice_id, self.partitions
            )
        return partition


class PartitionWorker:
    """The timers of one partition and the transactional producer that fires them."""

    def __init__(self, partition: int, ctx: SchedulerContext) -> None:
        self.partition = partition
        self.ctx = ctx
        self.tp = TopicPartition(ctx.topics.appointments, partition)
        self.state: WorkerState = "loading"
        self.planner = self._new_planner()
        self.load_seconds: float | None = None
        self.dead_letters_until = -1  # offsets up to here went to the DLQ before
        self._producer: TransactionalPartition | None = None
        self._lost: PartitionFenced | PartitionBroken | None = None  # by park()
        self._appointments_end: int | None = None
        self._loaded = asyncio.Event()
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()  # held for the length of a transaction
        self._tombstones: set[bytes] = set()
        # practice ids read and found on this partition (plan_fetched plans theirs)
        self._our_practices: set[str] = set()
        self._next_retention_scan = 0.0
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    def _new_planner(self) -> Planner:
        scheduler = self.ctx.settings.scheduler
        return Planner(
            PartitionTimers(),
            self.ctx.policy_of,
            missed_after=timedelta(seconds=scheduler.missed_after_seconds),
        )

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._set_state("loading")
        self._task = asyncio.create_task(self._run(), name=f"scheduler-p{self.partition}")

    async def stop(self) -> None:
        """Let a transaction in flight finish (bounded), then stop and close the producer."""
        self._stopping = True
        self._wake.set()
        if self._producer is not None:
            self._producer.stopping = True  # a retriable commit error: a few tries only
        timeout = self.ctx.settings.scheduler.stop_timeout_seconds
        acquired = False
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._lock.acquire(), timeout)
            acquired = True
        try:
            if self._task is not None:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
                self._task = None
            await self._close_producer()
        finally:
            if acquired:
                self._lock.release()
        self.state = "stopped"
        metrics.clear_partition(self.partition)

    def wake(self) -> None:
        self._wake.set()

    @property
    def loading(self) -> bool:
        return self.state == "loading"

    def _set_state(self, state: WorkerState) -> None:
        self.state = state
        metrics.set_partition_state(self.partition, state)

    async def _close_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.close()

    async def _run(self) -> None:
        settings = self.ctx.settings.scheduler
        while not self._stopping:
            try:
                await self._load()
                await self._fire_loop()
            except asyncio.CancelledError:
                raise
            except _FENCED:
                log.warning(
                    "fenced: another instance owns the partition now; not firing",
                    extra={"partition": self.partition},
                )
                self._set_state("fenced")
                self.planner = self._new_planner()
                await self._close_producer()
                await asyncio.sleep(settings.fenced_retry_seconds)
            except Exception:
                log.exception(
                    "partition failed; loading it again from Kafka",
                    extra={"partition": self.partition},
                )
                self._set_state("loading")
                await self._close_producer()
                await asyncio.sleep(_RETRY_SECONDS)

    # ------------------------------------------------------------------ loading
    async def _load(self) -> None:
        ctx = self.ctx
        started = time.monotonic()
        self._set_state("loading")
        self._loaded.clear()
        self._appointments_end = None
        self._lost = None
        ctx.consumer.pause(self.tp)
        await self._close_producer()
        producer = TransactionalPartition(
            ctx.settings.kafka,
            ctx.settings.scheduler.group_id,
            self.partition,
            linger_ms=5,
            # aiokafka keeps one produce request in flight per producer, and a batch of
            # a partition waits until the one before it left: a burst's transaction of
            # thousands of records takes a round trip per batch. Half the broker's default
            # message.max.bytes (1 MiB).
            max_batch_size=512 * 1024,
        )
        await producer.open()  # fences the partition's earlier owner
        self._producer = producer
        # A broker answers the requests of a connection in order: an offsets request sent
        # while the loader's fetch waits for data (fetch_max_wait_ms, 500 ms by default)
        # waits as long. The loader reads to known ends, so its fetches wait little, and
        # the offsets are asked before it is assigned anything to fetch.
        loader = make_consumer(
            ctx.settings.kafka,
            group_id=None,
            max_poll_records=10000,
            fetch_max_wait_ms=_LOADER_WAIT_MS,
            # each topic it has no metadata for yet costs a retry of the offsets request
            retry_backoff_ms=_LOADER_WAIT_MS,
        )
        await loader.start()
        try:
            fired_tp = TopicPartition(ctx.topics.reminders_fired, self.partition)
            dlq_tp = TopicPartition(Topics.dlq(ctx.topics.appointments), self.partition)
            ends = await loader.end_offsets([self.tp, fired_tp, dlq_tp])
            begins = await loader.beginning_offsets([self.tp])
            self.dead_letters_until = await dead_letter_watermark(
                loader, ctx.topics.appointments, self.partition, end=ends[dlq_tp]
            )
            self.planner = self._new_planner()
            # the partition's offsets bound its keys (fired markers share them): the
            # table is sized once rather than rehashed again and again as the load fills it
            self.planner.timers.reserve(ends[self.tp] - begins[self.tp])
            self._tombstones.clear()
            markers_read = False
            if not ctx.configs_loaded.is_set():
                # The markers meanwhile: whether a marker or its appointment is read
                # first does not matter (the two are read side by side below).
                await self._load_markers(loader, fired_tp, ends[fired_tp])
                markers_read = True
                await ctx.configs_loaded.wait()
            await ctx.consumer.seek_to_beginning(self.tp)
            ctx.consumer.resume(self.tp)
            if not markers_read:
                await self._load_markers(loader, fired_tp, ends[fired_tp])
        finally:
            await loader.stop()
        self._appointments_end = ends[self.tp]
        await self._loaded.wait()
        self.load_seconds = time.monotonic() - started
        metrics.PARTITION_LOAD_SECONDS.labels(partition=str(self.partition)).set(self.load_seconds)
        self._next_retention_scan = 0.0
        self._set_state("loaded")
        self.ctx.on_loaded()
        log.info(
            "partition loaded",
            extra={
                "partition": self.partition,
                "load_seconds": round(self.load_seconds, 3),
                "pending": self.planner.timers.pending,
                "markers": self.planner.timers.markers,
            },
        )

    async def _load_markers(self, loader: AIOKafkaConsumer, tp: TopicPartition, end: int) -> None:
        loader.assign([tp])
        await loader.seek_to_beginning(tp)
        while await loader.position(tp) < end:
            batches = await loader.getmany(tp, timeout_ms=200)
            for record in batches.get(tp, []):
                self._apply_marker(record)

    def _apply_marker(self, record: ConsumerRecord[bytes, bytes]) -> None:
        key = record.key
        if key is None:
            return
        if record.value is None:
            self.planner.timers.drop_marker(key)
            return
        try:
            practice_id, appointment_id, start_us, end_us = read_marker_us(record.value)
        except DecodeError as exc:
            log.warning(
                "unreadable fired marker skipped",
                extra={"partition": self.partition, "offset": record.offset, "error": exc.reason},
            )
            return
        if f"{practice_id}/{appointment_id}".encode() != key:
            log.warning(
                "fired marker under another key skipped",
                extra={"partition": self.partition, "offset": record.offset},
            )
            return
        # Planner.marker, from the integers
        self.planner.timers.set_marker(key, start_us // 1_000_000, end_us // 1_000_000)

    async def check_loaded(self) -> None:
        """Called by the consuming loop: has it read appointments.v1 p to the end?"""
        end = self._appointments_end
        if end is None or self._loaded.is_set() or self._stopping:
            return
        try:
            position = await self.ctx.consumer.position(self.tp)
        except IllegalStateError:
            return  # revoked meanwhile; stop() follows
        if position >= end:
            self._loaded.set()

    # ------------------------------------------------------------------ appointments
    def apply(self, record: ConsumerRecord[bytes, bytes], now: datetime) -> DeadLetter | None:
        """Apply one record of appointments.v1; a record that cannot be used is returned
        as a dead letter (unless an earlier owner sent it already). An unexpected error
        about the record dead-letters it too (services.common.containment)."""
        try:
            return self._apply(record, now)
        except Exception as exc:
            if not is_about_the_record(exc):
                raise
            # As for any refused record, the appointment's last good state stays planned.
            return self._dead_letter(record, record_error(exc, record.topic))

    def apply_many(
        self, records: list[ConsumerRecord[bytes, bytes]], now: datetime
    ) -> list[DeadLetter]:
        """:meth:`apply` over a fetched batch, with the same outcome per record: the
        plain case (a booked appointment ahead, under its own key, of a practice read
        on this partition before) planned by :meth:`Planner.plan_fetched` without a call
        per record, everything else through :meth:`apply`, in its place."""
        letters: list[DeadLetter] = []
        apply = self.apply

        def general(record: ConsumerRecord[bytes, bytes]) -> None:
            letter = apply(record, now)
            if letter is not None:
                letters.append(letter)

        planned, rescheduled = self.planner.plan_fetched(records, now, self._our_practices, general)
        if self.state == "loaded":
            if planned:
                self._count_many("planned", planned)
            if rescheduled:
                self._count_many("rescheduled", rescheduled)
        return letters

    def _apply(self, record: ConsumerRecord[bytes, bytes], now: datetime) -> DeadLetter | None:
        key = record.key
        if key is None:
            return self._dead_letter(record, DecodeError("no_key", "compacted records need a key"))
        if record.value is None:
            event, had_marker = self.planner.removed(key)
            if had_marker:
                self._tombstones.add(key)
            self._count(event)
            return None
        try:
            appointment = read_appointment(record.value)
        except DecodeError as exc:
            return self._dead_letter(record, exc)
        if appointment.key.encode() != key:
            return self._dead_letter(
                record,
                DecodeError("key_mismatch", "the key is not {practice_id}/{appointment_id}"),
            )
        practice_id = appointment.practice_id
        if practice_id not in self._our_practices:
            if self.ctx.partition_of(practice_id) != self.partition:
                return self._dead_letter(
                    record,
                    DecodeError("wrong_partition", "the record is not on its practice's partition"),
                )
            if len(self._our_practices) < 100_000:
                # read and checked: plan_fetched plans its next appointments itself
                self._our_practices.add(practice_id)
        self._count(self.planner.appointment(key, appointment, now))
        return None

    async def park(self, letters: list[DeadLetter]) -> None:
        """Write dead letters of appointments.v1 in a transaction of this partition's
        producer (counted once it commits). If it cannot, the partition is loaded again
        (or left, if fenced); the reload parks them, and the watermark skips those that
        made it."""
        async with self._lock:
            producer = self._producer
            if producer is None or self._stopping:
                return  # not ours any more: the next owner reads them again
            try:
                await producer.commit([], dead_letters=letters)
            except (PartitionFenced, PartitionBroken) as exc:
                self._lost = exc
                self.wake()

    def _dead_letter(
        self, record: ConsumerRecord[bytes, bytes], error: DecodeError
    ) -> DeadLetter | None:
        metrics.APPOINTMENTS_INVALID.labels(reason=error.reason).inc()
        if record.offset <= self.dead_letters_until:
            return None
        return DeadLetter.of(record, error)

    def _count(self, event: Event | None) -> None:
        # Loading plans the whole partition again: only live changes are counted.
        if event is not None and self.state == "loaded":
            self._count_many(event, 1)

    @staticmethod
    def _count_many(event: Event, count: int) -> None:
        counter = _TIMER_COUNTERS.get(event)
        if counter is None:
            counter = _TIMER_COUNTERS[event] = metrics.TIMERS.labels(event=event)
        counter.inc(count)

    def replan_practice(self, practice_id: str) -> None:
        changed = self.planner.replan_practice(practice_id, self.ctx.clock.now())
        if changed:
            metrics.TIMERS.labels(event="rescheduled").inc(changed)
            log.info(
                "practice policy changed; timers planned again",
                extra={"practice_id": practice_id, "rescheduled": changed},
            )
        self.wake()

    def update_gauges(self) -> None:
        metrics.PENDING_TIMERS.labels(partition=str(self.partition)).set(
            self.planner.timers.pending
        )

    # ------------------------------------------------------------------ firing
    async def _fire_loop(self) -> None:
        ctx = self.ctx
        settings = ctx.settings.scheduler
        while not self._stopping:
            if self._lost is not None:
                raise self._lost
            now = ctx.clock.now()
            fires: list[Fire] = []
            for timer in self.planner.timers.pop_due(to_ms(now), settings.fire_batch_size):
                # A timer that cannot fire (contained: counted and logged) is dropped, so
                # that the partition is not reloaded only to stop at it again.
                fire = contain(ctx.topics.appointments, self.planner.at_fire, timer, now)
                if isinstance(fire, DecodeError):
                    continue
                if fire is None:
                    metrics.MISSED.inc()
                else:
                    fires.append(fire)
            tombstones = self._take_tombstones(now)
            if fires or tombstones:
                await self._commit(fires, tombstones, now)
                continue
            self.update_gauges()
            next_ms = self.planner.timers.next_due_ms()
            wait = settings.tick_seconds
            if next_ms is not None:
                wait = min(wait, max(0.0, (next_ms - to_ms(now)) / 1000))
            await self._nap(wait)

    async def _nap(self, seconds: float) -> None:
        if self._wake.is_set():
            self._wake.clear()
            return
        waker = asyncio.ensure_future(self._wake.wait())
        sleeper = asyncio.ensure_future(self.ctx.clock.sleep(seconds))
        try:
            await asyncio.wait({waker, sleeper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (waker, sleeper):
                task.cancel()
            self._wake.clear()

    def _take_tombstones(self, now: datetime) -> list[bytes]:
        settings = self.ctx.settings.scheduler
        limit = settings.fire_batch_size
        if time.monotonic() >= self._next_retention_scan and len(self._tombstones) < limit:
            cutoff = now - timedelta(days=settings.retention_days)
            expired = self.planner.timers.expired_markers(
                to_ms(cutoff) // 1000, limit - len(self._tombstones)
            )
            self._tombstones.update(expired)
            more = len(expired) >= limit
            self._next_retention_scan = time.monotonic() + (
                0.0 if more else settings.retention_scan_seconds
            )
        taken: list[bytes] = []
        while self._tombstones and len(taken) < limit:
            taken.append(self._tombstones.pop())
        return taken

    async def _commit(self, fires: list[Fire], tombstones: list[bytes], now: datetime) -> None:
        ctx = self.ctx
        topics = ctx.topics
        partition = self.partition
        due_topic, fired_topic = topics.reminders_due, topics.reminders_fired
        fired_us = to_us(now)
        due_records: list[KeyValue] = []
        fired_records: list[KeyValue] = []
        add_due, add_fired = due_records.append, fired_records.append
        values = self._values
        for fire in fires:
            due, marker = values(fire, fired_us)
            key = fire.timer.key
            add_due((key, due))
            add_fired((key, marker))
        fired_records += [(key, None) for key in tombstones]
        grouped = {(due_topic, partition): due_records, (fired_topic, partition): fired_records}
        async with self._lock:
            if self._stopping:
                return
            producer = self._producer
            assert producer is not None
            try:
                await producer.commit(
                    [], grouped=grouped, before_commit=self._crash_hook(len(fires))
                )
            except BaseException:
                metrics.TRANSACTIONS.labels(result="failed").inc()
                raise
        metrics.TRANSACTIONS.labels(result="committed").inc()
        metrics.MARKER_TOMBSTONES.inc(len(tombstones))
        for key in tombstones:
            self.planner.timers.drop_marker(key)
        fired_at_ms = fired_us // 1000
        metrics.FIRED.inc(len(fires))
        metrics.MISSED.inc(sum(fire.missed for fire in fires))
        fired = self.planner.fired
        for fire in fires:
            fired(fire)
        # one lateness per due time: a burst's batch shares a handful of them
        due_counts = collections.Counter([fire.timer.due_ms for fire in fires])
        metrics.FIRING_LATENESS.observe_counts(
            (max(0.0, (fired_at_ms - due_ms) / 1000), count) for due_ms, count in due_counts.items()
        )
        if log.isEnabledFor(logging.DEBUG):
            for fire in fires:
                practice_id, _, appointment_id = fire.timer.key.decode().partition("/")
                log.debug(
                    "reminder due",
                    extra={
                        "partition": partition,
                        "practice_id": practice_id,
                        "appointment_id": appointment_id,
                        "reason": fire.reason,
                    },
                )
        self.update_gauges()

    def _crash_hook(self, reminders: int) -> Callable[[], None] | None:
        if not self.ctx.settings.scheduler.crash_after_send:
            return None

        def crash() -> None:
            log.error(
                "crash hook: exiting between producing and committing",
                extra={"partition": self.partition, "reminders": reminders},
            )
            os._exit(CRASH_EXIT_CODE)

        return crash

    @staticmethod
    def _values(fire: Fire, fired_us: int) -> tuple[bytes, bytes]:
        timer = fire.timer
        return fired_values_of(
            timer.key,
            timer.patient_id,
            timer.start_us,
            timer.end_s * 1_000_000,
            timer.sequence,
            timer.due_ms * 1000,
            fired_us,
            fire.reason,
        )
