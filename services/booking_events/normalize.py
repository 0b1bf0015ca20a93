"""HIS events in, the internal form out: native AppointmentEvent JSON or FHIR R4.

Pure: bytes and headers in, an :class:`~schemas.models.AppointmentEvent` (or a
:class:`~services.common.codec.DecodeError` with a reason code) out. The service, the
connector kit (``reminders publish appointment``) and the tests share this code, so a
vendor sees exactly the verdict the service would give.

Reason codes (the ``error-reason`` header of ``his.appointments.v1.dlq.v1``):

=========================  ===========================================================
``no_value``               a record without a value (his.appointments.v1 has no tombstones)
``not_json``               not a JSON object
``not_an_appointment``     FHIR, but ``resourceType`` is not ``Appointment``
``bsn_like_patient_id``    the patient id looks like a BSN, or the patient is named by BSN
``empty_practice_id``      the practice id is empty
``unknown_status``         a status that is not a FHIR R4 Appointment status
``time_without_offset``    a time without a UTC offset
``end_before_start``       end is not after start
``missing_field``          a required field is absent
``invalid_field``          a field has the wrong type or shape
``key_mismatch``           the record key is not the event's practice id
``wrong_partition``        the record is not on its practice's partition
=========================  ===========================================================
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from functools import lru_cache
from typing import Any, Final, NamedTuple

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from schemas.models import Appointment, AppointmentEvent, MeetingInfo
from services.common.codec import DecodeError
from services.common.partition import partition_for

__all__ = [
    "FHIR_CONTENT_TYPE",
    "REASONS",
    "StateRecord",
    "appointment_json",
    "check_placement",
    "content_type",
    "event_from_dict",
    "invalid",
    "is_fhir",
    "parse_event",
    "parse_native",
    "to_appointment",
]

FHIR_CONTENT_TYPE: Final = "application/fhir+json"

REASONS: Final = (
    "no_value",
    "not_json",
    "not_an_appointment",
    "bsn_like_patient_id",
    "empty_practice_id",
    "unknown_status",
    "time_without_offset",
    "end_before_start",
    "missing_field",
    "invalid_field",
    "key_mismatch",
    "wrong_partition",
)
# When a record has several faults, the header names the one that matters most: privacy
# first, then what a connector developer most likely got wrong.
_PRIORITY: Final = {reason: rank for rank, reason in enumerate(REASONS)}


# --------------------------------------------------------------------------- headers


def content_type(headers: Iterable[tuple[str, bytes]] | None) -> str | None:
    """The media type of the ``content-type`` header, lower case, without parameters."""
    for name, value in headers or ():
        if name.lower() == "content-type" and value is not None:
            text = value.decode("latin-1").split(";", 1)[0].strip().lower()
            return text or None
    return None


def is_fhir(headers: Iterable[tuple[str, bytes]] | None) -> bool:
    return content_type(headers) == FHIR_CONTENT_TYPE


# --------------------------------------------------------------------------- parsing


def parse_native(value: bytes | None) -> AppointmentEvent:
    """A native AppointmentEvent, validated; :class:`DecodeError` with a reason if not."""
    if value is None:
        raise DecodeError("no_value", "the record has no value")
    try:
        return AppointmentEvent.model_validate_json(value)
    except ValidationError as exc:
        error = invalid(exc)
        if error.reason in ("missing_field", "invalid_field") and b'"resourceType"' in value:
            error = DecodeError(
                error.reason,
                f"{error.detail} (this looks like FHIR: send it with the header "
                f"content-type: {FHIR_CONTENT_TYPE})",
            )
        raise error from exc


def parse_event(value: bytes | None, *, fhir: bool, received_at: datetime) -> AppointmentEvent:
    """Either form, to the internal event. ``received_at`` stands in for a FHIR resource's
    missing ``meta.lastUpdated`` (the Kafka record's timestamp)."""
    if not fhir:
        return parse_native(value)
    from services.booking_events.fhir import parse_fhir

    return parse_fhir(value, received_at=received_at)


def event_from_dict(
    data: Mapping[str, Any], hints: Mapping[str, str] | None = None
) -> AppointmentEvent:
    """Validate already-decoded fields (the FHIR mapping); ``hints`` name the source path
    of a field in error messages (``patient.id`` -> ``participant[Patient].actor``)."""
    try:
        return AppointmentEvent.model_validate(data)
    except ValidationError as exc:
        raise invalid(exc, hints) from exc


def check_placement(
    event: AppointmentEvent, key: bytes | None, partition: int, partitions: int
) -> None:
    """The record must be keyed by its practice id and sit on that practice's partition:
    the last-seen state of an appointment lives with its practice's partition."""
    if key is not None:
        try:
            text = key.decode("utf-8")
        except UnicodeDecodeError:
            raise DecodeError("key_mismatch", "the record key is not UTF-8") from None
        if text != event.practice_id:
            raise DecodeError(
                "key_mismatch",
                "the record key must be the practice id of the event "
                "(DESIGN.md: his.appointments.v1 is keyed by {practice_id})",
            )
    expected = _partition_for(event.practice_id, partitions)
    if partition != expected:
        raise DecodeError(
            "wrong_partition",
            f"the practice's events belong on partition {expected}, not {partition}: key the "
            "record by the practice id and use Kafka's default (murmur2) partitioner",
        )


# murmur2 in Python costs microseconds; a practice's partition never changes.
_partition_for = lru_cache(maxsize=65536)(partition_for)


# --------------------------------------------------------------------------- reasons


def invalid(exc: ValidationError, hints: Mapping[str, str] | None = None) -> DecodeError:
    """A reason code and a detail that names fields but never echoes their values."""
    errors = exc.errors(include_url=False)
    reasons = [_reason(e) for e in errors]
    reason = min(reasons, key=lambda r: _PRIORITY[r])
    parts = []
    for error, error_reason in zip(errors, reasons, strict=True):
        location = ".".join(str(p) for p in error["loc"]) or "record"
        if hints and location in hints:
            location = f"{location} ({hints[location]})"
        parts.append(f"{location}: {_message(error, error_reason)}")
    return DecodeError(reason, "; ".join(parts)[:1000])


def _reason(error: ErrorDetails) -> str:
    kind = error["type"]
    loc = tuple(str(p) for p in error["loc"])
    message = error.get("msg", "")
    if kind in ("json_invalid", "json_type") or (kind == "model_type" and not loc):
        return "not_json"
    if "BSN" in message:
        return "bsn_like_patient_id"
    if loc == ("practice_id",) and kind in ("string_pattern_mismatch", "string_too_short"):
        value = error.get("input")
        if isinstance(value, str) and not value.strip():
            return "empty_practice_id"
    if loc and loc[-1] == "status" and kind in ("literal_error", "enum"):
        return "unknown_status"
    if kind in ("timezone_aware", "timezone_naive"):
        return "time_without_offset"
    if "end must be after start" in message:
        return "end_before_start"
    if kind == "missing":
        return "missing_field"
    return "invalid_field"


def _message(error: ErrorDetails, reason: str) -> str:
    if reason == "time_without_offset":
        return "the time has no UTC offset; write it as RFC 3339 with an offset (+01:00 or Z)"
    if reason == "end_before_start":
        return "end must be after start"
    if reason == "empty_practice_id":
        return "the practice id (the practice's AGB code) is empty"
    if reason == "not_json" and error["type"] == "model_type":
        return "the value is JSON but not an object"
    return str(error.get("msg", "invalid"))


# --------------------------------------------------------------------------- the state


_EVENT_ONLY: Final[set[str]] = {"event_id", "occurred_at", "comment"}  # for to_appointment


class StateRecord(NamedTuple):
    value: bytes  # the Appointment record, JSON
    booked_at: str  # its booked_at, RFC 3339 (what the ledger keeps)


_COMMENT: Final[set[str]] = {"comment"}
_EVENT_ID: Final = ',"event_id":"'
_OCCURRED_AT: Final = ',"occurred_at":"'


def appointment_json(
    event: AppointmentEvent, booked_at: str | None, meeting: MeetingInfo
) -> StateRecord:
    """The Appointment record (current state) for ``event``, as JSON bytes.

    ``booked_at`` is RFC 3339 text as the ledger keeps it, ``None`` for an appointment
    seen for the first time (then it is this event's ``occurred_at``). The HIS ``comment``
    is left out: it is never stored downstream.

    Written from one pydantic dump of the event, without building an Appointment model
    or formatting times in Python, to keep the hot path fast: the event's last two fields
    (``event_id``, ``occurred_at``) become ``last_event_id`` and ``updated_at``. A key
    cannot occur inside a JSON string (its quotes would be escaped), so finding the last
    ``,"event_id":"`` is exact. A unit test checks the result against the model.
    """
    head = event.model_dump_json(exclude=_COMMENT)
    at_id = head.rindex(_EVENT_ID)
    at_time = head.rindex(_OCCURRED_AT)
    event_id = head[at_id + len(_EVENT_ID) : at_time - 1]
    occurred_at = head[at_time + len(_OCCURRED_AT) : -2]
    booked = occurred_at if booked_at is None else booked_at
    value = (
        f'{head[:at_id]},"booked_at":"{booked}","updated_at":"{occurred_at}"'
        f',"meeting":{_meeting_json(meeting)},"last_event_id":"{event_id}"}}'
    )
    return StateRecord(value.encode("utf-8"), booked)


_MEETING_JSON: dict[MeetingInfo, str] = {}


def _meeting_json(meeting: MeetingInfo) -> str:
    text = _MEETING_JSON.get(meeting)
    if text is None:
        text = meeting.model_dump_json()
        if len(_MEETING_JSON) < 4096:
            _MEETING_JSON[meeting] = text
    return text


def to_appointment(
    event: AppointmentEvent, booked_at: datetime, meeting: MeetingInfo
) -> Appointment:
    """The same state as :func:`appointment_json`, as a model (for the CLI and tests)."""
    fields = event.model_dump(exclude=_EVENT_ONLY)
    return Appointment.model_validate(
        {
            **fields,
            "booked_at": booked_at,
            "updated_at": event.occurred_at,
            "meeting": meeting,
            "last_event_id": event.event_id,
        }
    )
