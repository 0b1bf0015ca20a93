"""The scheduler's side of the records: a fast reader for ``appointments.v1`` and
``reminders.fired.v1`` values, and the writers of ``ReminderDue`` and ``FiredMarker``.

A restart reads a million appointments, so full pydantic validation (tens of µs per
record) is too slow here, and so is building the whole JSON document as dicts.
:func:`read_appointment` decodes only the fields the scheduler needs, with msgspec,
straight into a small struct (the other fields are skipped unparsed), and checks them
with the contract's own rules (identifier pattern, a patient id that looks like a BSN
is refused, aware times, end after start, a known status). A record that fails goes to
``appointments.v1.dlq.v1``, with the field named but never its value. The outgoing
records are written from a template and checked against the pydantic models by the
unit tests.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, NamedTuple, TypeVar

import msgspec

from schemas.models import APPOINTMENT_STATUSES
from services.domain.codec import DecodeError

__all__ = [
    "APPOINTMENT_DECODER",
    "EPOCH",
    "IDENTIFIER",
    "MAX_SEQUENCE",
    "SLOT_TIMES",
    "AppointmentState",
    "MarkerState",
    "fired_values",
    "fired_values_of",
    "from_ms",
    "from_us",
    "read_appointment",
    "read_marker",
    "read_marker_us",
    "to_ms",
    "to_us",
]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_US = timedelta(microseconds=1)
_MS = timedelta(milliseconds=1)
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
_BSN_LIKE = re.compile(r"\d{8,9}")
_STATUSES = frozenset(APPOINTMENT_STATUSES)
_MAX_SEQUENCE = 2**64 - 1
_T = TypeVar("_T")


def to_us(moment: datetime) -> int:
    return (moment - EPOCH) // _US


def to_ms(moment: datetime) -> int:
    return (moment - EPOCH) // _MS


def from_us(us: int) -> datetime:
    return EPOCH + timedelta(microseconds=us)


def from_ms(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)


class AppointmentState(NamedTuple):
    """The fields of an ``Appointment`` that decide its reminder; times in µs since the epoch."""

    practice_id: str
    appointment_id: str
    patient_id: str
    status: str
    sequence: int
    start_us: int
    end_us: int
    booked_us: int
    updated_us: int

    @property
    def key(self) -> str:
        return f"{self.practice_id}/{self.appointment_id}"

    @property
    def start(self) -> datetime:
        return from_us(self.start_us)


@dataclass(frozen=True, slots=True)
class MarkerState:
    practice_id: str
    appointment_id: str
    start: datetime
    end: datetime

    @property
    def key(self) -> str:
        return f"{self.practice_id}/{self.appointment_id}"


def _invalid(field: str, problem: str) -> DecodeError:
    return DecodeError("invalid", f"{field}: {problem}")


# Checked by msgspec while it decodes (in C): aware RFC 3339 times. The identifiers are
# decoded as plain strings and checked against the contract's pattern by
# :func:`_is_identifier` right after (msgspec checks a pattern with Python's ``re``, which
# cost about a microsecond per id; most ids are letters and digits only).
_Aware = Annotated[datetime, msgspec.Meta(tz=True)]


class _Patient(msgspec.Struct, gc=False):
    id: str


class _AppointmentFields(msgspec.Struct, gc=False):
    """What the scheduler reads of an ``Appointment``; other fields are skipped."""

    practice_id: str
    appointment_id: str
    patient: _Patient
    status: str
    sequence: int
    start: str
    end: str
    booked_at: _Aware
    updated_at: _Aware


class _MarkerFields(msgspec.Struct, gc=False):
    practice_id: str
    appointment_id: str
    start: str
    end: str


_APPOINTMENT = msgspec.json.Decoder(_AppointmentFields)
_MARKER = msgspec.json.Decoder(_MarkerFields)
# msgspec names the path, never the value: "Expected `str`, got `int` - at `$.patient.id`"
# or "Object missing required field `booked_at` - at `$.patient`".
_AT = re.compile(r" - at `\$\.?([^`]*)`$")
_MISSING = re.compile(r"missing required field `([^`]+)`")


def _decode(decoder: msgspec.json.Decoder[_T], value: bytes) -> _T:
    try:
        return decoder.decode(value)
    except msgspec.ValidationError as exc:
        raise _refusal(str(exc)) from None
    except msgspec.DecodeError as exc:
        raise DecodeError("not_json", "the value is not JSON: malformed") from exc


_NOT_AN_ID = "missing, or not an identifier (letters, digits, . _ : -; <= 64)"
_PROBLEMS = {
    "sequence": "missing or not a non-negative 64-bit integer",
    "patient": "missing or not an object",
    "appointment_id": _NOT_AN_ID,
    "patient.id": _NOT_AN_ID,
    "booked_at": "not an RFC 3339 date-time with a UTC offset",
    "updated_at": "not an RFC 3339 date-time with a UTC offset",
}


def _refusal(message: str) -> DecodeError:
    at = _AT.search(message)
    path = at.group(1) if at else ""
    missing = _MISSING.search(message)
    if missing:
        field = f"{path}.{missing.group(1)}" if path else missing.group(1)
        return _invalid(field, "missing")
    if not path:
        return DecodeError("invalid", "the value is not a JSON object")
    return _invalid(path, _PROBLEMS.get(path, "not of the expected type"))


def _is_identifier(value: str) -> bool:
    """``value`` matches the contract's identifier pattern (``_ID``): ASCII letters and
    digits only, up to 64 of them, without the regular expression."""
    if value.isascii() and value.isalnum():  # isalnum is False for ""
        return len(value) <= 64
    return _ID.fullmatch(value) is not None


# Practice ids repeat on every record: checked once.
_PRACTICE_IDS: set[str] = set()


def _identifier(value: str, field: str) -> str:
    # booking_events writes ids as the contract has them (stripped, pattern-checked);
    # anything else is refused here rather than repaired
    if not _ID.fullmatch(value):
        raise _invalid(field, "missing, or not an identifier (letters, digits, . _ : -; <= 64)")
    return value


def _practice_id(value: str) -> str:
    if value in _PRACTICE_IDS:
        return value
    _identifier(value, "practice_id")
    if len(_PRACTICE_IDS) < 100_000:
        _PRACTICE_IDS.add(value)
    return value


def _moment(value: str, field: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError as exc:
        raise _invalid(field, "not an RFC 3339 date-time") from exc
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise _invalid(field, "has no UTC offset")
    return moment


# Appointments share their start and end times (the agenda's slots): parsed once.
_SLOT_TIMES: dict[str, int] = {}
_SLOT_TIMES_SIZE = 100_000


def _slot_micros(value: str, field: str) -> int:
    cached = _SLOT_TIMES.get(value)
    if cached is not None:
        return cached
    micros = _micros(value, field)
    if len(_SLOT_TIMES) >= _SLOT_TIMES_SIZE:
        _SLOT_TIMES.clear()
    _SLOT_TIMES[value] = micros
    return micros


def _micros(value: str, field: str) -> int:
    since = _moment(value, field) - EPOCH
    return (since.days * 86_400 + since.seconds) * 1_000_000 + since.microseconds


_new_state = tuple.__new__  # AppointmentState(...) without the keyword-argument layer


# The load's fast path (Planner.plan_fetched) reads the plain case of a value itself, with
# the decoder and caches of read_appointment, and hands anything else to
# read_appointment: it accepts nothing that read_appointment refuses.
APPOINTMENT_DECODER = _APPOINTMENT
IDENTIFIER = _ID
SLOT_TIMES = _SLOT_TIMES  # start and end texts of the slots read so far, in µs
MAX_SEQUENCE = _MAX_SEQUENCE


def read_appointment(value: bytes) -> AppointmentState:
    """The scheduler's fields of an ``appointments.v1`` value; DecodeError if unusable."""
    try:  # _decode, inline
        doc = _APPOINTMENT.decode(value)
    except msgspec.ValidationError as exc:
        raise _refusal(str(exc)) from None
    except msgspec.DecodeError as exc:
        raise DecodeError("not_json", "the value is not JSON: malformed") from exc
    appointment_id = doc.appointment_id
    # _is_identifier, its letters-and-digits case inline (one call less per id)
    if not (
        appointment_id.isascii() and appointment_id.isalnum() and len(appointment_id) <= 64
    ) and not _is_identifier(appointment_id):
        raise _invalid("appointment_id", _NOT_AN_ID)
    patient_id = doc.patient.id
    if not (
        patient_id.isascii() and patient_id.isalnum() and len(patient_id) <= 64
    ) and not _is_identifier(patient_id):
        raise _invalid("patient.id", _NOT_AN_ID)
    if len(patient_id) in (8, 9) and patient_id.isdigit():  # ASCII only: the pattern
        raise _invalid("patient.id", "looks like a BSN (8-9 digits)")
    status = doc.status
    if status not in _STATUSES:
        raise _invalid("status", "not a FHIR appointment status")
    start, end = doc.start, doc.end
    # _slot_micros, its cached case inline
    start_us = _SLOT_TIMES.get(start)
    if start_us is None:
        start_us = _slot_micros(start, "start")
    end_us = _SLOT_TIMES.get(end)
    if end_us is None:
        end_us = _slot_micros(end, "end")
    if end_us <= start_us:
        raise _invalid("end", "not after start")
    sequence = doc.sequence
    if not 0 <= sequence <= _MAX_SEQUENCE:
        raise _invalid("sequence", "missing or not a non-negative 64-bit integer")
    practice_id = doc.practice_id
    if practice_id not in _PRACTICE_IDS:
        _practice_id(practice_id)
    return _new_state(
        AppointmentState,
        (
            practice_id,
            appointment_id,
            patient_id,
            status,
            sequence,
            start_us,
            end_us,
            (doc.booked_at - EPOCH) // _US,
            (doc.updated_at - EPOCH) // _US,
        ),
    )


def read_marker(value: bytes) -> MarkerState:
    """A ``FiredMarker`` value (written by this service), fields needed on load."""
    practice_id, appointment_id, start_us, end_us = read_marker_us(value)
    return MarkerState(practice_id, appointment_id, from_us(start_us), from_us(end_us))


def read_marker_us(value: bytes) -> tuple[str, str, int, int]:
    """:func:`read_marker` as (practice_id, appointment_id, start µs, end µs), for the
    load: markers share their slot times, parsed once."""
    doc = _decode(_MARKER, value)
    if not _is_identifier(doc.appointment_id):
        raise _invalid("appointment_id", _NOT_AN_ID)
    practice_id = doc.practice_id
    if practice_id not in _PRACTICE_IDS:
        _practice_id(practice_id)
    start_us = _slot_micros(doc.start, "start")
    end_us = _slot_micros(doc.end, "end")
    return practice_id, doc.appointment_id, start_us, end_us


# A burst writes the same slot starts, ends and due times over and over: each written
# once, keyed by the integer (hashing an aware datetime costs more than writing it).
_TEXTS: dict[int, str] = {}
_TEXTS_SIZE = 100_000


def _text_us(us: int) -> str:
    text = _TEXTS.get(us)
    if text is None:
        text = from_us(us).isoformat().replace("+00:00", "Z")
        if len(_TEXTS) >= _TEXTS_SIZE:
            _TEXTS.clear()
        _TEXTS[us] = text
    return text


def fired_values(
    *,
    practice_id: str,
    appointment_id: str,
    patient_id: str,
    start: datetime,
    end: datetime,
    sequence: int,
    due_at: datetime,
    fired_at: datetime,
    reason: str | None,
) -> tuple[bytes, bytes]:
    """The ``ReminderDue`` and its ``FiredMarker``, as JSON bytes (see :func:`fired_values_of`)."""
    return fired_values_of(
        f"{practice_id}/{appointment_id}".encode(),
        patient_id.encode(),
        to_us(start),
        to_us(end),
        sequence,
        to_us(due_at),
        to_us(fired_at),
        reason,
    )


class _Templates(NamedTuple):
    due: bytes  # %-template: key, practice_id, appointment_id, patient_id, sequence
    marker: bytes  # %-template: key, practice_id, appointment_id


# A burst fires thousands of reminders with the same start, end, due and fired times:
# the bytes around the ids are written once per such combination.
_TEMPLATES: dict[tuple[int, int, int, int, str | None], _Templates] = {}
_TEMPLATES_SIZE = 10_000


def _templates(
    start_us: int, end_us: int, due_us: int, fired_us: int, reason: str | None
) -> _Templates:
    start_text = _text_us(start_us)
    # reminder_id is utc_text(start); the two records share their head and times
    head = f'{{"reminder_id":"%b/{start_text[:19]}Z","practice_id":"%b","appointment_id":"%b"'
    times = f'"due_at":"{_text_us(due_us)}","fired_at":"{_text_us(fired_us)}"'
    why = "null" if reason is None else f'"{reason}"'
    due = f'{head},"patient_id":"%b","start":"{start_text}","sequence":%d,{times},"reason":{why}}}'
    marker = f'{head},"start":"{start_text}","end":"{_text_us(end_us)}",{times}}}'
    return _Templates(due.encode(), marker.encode())


def fired_values_of(
    key: bytes,
    patient_id: bytes,
    start_us: int,
    end_us: int,
    sequence: int,
    due_us: int,
    fired_us: int,
    reason: str | None,
) -> tuple[bytes, bytes]:
    """:func:`fired_values` from the timer's own bytes: ``key`` is
    ``{practice_id}/{appointment_id}``.

    Written with a template: a firing burst writes a hundred thousand of each. The ids
    passed the identifier pattern on the way in (letters, digits, ``._:-``), so none
    needs escaping; the reason is one of two literals; the times are ISO texts (no ``%``).
    """
    where = (start_us, end_us, due_us, fired_us, reason)
    templates = _TEMPLATES.get(where)
    if templates is None:
        if len(_TEMPLATES) >= _TEMPLATES_SIZE:
            _TEMPLATES.clear()
        templates = _TEMPLATES[where] = _templates(*where)
    practice_id, _, appointment_id = key.partition(b"/")
    return (
        templates.due % (key, practice_id, appointment_id, patient_id, sequence),
        templates.marker % (key, practice_id, appointment_id),
    )
