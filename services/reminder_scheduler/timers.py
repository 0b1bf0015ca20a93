"""The timers of one partition, held compactly: about 160 bytes per pending reminder.

Per appointment key there is one record, a single ``bytes`` object::

    start_us  q   start of the appointment the pending timer is for (µs since the epoch)
    due_ms    q   when the pending timer is due (ms since the epoch)
    end_s     I   end of that appointment (s)
    booked_s  I   booked_at (s), to plan again when the practice's policy changes
    sequence  Q   the appointment's sequence
    fired_s   I   start (s) named by the fired marker on reminders.fired.v1, if any
    fired_end I   end (s) of that appointment, for the marker's retention
    flags     B   PENDING | MARKER | reason
    key_len   B
    key           {practice_id}/{appointment_id}
    patient       the patient id

A record lives while the appointment has a pending timer or a fired marker. Records sit
in a list; an open-addressing hash table of ``int32`` slots (at most half full) finds
them by key (a ``dict`` of ``bytes`` would cost about 70 bytes more per timer).

Due times are kept in a timer wheel: a bucket per minute holds record indices
(``array('I')``, 4 bytes each), a heap orders the buckets, and the bucket whose minute
has come is moved into a small heap of ``(due_ms, index)``. Entries are never removed
from buckets or heaps; an entry whose record no longer says "pending, due then" is
skipped when it comes up (lazy deletion).

Fired-marker starts are compared in whole seconds, the precision of reminder ids.
"""

from __future__ import annotations

import bisect
import heapq
import struct
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, replace
from enum import Enum
from typing import Literal, NamedTuple

__all__ = ["Change", "PartitionTimers", "Timer", "TimerFields"]

Reason = Literal["booked_recently", "too_late"]

_HEAD = struct.Struct("<qqIIQIIBB")
_HEAD_SIZE = _HEAD.size
_KEY_LEN_AT = _HEAD_SIZE - 1
_FLAGS_AT = _HEAD_SIZE - 2
_DUE = struct.Struct("<q")
_DUE_AT = 8
_FIRED_END = struct.Struct("<I")
_FIRED_END_AT = 36  # after start_us, due_ms, end_s, booked_s, sequence, fired_s

_PENDING = 0x01
_MARKER = 0x02
_REASON_SHIFT = 2
_REASONS: tuple[Reason | None, ...] = (None, "booked_recently", "too_late")
_REASON_CODE: dict[Reason | None, int] = {r: i for i, r in enumerate(_REASONS)}

_U32 = 0xFFFFFFFF
_EMPTY = 0
_DELETED = -1
_MIN_SLOTS = 16
_MAX_INDEX = 2**63  # above every record index: (due_ms, _MAX_INDEX) ends due_ms


def _u32(seconds: int) -> int:
    return min(max(seconds, 0), _U32)


class Change(Enum):
    PLANNED = "planned"
    RESCHEDULED = "rescheduled"
    UPDATED = "updated"  # same start and due; sequence, end or patient changed
    UNCHANGED = "unchanged"
    ALREADY_FIRED = "already_fired"


class TimerFields(NamedTuple):
    """What a pending timer needs, in integer form."""

    start_us: int
    end_s: int
    booked_s: int
    sequence: int
    due_ms: int
    reason: Reason | None
    patient_id: bytes


class Timer(NamedTuple):
    """A pending timer, decoded (for firing and for planning again)."""

    key: bytes
    start_us: int
    end_s: int
    booked_s: int
    sequence: int
    due_ms: int
    reason: Reason | None
    patient_id: bytes

    @property
    def start_s(self) -> int:
        return self.start_us // 1_000_000


_new_timer = tuple.__new__  # Timer(...) without the keyword-argument layer


def _timer_of(record: bytes) -> Timer:
    return _timer_from(record, _HEAD.unpack_from(record))


def _timer_from(record: bytes, head: tuple[int, ...]) -> Timer:
    """The timer of a record whose head is unpacked already."""
    start_us, due_ms, end_s, booked_s, sequence, _, _, flags, key_len = head
    key_end = _HEAD_SIZE + key_len
    return _new_timer(
        Timer,
        (
            record[_HEAD_SIZE:key_end],
            start_us,
            end_s,
            booked_s,
            sequence,
            due_ms,
            _REASONS[(flags >> _REASON_SHIFT) & 0x03],
            record[key_end:],
        ),
    )


@dataclass(frozen=True, slots=True)
class _Parts:
    key: bytes
    start_us: int = 0
    due_ms: int = 0
    end_s: int = 0
    booked_s: int = 0
    sequence: int = 0
    fired_s: int = 0
    fired_end_s: int = 0
    flags: int = 0
    patient_id: bytes = b""

    def pack(self) -> bytes:
        head = _HEAD.pack(
            self.start_us,
            self.due_ms,
            _u32(self.end_s),
            _u32(self.booked_s),
            self.sequence,
            _u32(self.fired_s),
            _u32(self.fired_end_s),
            self.flags,
            len(self.key),
        )
        return head + self.key + self.patient_id

    @property
    def pending(self) -> bool:
        return bool(self.flags & _PENDING)

    @property
    def has_marker(self) -> bool:
        return bool(self.flags & _MARKER)

    def timer(self) -> Timer:
        return Timer(
            key=self.key,
            start_us=self.start_us,
            end_s=self.end_s,
            booked_s=self.booked_s,
            sequence=self.sequence,
            due_ms=self.due_ms,
            reason=_REASONS[(self.flags >> _REASON_SHIFT) & 0x03],
            patient_id=self.patient_id,
        )

    def without_timer(self) -> _Parts:
        return _Parts(self.key, fired_s=self.fired_s, fired_end_s=self.fired_end_s, flags=_MARKER)

    def without_marker(self) -> _Parts:
        return replace(self, fired_s=0, fired_end_s=0, flags=self.flags & ~_MARKER)


def _unpack(record: bytes) -> _Parts:
    start_us, due_ms, end_s, booked_s, sequence, fired_s, fired_end_s, flags, key_len = (
        _HEAD.unpack_from(record)
    )
    key_end = _HEAD_SIZE + key_len
    return _Parts(
        record[_HEAD_SIZE:key_end],
        start_us,
        due_ms,
        end_s,
        booked_s,
        sequence,
        fired_s,
        fired_end_s,
        flags,
        record[key_end:],
    )


class PartitionTimers:
    """Pending timers and fired markers of one partition, by appointment key."""

    def __init__(self, bucket_ms: int = 60_000) -> None:
        self._bucket_ms = bucket_ms
        self._records: list[bytes | None] = []
        self._free: list[int] = []
        self._slots = array("i", bytes(4 * _MIN_SLOTS))
        self._mask = _MIN_SLOTS - 1
        self._filled = 0  # slots in use or deleted
        self._live = 0
        self.pending = 0
        self.markers = 0
        # the wheel
        self._buckets: dict[int, array[int]] = {}
        self._bucket_heap: list[int] = []
        self._ready: list[tuple[int, int]] = []
        self._drained = -(2**62)  # buckets up to this one have moved into _ready
        # record index by key of the timers the last pop_due handed out: their markers
        # follow in a moment (set_marker), found without probing the table
        self._popped: dict[bytes, int] = {}

    # ------------------------------------------------------------------ hash table
    def __len__(self) -> int:
        return self._live

    def _find(self, key: bytes) -> tuple[int, int]:
        """(record index or -1, slot of the record or where to insert it)."""
        slots = self._slots
        records = self._records
        mask = self._mask
        key_len = len(key)
        h = hash(key)
        perturb = h & 0xFFFFFFFFFFFFFFFF
        i = h & mask
        insert_at = -1
        while True:
            s = slots[i]
            if s == _EMPTY:
                return -1, (i if insert_at < 0 else insert_at)
            if s == _DELETED:
                if insert_at < 0:
                    insert_at = i
            else:
                record = records[s - 1]
                assert record is not None
                if record[_KEY_LEN_AT] == key_len and record.startswith(key, _HEAD_SIZE):
                    return s - 1, i
            perturb >>= 5
            i = (i * 5 + perturb + 1) & mask

    def _insert(self, slot: int, record: bytes) -> int:
        if self._free:
            index = self._free.pop()
            self._records[index] = record
        else:
            index = len(self._records)
            self._records.append(record)
        if self._slots[slot] == _EMPTY:
            self._filled += 1
        self._slots[slot] = index + 1
        self._live += 1
        if self._filled * 2 > len(self._slots):
            self._rehash()
        return index

    def _delete(self, index: int, slot: int) -> None:
        self._slots[slot] = _DELETED
        self._records[index] = None
        self._free.append(index)
        self._live -= 1
        if not self._live:
            self._free.clear()
            self._records.clear()

    def _rehash(self) -> None:
        size = _MIN_SLOTS
        while size < self._live * 4:
            size *= 2
        slots = array("i", bytes(4 * size))
        mask = size - 1
        for index, record in enumerate(self._records):
            if record is None:
                continue
            key = record[_HEAD_SIZE : _HEAD_SIZE + record[_KEY_LEN_AT]]
            h = hash(key)
            perturb = h & 0xFFFFFFFFFFFFFFFF
            i = h & mask
            while slots[i] != _EMPTY:
                perturb >>= 5
                i = (i * 5 + perturb + 1) & mask
            slots[i] = index + 1
        self._slots = slots
        self._mask = mask
        self._filled = self._live

    # ------------------------------------------------------------------ the wheel
    def _enqueue(self, index: int, due_ms: int) -> None:
        bucket = due_ms // self._bucket_ms
        if bucket <= self._drained:
            heapq.heappush(self._ready, (due_ms, index))
            return
        entries = self._buckets.get(bucket)
        if entries is None:
            entries = self._buckets[bucket] = array("I")
            heapq.heappush(self._bucket_heap, bucket)
        entries.append(index)

    def _due_if_pending(self, index: int) -> int | None:
        record = self._records[index] if index < len(self._records) else None
        if record is None or not record[_FLAGS_AT] & _PENDING:
            return None
        due: int = _DUE.unpack_from(record, _DUE_AT)[0]
        return due

    def _drain(self, until_ms: int) -> None:
        bucket_ms = self._bucket_ms
        ready = self._ready
        records = self._records
        moved = False
        while self._bucket_heap and self._bucket_heap[0] * bucket_ms <= until_ms:
            bucket = heapq.heappop(self._bucket_heap)
            self._drained = max(self._drained, bucket)
            count = len(records)
            for index in self._buckets.pop(bucket):
                record = records[index] if index < count else None
                if record is None or not record[_FLAGS_AT] & _PENDING:
                    continue
                due: int = _DUE.unpack_from(record, _DUE_AT)[0]
                if due // bucket_ms == bucket:
                    ready.append((due, index))
                    moved = True
        if moved:
            ready.sort()  # a sorted list is a heap, and pop_due takes slices of it

    def pop_due(self, now_ms: int, limit: int) -> list[Timer]:
        """Up to ``limit`` pending timers due at ``now_ms``, earliest first.

        They stay pending until :meth:`set_marker` records that they fired.
        """
        self._drain(now_ms)
        ready = self._ready
        out: list[Timer] = []
        popped = self._popped = {}
        if not ready or ready[0][0] > now_ms:
            return out
        # Taken as slices of the sorted heap rather than one heappop each (a burst
        # takes thousands at a time); what is left of a sorted list is still a heap.
        ready.sort()
        records = self._records
        count = len(records)
        unpack = _HEAD.unpack_from
        taken: set[int] = set()
        done = 0
        while len(out) < limit and done < len(ready):
            end = min(
                bisect.bisect_right(ready, (now_ms, _MAX_INDEX), done), done + limit - len(out)
            )
            if end <= done:
                break
            for due_ms, index in ready[done:end]:
                record = records[index] if index < count else None
                if record is None or index in taken:
                    continue
                head = unpack(record)
                if head[1] != due_ms or not head[7] & _PENDING:
                    continue  # lazily deleted: moved, fired or cancelled since
                taken.add(index)
                timer = _timer_from(record, head)
                popped[timer.key] = index
                out.append(timer)
            done = end
        del ready[:done]
        return out

    def next_due_ms(self) -> int | None:
        """When the earliest pending timer is due (None: no timers)."""
        ready = self._ready
        while True:
            while ready and self._due_if_pending(ready[0][1]) != ready[0][0]:
                heapq.heappop(ready)
            if not self._bucket_heap:
                return ready[0][0] if ready else None
            bucket_start = self._bucket_heap[0] * self._bucket_ms
            if ready and ready[0][0] < bucket_start:
                return ready[0][0]
            self._drain(bucket_start)  # one minute early: exact due times, in the heap

    # ------------------------------------------------------------------ timers
    def _record(self, index: int) -> _Parts:
        record = self._records[index]
        assert record is not None
        return _unpack(record)

    def reserve(self, count: int) -> None:
        """Size the table for ``count`` records before a load (a partition's offsets
        bound its appointments): no rehash of everything read so far on the way there.
        At most half full at ``count``, as after a rehash."""
        size = len(self._slots)
        if self._filled or count * 2 <= size:
            return
        while size < count * 2:
            size *= 2
        self._slots = array("i", bytes(4 * size))
        self._mask = size - 1

    def upsert(self, key: bytes, timer: TimerFields) -> Change:
        """Plan (or re-plan) the timer of an appointment that should be reminded."""
        return self.plan(key, *timer)

    def plan(
        self,
        key: bytes,
        start_us: int,
        end_s: int,
        booked_s: int,
        sequence: int,
        due_ms: int,
        reason: Reason | None,
        patient_id: bytes,
    ) -> Change:
        """:meth:`upsert` with the fields as arguments (the load's path: one call per
        appointment, no ``TimerFields`` built); a key not seen before is inserted without
        the general probe loop when its first slot is free."""
        flags = _PENDING if reason is None else _PENDING | (_REASON_CODE[reason] << _REASON_SHIFT)
        if not (0 <= end_s <= _U32 and 0 <= booked_s <= _U32):
            end_s, booked_s = _u32(end_s), _u32(booked_s)
        slots = self._slots
        h = hash(key)
        slot = h & self._mask
        s = slots[slot]
        if s > _EMPTY:  # a record's slot (empty is 0, deleted -1)
            # _find, inline for a key not in the table (a load's collisions)
            records = self._records
            mask = self._mask
            key_len = len(key)
            perturb = h & 0xFFFFFFFFFFFFFFFF
            while True:
                record = records[s - 1]
                assert record is not None
                if record[_KEY_LEN_AT] == key_len and record.startswith(key, _HEAD_SIZE):
                    break  # the key's record: _upsert
                perturb >>= 5
                slot = (slot * 5 + perturb + 1) & mask
                s = slots[slot]
                if s <= _EMPTY:  # empty or deleted
                    break
        if s == _EMPTY:
            record = (
                _HEAD.pack(start_us, due_ms, end_s, booked_s, sequence, 0, 0, flags, len(key))
                + key
                + patient_id
            )
            records = self._records
            if self._free:
                index = self._free.pop()
                records[index] = record
            else:
                index = len(records)
                records.append(record)
            slots[slot] = index + 1
            self._filled += 1
            self._live += 1
            self.pending += 1
            if self._filled * 2 > len(slots):
                self._rehash()
            bucket = due_ms // self._bucket_ms
            entries = self._buckets.get(bucket)
            if entries is not None and bucket > self._drained:
                entries.append(index)
            else:
                self._enqueue(index, due_ms)
            return Change.PLANNED
        return self._upsert(key, start_us, end_s, booked_s, sequence, due_ms, flags, patient_id)

    def _upsert(
        self,
        key: bytes,
        start_us: int,
        end_s: int,
        booked_s: int,
        sequence: int,
        due_ms: int,
        flags: int,
        patient_id: bytes,
    ) -> Change:
        index, slot = self._find(key)
        fired_s = fired_end_s = 0
        old: bytes | None = None
        if index >= 0:
            old = self._records[index]
            assert old is not None
            old_start_us, old_due_ms, _, _, _, fired_s, fired_end_s, old_flags, _ = (
                _HEAD.unpack_from(old)
            )
            if old_flags & _MARKER:
                if fired_s == start_us // 1_000_000:
                    if old_flags & _PENDING:
                        self._records[index] = _Parts(
                            key, fired_s=fired_s, fired_end_s=fired_end_s, flags=_MARKER
                        ).pack()
                        self.pending -= 1
                    return Change.ALREADY_FIRED
                flags |= _MARKER
        record = (
            _HEAD.pack(
                start_us,
                due_ms,
                end_s,
                booked_s,
                sequence,
                fired_s,
                fired_end_s,
                flags,
                len(key),
            )
            + key
            + patient_id
        )
        if old is None:
            index = self._insert(slot, record)
            self.pending += 1
            self._enqueue(index, due_ms)
            return Change.PLANNED
        if record == old:
            return Change.UNCHANGED
        self._records[index] = record
        if not old_flags & _PENDING:
            self.pending += 1
            self._enqueue(index, due_ms)
            return Change.PLANNED
        if old_due_ms != due_ms:
            self._enqueue(index, due_ms)
        if old_start_us != start_us or old_due_ms != due_ms:
            return Change.RESCHEDULED
        return Change.UPDATED

    def cancel(self, key: bytes) -> bool:
        """Remove the pending timer (the marker stays); whether there was one."""
        return self._clear(key, _PENDING)

    def _clear(self, key: bytes, part: int) -> bool:
        """Remove one half of a record (timer or marker); the record goes with the last."""
        index, slot = self._find(key)
        if index < 0:
            return False
        old = self._record(index)
        if not old.flags & part:
            return False
        if part == _PENDING:
            self.pending -= 1
            rest = old.without_timer() if old.has_marker else None
        else:
            self.markers -= 1
            rest = old.without_marker() if old.pending else None
        if rest is None:
            self._delete(index, slot)
        else:
            self._records[index] = rest.pack()
        return True

    def forget(self, key: bytes) -> tuple[bool, bool]:
        """Drop everything about the key: (had a pending timer, had a marker)."""
        index, slot = self._find(key)
        if index < 0:
            return False, False
        record = self._records[index]
        assert record is not None
        flags = record[_FLAGS_AT]
        pending, marker = bool(flags & _PENDING), bool(flags & _MARKER)
        self.pending -= pending
        self.markers -= marker
        self._delete(index, slot)
        return pending, marker

    def get(self, key: bytes) -> Timer | None:
        index, _ = self._find(key)
        if index < 0:
            return None
        parts = self._record(index)
        return parts.timer() if parts.pending else None

    def pending_timers(self, key_prefix: bytes = b"") -> Iterator[Timer]:
        """Pending timers whose key starts with the prefix (e.g. ``b"01234567/"``)."""
        for record in list(self._records):
            if (
                record is not None
                and record[_FLAGS_AT] & _PENDING
                and record.startswith(key_prefix, _HEAD_SIZE)
            ):
                yield _unpack(record).timer()

    # ------------------------------------------------------------------ markers
    def marker(self, key: bytes) -> tuple[int, int] | None:
        """(start_s, end_s) of the key's fired marker."""
        index, _ = self._find(key)
        if index < 0:
            return None
        parts = self._record(index)
        return (parts.fired_s, parts.fired_end_s) if parts.has_marker else None

    def _popped_index(self, key: bytes) -> int:
        """The record index of a key the last :meth:`pop_due` handed out, if that record
        is still the key's (-1: look it up)."""
        index = self._popped.get(key, -1)
        if 0 <= index < len(self._records):
            record = self._records[index]
            if (
                record is not None
                and record[_KEY_LEN_AT] == len(key)
                and record.startswith(key, _HEAD_SIZE)
            ):
                return index
        return -1

    def set_marker(self, key: bytes, start_s: int, end_s: int) -> bool:
        """Record a fired marker; a pending timer for that start is done (returns True)."""
        index = self._popped_index(key)
        slot = -1
        if index < 0:
            index, slot = self._find(key)
        fired_s = start_s if 0 <= start_s <= _U32 else _u32(start_s)
        fired_end_s = end_s if 0 <= end_s <= _U32 else _u32(end_s)
        if index < 0:
            self._insert(
                slot, _HEAD.pack(0, 0, 0, 0, 0, fired_s, fired_end_s, _MARKER, len(key)) + key
            )
            self.markers += 1
            return False
        old = self._records[index]
        assert old is not None
        start_us, due_ms, old_end_s, booked_s, sequence, _, _, flags, key_len = _HEAD.unpack_from(
            old
        )
        pending = bool(flags & _PENDING)
        done = pending and start_us // 1_000_000 == start_s
        self.markers += not flags & _MARKER
        if done:
            self.pending -= 1
        if pending and not done:
            # rescheduled after this fired: the new start keeps its own timer
            head = _HEAD.pack(
                start_us,
                due_ms,
                old_end_s,
                booked_s,
                sequence,
                fired_s,
                fired_end_s,
                flags | _MARKER,
                key_len,
            )
            self._records[index] = head + old[_HEAD_SIZE:]
        else:
            head = _HEAD.pack(0, 0, 0, 0, 0, fired_s, fired_end_s, _MARKER, key_len)
            self._records[index] = head + key
        return done

    def drop_marker(self, key: bytes) -> bool:
        """Forget the key's marker (after its tombstone); whether there was one."""
        return self._clear(key, _MARKER)

    def expired_markers(self, before_s: int, limit: int) -> list[bytes]:
        """Keys whose marker names an appointment that ended before ``before_s``."""
        out: list[bytes] = []
        fired_end_of = _FIRED_END.unpack_from
        for record in self._records:
            if record is None or not record[_FLAGS_AT] & _MARKER:
                continue
            if fired_end_of(record, _FIRED_END_AT)[0] < before_s:
                out.append(record[_HEAD_SIZE : _HEAD_SIZE + record[_KEY_LEN_AT]])
                if len(out) >= limit:
                    break
        return out
