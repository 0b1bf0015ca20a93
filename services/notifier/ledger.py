"""The ledger: what the committed outcomes say was already done, per partition.

The outcomes on ``notifications.outcomes.v1`` are committed in the same Kafka
transaction as the consumer offsets of ``reminders.due.v1``, so they are the record of
what was sent. On assignment the notifier reads its partition of the outcomes topic
(read_committed) into a :class:`Ledger` and keeps only what deduplication needs:

- the reminder ids with a ``sent`` outcome, while the appointment can still be reminded
  (until a day after its start: later, the decision says ``too_late`` anyway);
- the offsets of due records that already have an outcome, at or above the committed
  consumer offset (a batch cut short by a mail outage commits the outcomes it has and an
  offset before them; after a crash those records come again and are skipped).

Each outcome record carries the due record it answers in its headers
(``due-partition``, ``due-offset``): the Outcome schema stays as it is.

The in-flight marker. Before a batch sends anything, the batch's first offset is
committed with the metadata ``inflight:<end>``: by the transaction of the batch before it
when this batch was queued by then (see services/notifier/engine.py), else by an offset
commit of its own; the transaction that commits the outcomes replaces it. If the owner
dies between the two, the next owner finds the marker and knows which due records may
have been accepted by the mail server or push service just before the crash: it counts
every one of them that it sends again as a possible duplicate (an upper bound: some were
never sent).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from aiokafka import ConsumerRecord

from schemas.models import Outcome
from services.domain.codec import DecodeError, decode

__all__ = [
    "DUE_OFFSET_HEADER",
    "DUE_PARTITION_HEADER",
    "InFlight",
    "Ledger",
    "LedgerBook",
    "outcome_headers",
    "parse_inflight",
    "reminder_start",
]

log = logging.getLogger(__name__)

DUE_PARTITION_HEADER = "due-partition"
DUE_OFFSET_HEADER = "due-offset"
INFLIGHT_PREFIX = "inflight:"
# A sent reminder is remembered until this long after its start.
SENT_MEMORY = timedelta(days=1)
# Outcomes whose reminder id has no parsable start are remembered this long after `at`.
_FALLBACK_MEMORY = timedelta(days=30)


def reminder_start(reminder_id: str) -> datetime | None:
    """The appointment start named by a reminder id (``.../2026-12-01T08:30:00Z``)."""
    _, _, stamp = reminder_id.rpartition("/")
    try:
        moment = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def outcome_headers(partition: int, offset: int) -> list[tuple[str, bytes]]:
    return [
        (DUE_PARTITION_HEADER, str(partition).encode()),
        (DUE_OFFSET_HEADER, str(offset).encode()),
    ]


def _header_int(record: ConsumerRecord[bytes, bytes], name: str) -> int | None:
    for key, value in record.headers or ():
        if key == name:
            try:
                return int(value.decode())
            except (UnicodeDecodeError, ValueError):
                return None
    return None


@dataclass(frozen=True)
class InFlight:
    """Due records [start, end) that an earlier owner may have sent without committing."""

    start: int
    end: int

    def __contains__(self, offset: object) -> bool:
        return isinstance(offset, int) and self.start <= offset < self.end

    @property
    def size(self) -> int:
        return max(0, self.end - self.start)


def inflight_metadata(end: int) -> str:
    return f"{INFLIGHT_PREFIX}{end}"


def parse_inflight(committed: int, metadata: str | None) -> InFlight | None:
    """The in-flight range a committed offset's metadata names, if any."""
    if committed < 0 or not metadata or not metadata.startswith(INFLIGHT_PREFIX):
        return None
    try:
        end = int(metadata[len(INFLIGHT_PREFIX) :])
    except ValueError:
        return None
    return InFlight(committed, end) if end > committed else None


@dataclass
class _Sent:
    message_id: str | None
    forget_after: datetime


@dataclass
class Ledger:
    """Dedup state of one partition, from its committed outcomes."""

    partition: int
    # Offsets below this have been consumed and committed; their answers are not needed.
    committed_offset: int = 0
    sent: dict[str, _Sent] = field(default_factory=dict)
    answered: set[int] = field(default_factory=set)
    outcomes_seen: int = 0

    def already_sent(self, reminder_id: str) -> bool:
        return reminder_id in self.sent

    def is_answered(self, offset: int) -> bool:
        return offset in self.answered

    def message_id(self, reminder_id: str) -> str | None:
        entry = self.sent.get(reminder_id)
        return entry.message_id if entry is not None else None

    def record(self, outcome: Outcome, due_offset: int | None, now: datetime) -> None:
        """Take in one committed outcome (ours just now, or read back from the topic)."""
        self.outcomes_seen += 1
        if due_offset is not None and due_offset >= self.committed_offset:
            self.answered.add(due_offset)
        if outcome.status != "sent":
            return
        start = reminder_start(outcome.reminder_id)
        forget_after = start + SENT_MEMORY if start is not None else outcome.at + _FALLBACK_MEMORY
        if forget_after > now:
            self.sent[outcome.reminder_id] = _Sent(outcome.message_id, forget_after)

    def committed(self, offset: int) -> None:
        """The consumer offset moved to `offset`: forget answers below it."""
        self.committed_offset = max(self.committed_offset, offset)
        self.answered = {o for o in self.answered if o >= self.committed_offset}

    def prune(self, now: datetime) -> int:
        """Forget sent reminders past their memory; the partition worker calls this
        from its batches (PartitionWorker._prune). Returns how many were forgotten."""
        stale = [rid for rid, entry in self.sent.items() if entry.forget_after <= now]
        for rid in stale:
            del self.sent[rid]
        return len(stale)


class LedgerBook:
    """The ledgers of the owned partitions, fed by a follower of the outcomes topic."""

    def __init__(self, now: Callable[[], datetime]) -> None:
        self._now = now
        self._ledgers: dict[int, Ledger] = {}

    def open(self, partition: int, committed_offset: int) -> Ledger:
        ledger = Ledger(partition, committed_offset=max(0, committed_offset))
        self._ledgers[partition] = ledger
        return ledger

    def close(self, partition: int) -> None:
        self._ledgers.pop(partition, None)

    def get(self, partition: int) -> Ledger | None:
        return self._ledgers.get(partition)

    def apply(
        self,
        partition: int,
        key: str,
        value: bytes | None,
        record: ConsumerRecord[bytes, bytes],
    ) -> None:
        """TopicFollower apply: one record of the outcomes topic."""
        ledger = self._ledgers.get(partition)
        if ledger is None or value is None:
            return
        try:
            outcome = decode(Outcome, value)
        except DecodeError as exc:
            log.warning(
                "unreadable outcome skipped",
                extra={"partition": partition, "offset": record.offset, "error": exc.reason},
            )
            return
        due_partition = _header_int(record, DUE_PARTITION_HEADER)
        due_offset = _header_int(record, DUE_OFFSET_HEADER)
        if due_partition is not None and due_partition != partition:
            due_offset = None
        ledger.record(outcome, due_offset, self._now())
