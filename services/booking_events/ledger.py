"""The last-seen state per appointment, and the rule that keeps appointments from rolling back.

Pure. The service keeps one :class:`Ledger` per owned partition, rebuilt from the compacted
``appointments.v1`` (its own output) on every partition assignment: Kafka holds the state,
this is only an index of it. Per appointment it keeps just what the rules need: the last
sequence and event id (order, duplicates), when it was first booked (``booked_at`` survives
updates) and when it ends (bounded state).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Literal, NamedTuple
from uuid import UUID

import msgspec

from schemas.models import AppointmentEvent
from services.domain.codec import DecodeError

__all__ = ["Ledger", "Seen", "Verdict", "judge", "seen_from_state"]

Verdict = Literal["accepted", "duplicate", "stale"]


class Seen(NamedTuple):
    sequence: int
    event_id: int | None  # UUID.int of the last accepted event
    booked_at: str  # RFC 3339, as written in the record (it is only ever written back)
    end: float  # epoch seconds


def judge(seen: Seen | None, event: AppointmentEvent) -> Verdict:
    """``duplicate``: this event (or another with the same sequence) was applied already;
    ``stale``: a later change was applied already. Only ``accepted`` changes the state, so
    retries and out-of-order delivery can never roll an appointment back."""
    if seen is None:
        return "accepted"
    if event.sequence == seen.sequence or event.event_id.int == seen.event_id:
        return "duplicate"
    if event.sequence < seen.sequence:
        return "stale"
    return "accepted"


class _StateView(msgspec.Struct, gc=False):
    """The fields of an Appointment record the ledger keeps. This is the service's own
    output (validated with the contract when it was written), read back on every
    assignment: msgspec decodes just these fields and skips the rest unparsed."""

    sequence: int
    booked_at: str  # kept as text: parsing times is most of the cost of a reload
    end: str
    last_event_id: UUID | None = None


_STATE_VIEW = msgspec.json.Decoder(_StateView)


def seen_from_state(value: bytes) -> Seen:
    """The ledger entry of an ``appointments.v1`` record; :class:`DecodeError` if broken."""
    try:
        view = _STATE_VIEW.decode(value)
    except msgspec.ValidationError as exc:
        # msgspec names the field and the expected type, never the value.
        raise DecodeError("invalid", str(exc)[:1000]) from exc
    except msgspec.DecodeError as exc:
        raise DecodeError("invalid", "the value is not JSON") from exc
    try:
        end = datetime.fromisoformat(view.end).timestamp()
        datetime.fromisoformat(view.booked_at)
    except ValueError as exc:
        raise DecodeError("invalid", "booked_at/end: not an RFC 3339 time") from exc
    event_id = view.last_event_id.int if view.last_event_id is not None else None
    return Seen(view.sequence, event_id, view.booked_at, end)


class Ledger:
    """Last-seen state of the appointments of one partition, by appointment key."""

    __slots__ = ("_rows",)

    def __init__(self) -> None:
        self._rows: dict[str, Seen] = {}

    def get(self, key: str) -> Seen | None:
        return self._rows.get(key)

    def put(self, key: str, seen: Seen) -> None:
        self._rows[key] = seen

    def update(self, rows: dict[str, Seen]) -> None:
        self._rows.update(rows)

    def forget(self, key: str) -> None:
        self._rows.pop(key, None)

    def apply(self, key: str, value: bytes | None) -> None:
        """Apply one ``appointments.v1`` record in log order (``None`` is a tombstone)."""
        if value is None:
            self._rows.pop(key, None)
        else:
            self._rows[key] = seen_from_state(value)

    def ended_before(self, cutoff: float) -> list[str]:
        """Keys of appointments that ended before ``cutoff`` (epoch seconds)."""
        return [key for key, seen in self._rows.items() if seen.end < cutoff]

    def __len__(self) -> int:
        return len(self._rows)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._rows))
