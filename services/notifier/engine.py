"""One owned partition of ``reminders.due.v1``: decide, send, commit, in small batches.

A :class:`PartitionWorker` is created when the group assigns partition p to this
instance, and gone when p is revoked. In order:

1. **Fence.** Its ``TransactionalPartition`` (services/common/partitions.py, id
   ``{prefix}{notifier.group_id}-p{p}``) opens with an empty transaction: any earlier
   owner's producer is fenced and its open transaction aborted, before anything of p
   is read.
2. **Load.** The committed offset of p and its metadata (the in-flight marker, see
   ledger.py), the ledger (outcomes of p), the preferences and appointments of p.
3. **Batches** of at most ``batch_size`` due records, each:

   - catch up the config, preferences and appointments tables, so that the state at
     send time decides (a cancel that arrived a moment ago counts);
   - decide every record (``decide``); bad records are dead-lettered;
   - if anything is to be sent and the committed offset does not already carry an
     in-flight marker covering the batch: commit the in-flight marker (plain offset
     commit, which also proves this instance is still a member of the group's
     generation);
   - render and send, concurrently across the batch;
   - one transaction: every outcome (key ``{practice}/{appointment}``, partition p,
     headers naming the due record), the dead letters, and the consumer offset, with
     the runtime's one policy for fenced, abort and retry. When the whole batch is
     answered and the next batch's records are already queued, the offset committed
     here carries the next batch's in-flight marker (``inflight:<end>`` of the records
     it will take), so that batch needs no marker commit of its own: nothing of it is
     sent before this transaction commits, so the window of sent but not committed
     mail stays one batch, and the marker stays an upper bound ("some were never
     sent"). A worker that stops cleanly with such a marker committed and unused
     commits its offset once more without it.

Broker round trips of a batch that sends: the catch-up's ListOffsets (three, in
parallel), then the marker's OffsetCommit (only for a batch not covered by the previous
transaction's marker), then the transaction: AddPartitionsToTxn, Produce,
AddOffsetsToTxn, TxnOffsetCommit, EndTxn.

**Retries.** Transient send failures are retried per message with exponential backoff
and jitter while the other messages of the batch proceed; partitions run
independently, so a slow batch holds up only its own partition. A per-recipient
failure that outlives the retries (a 4xx that keeps coming, a 5xx, a gone push
subscription) becomes a failed outcome.

**Mail server down.** When the mail server cannot be reached at all after the retries
(connection refused, timeouts, TLS or AUTH failures), or answers 4xx to every mail of a
batch of two or more (throttling, a full queue), the reminder is *blocked*, not failed:
the batch commits what it finished with the offset of the first blocked record, and the
partition pauses, backing off from ``outage_backoff_seconds`` to
``outage_backoff_max_seconds``, then tries the blocked reminders again (decided afresh:
a reminder whose appointment is now too near is suppressed as ``too_late``). Only after
``outage_max_seconds`` of continuous outage are blocked reminders recorded as failed
(``retries_exhausted``), so an outage does not turn the backlog into failures, and a
misconfiguration still ends in outcomes someone can see.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from schemas.models import (
    Appointment,
    Outcome,
    PatientPreferences,
    PracticeConfig,
    ReminderDue,
    appointment_key,
    reminder_id_for,
)
from schemas.topics import Topics
from services.common.clock import Clock
from services.common.containment import is_about_the_record, record_error
from services.common.kafka import (
    DeadLetter,
    make_producer,
    transactional_id,
)
from services.common.partitions import (
    FENCED,
    Output,
    PartitionBroken,
    PartitionFenced,
    TransactionalPartition,
)
from services.common.settings import Settings
from services.domain.codec import DecodeError, decode, encode
from services.domain.partition import partition_for
from services.domain.render import RenderedReminder, TemplateRejected, render_reminder
from services.notifier.dead_letters import dead_letter_for
from services.notifier.decide import Decision, decide
from services.notifier.delivery import Deliverer, Delivery
from services.notifier.ledger import (
    InFlight,
    Ledger,
    inflight_metadata,
    outcome_headers,
    parse_inflight,
)
from services.notifier.metrics import (
    BATCH_SECONDS,
    OUTCOMES,
    PARTITION_BLOCKED,
    PARTITION_LOADED,
    POSSIBLE_DUPLICATES,
)
from services.notifier.tables import NotifierTables

__all__ = ["POSSIBLE_DUPLICATE_NOTE", "NotifierContext", "PartitionWorker", "WorkerState"]

log = logging.getLogger(__name__)

WorkerState = Literal["loading", "ready", "blocked", "stopped", "failed"]
# How often (service time) a held partition forgets sent reminders past their memory.
_PRUNE_EVERY = timedelta(minutes=5)
# Reminders decided (rendered) between two chances for the event loop to serve others.
_DECIDE_SLICE = 8
_FENCED: tuple[type[Exception], ...] = (PartitionFenced, *FENCED)
POSSIBLE_DUPLICATE_NOTE = "possible duplicate: in flight when an earlier owner stopped"


@dataclass
class NotifierContext:
    """What the partition workers of one notifier instance share."""

    settings: Settings
    topics: Topics
    clock: Clock
    group_id: str
    partitions: int
    consumer: AIOKafkaConsumer
    admin: AIOKafkaAdminClient
    tables: NotifierTables
    deliverer: Deliverer

    def transactional_id(self, partition: int) -> str:
        settings = self.settings
        return transactional_id(settings.kafka, settings.notifier.group_id, partition)


@dataclass
class _Item:
    """One due record of a batch, from decoding to its outcome."""

    record: ConsumerRecord[bytes, bytes]
    due: ReminderDue | None = None
    letter: DeadLetter | None = None
    skip: bool = False  # already has a committed outcome
    decision: Decision | None = None
    config: PracticeConfig | None = None
    appointment: Appointment | None = None
    prefs: PatientPreferences | None = None
    rendered: RenderedReminder | None = None
    delivery: Delivery | None = None
    outcome: Outcome | None = None
    possible_duplicate: bool = False

    @property
    def offset(self) -> int:
        offset: int = self.record.offset
        return offset

    @property
    def blocked(self) -> bool:
        return self.delivery is not None and self.delivery.status == "blocked"


class _NotNow(Exception):
    """The batch cannot run right now (tables behind, group rebalancing); try again."""


@dataclass
class _BatchResult:
    retained: list[ConsumerRecord[bytes, bytes]] = field(default_factory=list)
    blocked: int = 0
    outcomes: int = 0


def _block_if_every_mail_was_refused(items: list[_Item]) -> None:
    """A relay that answers 4xx to every mail of a batch (throttling, a full queue) is
    down in effect: hold those reminders back like an outage instead of failing them.
    One refused mail alone is the recipient's matter (greylisting): it fails after the
    retries, and does not hold up the partition."""
    mail = [i for i in items if i.decision is not None and "email" in i.decision.channels]
    refused = [
        i
        for i in mail
        if i.delivery is not None
        and i.delivery.status == "failed"
        and i.delivery.channel == "email"
        and i.delivery.reason == "retries_exhausted"
    ]
    if len(mail) < 2 or not refused or not all(i.blocked or i in refused for i in mail):
        return
    for item in refused:
        assert item.delivery is not None
        item.delivery = Delivery(status="blocked", channel="email", detail=item.delivery.detail)


class PartitionWorker:
    """Processes one owned partition; see the module docstring."""

    def __init__(self, ctx: NotifierContext, partition: int) -> None:
        self.ctx = ctx
        self.partition = partition
        self.tp = TopicPartition(ctx.topics.reminders_due, partition)
        self.state: WorkerState = "loading"
        self.inflight: InFlight | None = None
        # The in-flight marker this owner's last commit left on the committed offset
        # (carried by a transaction for the batch after it), while no batch used it.
        self._marked: InFlight | None = None
        self.outcomes_committed = 0
        self.possible_duplicates = 0
        self._queue: deque[ConsumerRecord[bytes, bytes]] = deque()
        self._high = -1  # highest offset queued so far
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._producer: TransactionalPartition | None = None
        self._task: asyncio.Task[None] | None = None
        self._busy = False
        self._outage_since: datetime | None = None
        # offset -> when its delivery first failed transiently after all retries
        self._first_transient: dict[int, datetime] = {}
        self._outage_round = 0
        self._next_prune: datetime | None = None
        self.failure: BaseException | None = None
        self.failed_at: float | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"notifier-p{self.partition}")

    async def stop(self, timeout: float) -> bool:
        """Finish the batch in hand (up to `timeout`), then stop. True when it ended cleanly."""
        self._stopping.set()
        self._wake.set()
        if self._producer is not None:
            self._producer.stopping = True  # a retriable commit error: a few tries only
        clean = True
        task = self._task
        if task is not None and not task.done():
            done, _ = await asyncio.wait({task}, timeout=timeout)
            if not done:
                clean = False
                log.warning(
                    "batch did not finish in time; its sends count as in flight",
                    extra={"partition": self.partition},
                )
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if clean and self.state in ("ready", "blocked"):
            await self._clear_unused_marker()
        await self._close_producer()
        self._queue.clear()
        self.state = "stopped"
        PARTITION_LOADED.labels(str(self.partition)).set(0)
        PARTITION_BLOCKED.labels(str(self.partition)).set(0)
        return clean

    @property
    def ready(self) -> bool:
        return self.state in ("ready", "blocked")

    @property
    def idle(self) -> bool:
        return not self._busy and not self._queue

    def enqueue(self, records: Iterable[ConsumerRecord[bytes, bytes]]) -> None:
        for record in records:
            if record.offset <= self._high:
                continue  # fetched again after a seek: the earlier copy is queued already
            self._queue.append(record)
            self._high = record.offset
        self._wake.set()

    # ------------------------------------------------------------------ loading
    async def _open_producer(self) -> TransactionalPartition:
        ctx = self.ctx
        producer = TransactionalPartition(
            ctx.settings.kafka,
            ctx.settings.notifier.group_id,
            self.partition,
            make=make_producer,
            linger_ms=0,
        )
        await producer.open()  # fences the previous owner
        return producer

    async def _close_producer(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            await producer.close()

    async def _committed(self) -> tuple[int, str]:
        offsets = await self.ctx.admin.list_consumer_group_offsets(
            self.ctx.group_id, partitions=[self.tp]
        )
        committed = offsets.get(self.tp)
        if committed is None or committed.offset < 0:
            return -1, ""
        return committed.offset, committed.metadata or ""

    async def _load(self) -> None:
        ctx, p = self.ctx, self.partition
        began = time.monotonic()
        self._producer = await self._open_producer()
        committed, metadata = await self._committed()
        self.inflight = parse_inflight(committed, metadata)
        ledger = await ctx.tables.follow(
            p, committed, timeout=ctx.settings.notifier.catch_up_timeout_seconds * 3
        )
        if self.inflight is not None:
            log.warning(
                "the previous owner stopped with due reminders in flight; those sent again "
                "are counted as possible duplicates",
                extra={
                    "partition": p,
                    "inflight_start": self.inflight.start,
                    "inflight_end": self.inflight.end,
                },
            )
        log.info(
            "partition loaded",
            extra={
                "partition": p,
                "seconds": round(time.monotonic() - began, 3),
                "committed_offset": committed,
                "sent_remembered": len(ledger.sent),
            },
        )

    # ------------------------------------------------------------------ the loop
    async def _run(self) -> None:
        p = str(self.partition)
        try:
            await self._load()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._fail(exc)
            log.exception("loading partition failed", extra={"partition": self.partition})
            return
        self.state = "ready"
        PARTITION_LOADED.labels(p).set(1)
        batch_size = self.ctx.settings.notifier.batch_size
        while not self._stopping.is_set():
            if not self._queue:
                self._resume()
                self._wake.clear()
                if not self._queue and not self._stopping.is_set():
                    await self._wake.wait()
                continue
            batch = [self._queue.popleft() for _ in range(min(batch_size, len(self._queue)))]
            if not self._queue:
                self._resume()  # fetch the next records while this batch is processed
            self._busy = True
            try:
                result = await self._process(batch)
            except _NotNow as exc:
                self._requeue(batch)
                log.info("batch postponed", extra={"partition": self.partition, "why": str(exc)})
                await self._pause_for(1.0)
                continue
            except _FENCED as exc:
                self._fail(exc)
                log.error(
                    "fenced: another instance owns this partition now",
                    extra={"partition": self.partition},
                )
                return
            except asyncio.CancelledError:
                raise
            except PartitionBroken as exc:
                self._fail(exc.error)  # logged by the runtime
                return
            except Exception as exc:
                self._fail(exc)
                log.exception("batch failed", extra={"partition": self.partition})
                return
            finally:
                self._busy = False
            self._requeue(result.retained)
            if result.blocked:
                await self._outage_pause()
            elif self._outage_since is not None:
                log.info("mail server reachable again", extra={"partition": self.partition})
                self._outage_since = None
                self._outage_round = 0
                self.state = "ready"
                PARTITION_BLOCKED.labels(p).set(0)

    def _fail(self, exc: BaseException) -> None:
        self.failure = exc
        self.failed_at = time.monotonic()
        self.state = "failed"
        PARTITION_LOADED.labels(str(self.partition)).set(0)

    def _requeue(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        self._queue.extendleft(reversed(records))

    def _resume(self) -> None:
        consumer = self.ctx.consumer
        if self.tp in consumer.assignment() and self.tp in consumer.paused():
            consumer.resume(self.tp)

    async def _pause_for(self, seconds: float) -> None:
        """Sleep on the service clock, waking early when the worker is told to stop."""
        sleeper = asyncio.create_task(self.ctx.clock.sleep(seconds))
        stopper = asyncio.create_task(self._stopping.wait())
        try:
            await asyncio.wait({sleeper, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, stopper):
                task.cancel()
            await asyncio.gather(sleeper, stopper, return_exceptions=True)

    async def _outage_pause(self) -> None:
        settings = self.ctx.settings.notifier
        now = self.ctx.clock.now()
        if self._outage_since is None:
            self._outage_since = now
            log.warning(
                "mail server unreachable; pausing partition", extra={"partition": self.partition}
            )
        self.state = "blocked"
        PARTITION_BLOCKED.labels(str(self.partition)).set(1)
        delay = min(
            settings.outage_backoff_max_seconds,
            settings.outage_backoff_seconds * 2.0 ** min(self._outage_round, 30),
        )
        self._outage_round += 1
        await self._pause_for(delay)

    def _outage_exceeded(self, now: datetime) -> bool:
        if self._outage_since is None:
            return False
        limit = self.ctx.settings.notifier.outage_max_seconds
        return (now - self._outage_since).total_seconds() >= limit

    # ------------------------------------------------------------------ one batch
    async def _catch_up(self) -> None:
        timeout = self.ctx.settings.notifier.catch_up_timeout_seconds
        if not await self.ctx.tables.catch_up(self.partition, timeout):
            raise _NotNow("tables did not catch up in time")

    def _parse(self, item: _Item) -> None:
        """Decode a due record, or turn it into a dead letter with the reason."""
        record = item.record
        try:
            if record.key is None:
                raise DecodeError("no_key", "due reminders need the key {practice}/{appointment}")
            try:
                key = record.key.decode("utf-8")
            except UnicodeDecodeError:
                raise DecodeError("bad_key", "key is not UTF-8") from None
            due = decode(ReminderDue, record.value)
            if key != appointment_key(due.practice_id, due.appointment_id):
                raise DecodeError("key_mismatch", "key differs from {practice}/{appointment}")
            if due.reminder_id != reminder_id_for(due.practice_id, due.appointment_id, due.start):
                raise DecodeError(
                    "invalid", "reminder_id does not name the practice, appointment and start"
                )
            expected = partition_for(due.practice_id, self.ctx.partitions)
            if expected != self.partition:
                raise DecodeError(
                    "wrong_partition",
                    f"the practice belongs on partition {expected}, not {self.partition}",
                )
        except Exception as exc:
            if not is_about_the_record(exc):
                raise
            item.letter = dead_letter_for(record, record_error(exc, record.topic))
            return
        item.due = due

    def _decide(self, item: _Item, ledger: Ledger, now: datetime, sending: set[str]) -> None:
        ctx = self.ctx
        tables = ctx.tables
        due = item.due
        assert due is not None
        item.config = tables.configs.get(due.practice_id)
        item.appointment = tables.appointments.get(
            appointment_key(due.practice_id, due.appointment_id)
        )
        patient_id = item.appointment.patient.id if item.appointment is not None else due.patient_id
        item.prefs = tables.preferences.get(f"{due.practice_id}/{patient_id}")
        item.decision = decide(
            due,
            item.appointment,
            item.config,
            item.prefs,
            now=now,
            already_sent=ledger.already_sent(due.reminder_id) or due.reminder_id in sending,
            service_channels=ctx.deliverer.channels,
        )
        if not item.decision.send:
            return
        assert item.config is not None and item.appointment is not None
        language = item.prefs.language if item.prefs is not None else "nl"
        try:
            # Only the parts of the channels it goes by: an e-mail-only reminder never
            # renders push texts, a push-only one no e-mail.
            item.rendered = render_reminder(
                item.config, item.appointment, language, channels=item.decision.channels
            )
        except TemplateRejected as exc:
            item.outcome = self._outcome(
                item, "failed", "render_failed", None, detail=exc.reason, now=now
            )
            return
        except Exception as exc:
            log.exception(
                "rendering failed unexpectedly",
                extra={"partition": self.partition, "reminder_id": due.reminder_id},
            )
            item.outcome = self._outcome(
                item,
                "failed",
                "render_failed",
                None,
                detail=f"internal error: {type(exc).__name__}",
                now=now,
            )
            return
        sending.add(due.reminder_id)

    def _outcome(
        self,
        item: _Item,
        status: Literal["sent", "suppressed", "failed"],
        reason: str | None,
        channel: str | None,
        *,
        now: datetime,
        detail: str | None = None,
        message_id: str | None = None,
    ) -> Outcome:
        due = item.due
        assert due is not None
        if item.possible_duplicate:
            detail = f"{detail}; {POSSIBLE_DUPLICATE_NOTE}" if detail else POSSIBLE_DUPLICATE_NOTE
        return Outcome.model_validate(
            {
                "reminder_id": due.reminder_id,
                "practice_id": due.practice_id,
                "appointment_id": due.appointment_id,
                "channel": channel,
                "status": status,
                "reason": reason,
                "at": now,
                "message_id": message_id,
                "detail": detail[:500] if detail else None,
            }
        )

    def _contained_outcome(self, item: _Item, exc: Exception, now: datetime) -> Outcome | None:
        """The failed outcome of a reminder whose decision raised (None if even that
        cannot be built: the dead letter alone then)."""
        try:
            return self._outcome(
                item,
                "failed",
                "processing_failed",
                None,
                detail=f"internal error: {type(exc).__name__}",
                now=now,
            )
        except Exception:
            log.exception("no outcome for a contained record", extra={"partition": self.partition})
            return None

    def _prune(self, ledger: Ledger, now: datetime) -> None:
        """Forget sent reminders past their memory (a day after the appointment's start):
        one pass over the map at most every ``_PRUNE_EVERY`` of service time, so the map
        stays bounded however long this instance holds the partition."""
        if self._next_prune is not None and now < self._next_prune:
            return
        self._next_prune = now + _PRUNE_EVERY
        forgotten = ledger.prune(now)
        if forgotten:
            log.debug(
                "sent reminders forgotten",
                extra={"partition": self.partition, "forgotten": forgotten},
            )

    async def _process(self, batch: list[ConsumerRecord[bytes, bytes]]) -> _BatchResult:
        ctx = self.ctx
        ledger = ctx.tables.ledgers.get(self.partition)
        assert ledger is not None
        began = time.perf_counter()
        await self._catch_up()
        now = ctx.clock.now()
        self._prune(ledger, now)
        items: list[_Item] = []
        sending: set[str] = set()
        seen: set[str] = set()
        deferred: list[ConsumerRecord[bytes, bytes]] = []
        for index, record in enumerate(batch):
            if index and index % _DECIDE_SLICE == 0:
                # Deciding renders each reminder: let the SMTP sessions of the batches in
                # flight (and Kafka) be served between slices, so that the connections
                # do not stand idle while a whole batch is rendered.
                await asyncio.sleep(0)
            item = _Item(record)
            if ledger.is_answered(record.offset):
                log.debug(
                    "due record already answered",
                    extra={"partition": self.partition, "offset": record.offset},
                )
                item.skip = True
                items.append(item)
                continue
            self._parse(item)
            if item.due is not None:
                if item.due.reminder_id in seen:
                    # The same reminder twice in one batch: the second waits for the first's
                    # outcome to be committed, so that it is judged against the ledger.
                    deferred = batch[index:]
                    break
                seen.add(item.due.reminder_id)
                try:
                    self._decide(item, ledger, now, sending)
                except Exception as exc:
                    # Contained: the record goes to the DLQ, the partition goes on.
                    if not is_about_the_record(exc):
                        raise
                    sending.discard(item.due.reminder_id)
                    item.rendered = None
                    item.letter = dead_letter_for(record, record_error(exc, record.topic))
                    # Every due reminder ends in an outcome: the practice's verzendlog
                    # shows this one failed, the DLQ keeps the record to process again.
                    item.outcome = self._contained_outcome(item, exc, now)
            items.append(item)

        to_send = [i for i in items if i.rendered is not None and i.outcome is None]
        if to_send and not self._marker_covers(items):
            await self._mark_inflight(items)
        outage_is_failure = self._outage_exceeded(now)
        deliveries = await asyncio.gather(
            *(self._deliver(i, now, outage_is_failure) for i in to_send)
        )
        for item, delivery in zip(to_send, deliveries, strict=True):
            item.delivery = delivery
        if not outage_is_failure:
            _block_if_every_mail_was_refused(to_send)
            self._hold_transient_failures(to_send, now)
        after = ctx.clock.now()

        first_blocked = min((i.offset for i in items if i.blocked), default=None)
        letters: list[DeadLetter] = []
        retained: list[ConsumerRecord[bytes, bytes]] = []
        for item in items:
            if item.skip:
                continue
            if item.letter is not None:
                if first_blocked is not None and item.offset > first_blocked:
                    retained.append(item.record)  # dead-lettered once the offset passes it
                    item.outcome = None  # and its outcome written then, once
                else:
                    letters.append(item.letter)
                continue
            if item.blocked:
                retained.append(item.record)
                continue
            if item.outcome is None:
                item.outcome = self._final_outcome(item, after, outage_is_failure)
        outcomes = [i for i in items if i.outcome is not None]
        if first_blocked is not None:
            next_offset = first_blocked
        elif deferred:
            next_offset = deferred[0].offset
        else:
            next_offset = batch[-1].offset + 1
        whole = first_blocked is None and not deferred
        await self._commit(outcomes, letters, next_offset, self._next_marker(next_offset, whole))

        ledger.committed(next_offset)
        for offset in [o for o in self._first_transient if o < next_offset]:
            del self._first_transient[offset]
        for item in outcomes:
            assert item.outcome is not None
            ledger.record(item.outcome, item.offset, after)
            outcome = item.outcome
            OUTCOMES.labels(outcome.status, outcome.reason or "", outcome.channel or "").inc()
            if item.possible_duplicate:
                POSSIBLE_DUPLICATES.inc()
                self.possible_duplicates += 1
            level = logging.DEBUG if outcome.status == "suppressed" else logging.INFO
            log.log(
                level,
                "outcome committed",
                extra={
                    "partition": self.partition,
                    "reminder_id": outcome.reminder_id,
                    "practice_id": outcome.practice_id,
                    "appointment_id": outcome.appointment_id,
                    "status": outcome.status,
                    "reason": outcome.reason,
                    "channel": outcome.channel,
                },
            )
        self.outcomes_committed += len(outcomes)
        if self.inflight is not None and next_offset >= self.inflight.end:
            self.inflight = None
        BATCH_SECONDS.observe(time.perf_counter() - began)
        return _BatchResult(
            retained=retained + deferred,
            blocked=sum(1 for i in items if i.blocked),
            outcomes=len(outcomes),
        )

    def _hold_transient_failures(self, items: list[_Item], now: datetime) -> None:
        """Hold back a reminder that failed only transiently (4xx, 429, 5xx), for up to
        ``transient_hold_seconds`` from its first such failure; then it fails."""
        hold = self.ctx.settings.notifier.transient_hold_seconds
        for item in items:
            delivery = item.delivery
            if delivery is None or delivery.status != "failed":
                continue
            if delivery.reason != "retries_exhausted":
                continue
            first = self._first_transient.setdefault(item.offset, now)
            if (now - first).total_seconds() < hold:
                item.delivery = Delivery(
                    status="blocked", channel=delivery.channel, detail=delivery.detail
                )

    async def _deliver(self, item: _Item, now: datetime, outage_is_failure: bool) -> Delivery:
        due, decision, config = item.due, item.decision, item.config
        appointment, prefs, rendered = item.appointment, item.prefs, item.rendered
        assert due is not None and decision is not None and config is not None
        assert appointment is not None and prefs is not None and rendered is not None
        try:
            return await self.ctx.deliverer.deliver(
                due,
                decision.channels,
                config,
                appointment,
                prefs,
                rendered,
                now,
                outage_is_failure=outage_is_failure,
            )
        except Exception as exc:
            # A bug, not the message: record it rather than retry the batch forever.
            log.exception(
                "sending failed unexpectedly",
                extra={"partition": self.partition, "reminder_id": due.reminder_id},
            )
            return Delivery(
                status="failed",
                channel=decision.channels[0],
                reason="permanent_failure",
                detail=f"internal error: {type(exc).__name__}",
            )

    def _final_outcome(self, item: _Item, now: datetime, outage_is_failure: bool) -> Outcome:
        decision = item.decision
        assert decision is not None
        if not decision.send:
            message_id = None
            if decision.reason == "duplicate" and item.due is not None:
                ledger = self.ctx.tables.ledgers.get(self.partition)
                message_id = ledger.message_id(item.due.reminder_id) if ledger else None
            return self._outcome(
                item,
                "suppressed",
                decision.reason,
                None,
                now=now,
                detail=decision.detail,
                message_id=message_id,
            )
        delivery = item.delivery
        assert delivery is not None
        if delivery.status == "sent":
            if self.inflight is not None and item.offset in self.inflight:
                item.possible_duplicate = True
            return self._outcome(
                item,
                "sent",
                None,
                delivery.channel,
                now=now,
                detail=delivery.detail,
                message_id=delivery.message_id,
            )
        detail = delivery.detail
        if outage_is_failure and delivery.reason == "retries_exhausted":
            limit = int(self.ctx.settings.notifier.outage_max_seconds)
            detail = f"{detail}; mail server unreachable for more than {limit} s"
        return self._outcome(
            item, "failed", delivery.reason, delivery.channel, now=now, detail=detail
        )

    def _marker_covers(self, items: list[_Item]) -> bool:
        """Whether the committed offset already carries an in-flight marker over every
        record of the batch (left by the previous batch's transaction)."""
        marked = self._marked
        return (
            marked is not None and marked.start <= items[0].offset and items[-1].offset < marked.end
        )

    def _next_marker(self, next_offset: int, whole: bool) -> InFlight | None:
        """The in-flight marker of the next batch, for the transaction that commits this
        one: only when this batch is answered whole (nothing retained or deferred) and
        the next batch's records are queued already, and not while stopping."""
        if not whole or not self._queue or self._stopping.is_set():
            return None
        take = min(self.ctx.settings.notifier.batch_size, len(self._queue))
        end = self._queue[take - 1].offset + 1
        return InFlight(next_offset, end) if end > next_offset else None

    async def _mark_inflight(self, items: list[_Item]) -> None:
        """Commit the batch's first offset with ``inflight:<end>`` before sending anything."""
        start = items[0].offset
        end = items[-1].offset + 1
        try:
            await self.ctx.consumer.commit({self.tp: (start, inflight_metadata(end))})
        except KafkaError as exc:
            raise _NotNow(f"cannot mark the batch in flight: {type(exc).__name__}") from exc
        self._marked = InFlight(start, end)

    async def _clear_unused_marker(self) -> None:
        """A clean stop with the next batch's marker committed but that batch never
        started: commit the same offset without it, so that the next owner counts no
        possible duplicates for mail that was never sent. If that fails the marker
        stays, an upper bound as always."""
        marked, self._marked = self._marked, None
        if marked is None:
            return
        try:
            await self.ctx.consumer.commit({self.tp: (marked.start, "")})
        except KafkaError as exc:
            log.info(
                "could not clear the unused in-flight marker",
                extra={"partition": self.partition, "error": type(exc).__name__},
            )

    async def _commit(
        self,
        items: list[_Item],
        letters: list[DeadLetter],
        next_offset: int,
        marker: InFlight | None = None,
    ) -> None:
        """Outcomes, dead letters and the consumer offset in one transaction, with the
        runtime's policy (services/common/partitions.py): fenced raises and the worker
        stops touching the partition; a retriable error is retried on the same producer;
        otherwise the worker fails and the service's ownership path
        (``NotifierService._restart_failed``) starts the partition over from its committed
        offset, only while the group still assigns it here. Dead letters are counted
        and logged by the runtime once they are committed; outcomes by the caller."""
        producer = self._producer
        if producer is None:
            raise RuntimeError("no transactional producer: the partition is not loaded")
        topic = self.ctx.topics.outcomes
        outputs = []
        for item in items:
            outcome = item.outcome
            assert outcome is not None
            outputs.append(
                Output(
                    topic,
                    self.partition,
                    appointment_key(outcome.practice_id, outcome.appointment_id).encode(),
                    encode(outcome),
                    outcome_headers(self.partition, item.offset),
                )
            )
        offset: int | tuple[int, str] = next_offset
        if marker is not None:
            offset = (next_offset, inflight_metadata(marker.end))
        self._marked = None  # the transaction replaces whatever marker was committed
        await producer.commit(outputs, {self.tp: offset}, letters)
        self._marked = marker
