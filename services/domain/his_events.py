"""HIS events in, the internal form out: native AppointmentEvent JSON or FHIR R4.

Pure domain code (no framework, no Kafka, no service): bytes and headers in, an
:class:`~schemas.models.AppointmentEvent` (or a :class:`~services.domain.codec.DecodeError`
with a reason code, or every :class:`Problem` via :func:`problems`) out. booking_events, the
HIS gateway, the connector kit (``reminders publish appointment``) and the tests share
this code, so a
vendor sees exactly the verdict the service would give.

Reason codes (the ``error-reason`` header of ``his.appointments.v1.dlq.v1``; the contract is
``schemas/reasons.py``):

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
``invalid_practice_id``    the practice id is not an AGB code (8 digits)
``duplicate_key``          a JSON object names the same key twice
``control_character``      a text holds a control, line-separator, direction or invisible
                           character, or an RFC 2047 encoded word
``time_out_of_range``      a time outside 2000-01-01 .. 2100-01-01 (UTC)
``number_out_of_range``    an integer beyond 64 bits (2**63 - 1), or a version that is
                           not ASCII digits
=========================  ===========================================================

What the edge accepts, every later stage can process: digits are ASCII digits, integers
fit 64 bits, times lie in a sane range after conversion to UTC, texts are plain.

FHIR R4
-------

HIS connectors that speak FHIR publish the resource as it is, with the header
``content-type: application/fhir+json``. Only the fields below are read, through small
pydantic models (unknown elements are ignored). A full FHIR model library
(``fhir.resources``, whose R4 models live in a sub-package beside its R5 default) was not
used: it would be a new dependency that validates every element of a resource, far more
than this service reads, on the hot path of 10,000 events/s; and the checks that matter
here (statuses, times with offsets, the pseudonymous patient id, end after start) are the
ones AppointmentEvent makes anyway, for both forms alike.

Mapping (the conventions a connector must follow are marked *):

====================================  ================================================
FHIR R4 Appointment                   AppointmentEvent
====================================  ================================================
``id`` (else ``identifier[0].value``) ``appointment_id``
``status``                            ``status`` (the same R4 value set)
``start`` / ``end``                   ``start`` / ``end`` (instants, with offset)
``appointmentType``                   ``appointment_type``: first coding's code and
(else ``serviceType[0]``)             display (else ``text``)
participant, actor ``Patient/{id}``   ``patient.id``, ``patient.required`` from
                                      ``participant.required``; exactly one Patient.
                                      A patient named by BSN is refused.
participant ``Practitioner`` or       ``practitioner`` (id, display; role from
``PractitionerRole``                  ``participant.type``)
participant ``HealthcareService``     ``agenda`` (id, display); without one the agenda
                                      is the practitioner's own
participant ``Location``              ``location.display``
\\* Location actor ``identifier``       ``practice_id``: the practice's AGB code, with
with system ``agb-z``                 system ``http://fhir.nl/fhir/NamingSystem/agb-z``
                                      (or ``urn:oid:2.16.840.1.113883.2.4.6.1``)
``meta.versionId`` (an integer),      ``sequence``
else ``meta.lastUpdated`` in epoch
milliseconds
``meta.lastUpdated``                  ``occurred_at`` (else the Kafka record time)
``meta.source``                       ``source_system`` (else ``fhir``)
\\* ``meta.tag`` system                 ``booked_via`` (portal, phone, desk, other;
``urn:e-afspraken:booked-via``        default ``other``)
\\* ``meta.tag`` system                 ``kind`` (consult or meeting)
``urn:e-afspraken:kind``
(derived)                             ``event_id``: a UUIDv5 of practice, appointment
                                      and sequence, so a resent version is a duplicate
``comment``, ``description``, ...     never read
====================================  ================================================

A connector must keep to one sequence source per appointment: a ``versionId`` (small
integers) and a ``lastUpdated`` (epoch milliseconds) do not compare.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from functools import lru_cache
from typing import Any, Final, cast

import msgspec
import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic_core import CoreSchema, ErrorDetails, SchemaValidator

from schemas.models import (
    MAX_INT64,
    Agenda,
    AppointmentEvent,
    AppointmentType,
    Location,
    Practitioner,
    _agb_code,
    _AppointmentFields,
    _sane_instant,
)
from schemas.reasons import HIS_EVENT_REASONS
from services.domain.codec import DecodeError, DuplicateKey, no_duplicate_keys
from services.domain.partition import partition_for

__all__ = [
    "AGB_SYSTEMS",
    "BOOKED_VIA_SYSTEM",
    "BSN_SYSTEMS",
    "EVENT_ID_NAMESPACE",
    "FHIR_CONTENT_TYPE",
    "KIND_SYSTEM",
    "REASONS",
    "FhirAppointment",
    "Problem",
    "check_placement",
    "content_type",
    "duplicate_key_problem",
    "event_from_dict",
    "event_id_for",
    "fhir_to_event",
    "invalid",
    "is_fhir",
    "parse_event",
    "parse_fhir",
    "parse_native",
    "problems",
    "validation_problems",
]

FHIR_CONTENT_TYPE: Final = "application/fhir+json"

# The contract (schemas/reasons.py), in priority order.
REASONS: Final = tuple(HIS_EVENT_REASONS)
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


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a HIS event: a reason code (as in the DLQ), a detail that
    names fields but never echoes values, and the internal field it is about."""

    reason: str
    detail: str
    field: str | None = None


def problems(
    value: bytes, *, fhir: bool, received_at: datetime
) -> tuple[AppointmentEvent | None, list[Problem]]:
    """Every problem of a HIS event (not just the first), for the HIS gateway.

    ``(event, [])`` when the event is valid; ``(None, [problems...])`` otherwise, most
    important first. The reasons are the DLQ's (:data:`REASONS`); :func:`parse_event`
    names the first of them.
    """
    found = _fhir_problems(value, received_at) if fhir else _native_problems(value)
    if isinstance(found, AppointmentEvent):
        return found, []
    return None, sorted(found, key=lambda p: _PRIORITY.get(p.reason, len(_PRIORITY)))


def parse_native(value: bytes | None) -> AppointmentEvent:
    """A native AppointmentEvent, validated; :class:`DecodeError` with a reason if not."""
    found = _native_problems(value)
    if isinstance(found, AppointmentEvent):
        return found
    raise _error(found)


def parse_event(value: bytes | None, *, fhir: bool, received_at: datetime) -> AppointmentEvent:
    """Either form, to the internal event. ``received_at`` stands in for a FHIR resource's
    missing ``meta.lastUpdated`` (the Kafka record's timestamp)."""
    if not fhir:
        return parse_native(value)
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


# --------------------------------------------------------------------------- the fast check

# AppointmentEvent's own checks in Python: the AGB code, three instants and end after
# start. The fast validator is AppointmentEvent's core schema (the same model classes, so
# the same instances) with those replaced by native checks that accept a subset of what
# the Python ones accept, end after start compared after. Whatever it refuses,
# AppointmentEvent itself validates: the verdict, the problems and their reasons are always
# AppointmentEvent's; the fast validator only skips Python calls for the events that
# certainly pass them. (The nested models keep their checks: pydantic-core validates a
# nested model with the class's own, prebuilt validator, whatever the schema says.)

# 8 ASCII digits: exactly what Identifier's pattern and _agb_code accept together.
_FAST_AGB: Final = "^[0-9]{8}$"
# A local time in 2001-01-02 .. 2098-12-30 (pydantic-core compares instants) is in
# INSTANT_RANGE for any offset (less than a day): _sane_instant passes it.
_FAST_LOW: Final = datetime.fromisoformat("2001-01-02T00:00:00+00:00")
_FAST_HIGH: Final = datetime.fromisoformat("2098-12-30T00:00:00+00:00")


def _fast_schema(schema: Any) -> Any:
    """A copy of a core schema with the known Python after-validators made native."""
    if isinstance(schema, list):
        return [_fast_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    if schema.get("type") == "function-after":
        check = schema["function"]["function"]
        inner = _fast_schema(schema["schema"])
        if check is _agb_code:
            return {**inner, "pattern": _FAST_AGB}
        if check is _sane_instant:
            return {**inner, "gt": _FAST_LOW, "lt": _FAST_HIGH}
        if check is _AppointmentFields._end_after_start:
            return inner  # compared by _fast_event
        return {**schema, "schema": inner}  # an unknown check stays as it is
    return {key: _fast_schema(value) for key, value in schema.items()}


_FAST_EVENT: Final = SchemaValidator(
    cast(CoreSchema, _fast_schema(AppointmentEvent.__pydantic_core_schema__))
)


def _fast_event(data: object) -> AppointmentEvent | None:
    """The event when the fast validator certainly accepts it as AppointmentEvent does;
    None means "ask AppointmentEvent" (which names the problems, if any)."""
    try:
        event = cast(AppointmentEvent, _FAST_EVENT.validate_python(data))
    except ValidationError:
        return None
    return event if event.end > event.start else None


def _native_problems(value: bytes | None) -> AppointmentEvent | list[Problem]:
    if value is None:
        return [Problem("no_value", "the record has no value")]
    document = _unique_keys_document(value)
    if document is not None:
        # No key twice, for sure, and the fast validator reads the document decoded for
        # that instead of parsing the JSON again (what it accepts, AppointmentEvent's JSON
        # mode accepts as the same event: orjson's values are JSON's, and anything else
        # goes the exact way below).
        event = _fast_event(_with_parts(document) if len(value) <= _CACHED_BODY else document)
        if event is not None:
            return event
    try:
        event = AppointmentEvent.model_validate_json(value)
    except ValidationError as exc:
        found = validation_problems(exc)
    else:
        duplicate = duplicate_key_problem(value)
        return event if duplicate is None else [duplicate]
    duplicate = duplicate_key_problem(value)
    if duplicate is not None:
        found.insert(0, duplicate)
    if b'"resourceType"' in value and found[0].reason in ("missing_field", "invalid_field"):
        found[0] = replace(
            found[0],
            detail=f"{found[0].detail} (this looks like FHIR: send it with the header "
            f"content-type: {FHIR_CONTENT_TYPE})",
        )
    return found


_NATIVE_PARTS: Final = tuple(
    (name, model, tuple(model.__pydantic_fields__))
    for name, model in (
        ("appointment_type", AppointmentType),
        ("agenda", Agenda),
        ("practitioner", Practitioner),
        ("location", Location),
    )
)


def _with_parts(document: Any) -> Any:
    """The native document with each part that names exactly its model's fields replaced
    by what :func:`_part` makes of those values: the instance a dict with those keys gives,
    fields set included, or an equal dict (a part with other keys is left as it is)."""
    if type(document) is not dict:
        return document
    for name, model, fields in _NATIVE_PARTS:
        part = document.get(name)
        if type(part) is dict and len(part) == len(fields):
            try:
                document[name] = _part(model, *[part[field] for field in fields])
            except (KeyError, TypeError):  # another key; a value that is a list or object
                continue
    return document


def _error(found: list[Problem]) -> DecodeError:
    """One DecodeError for a record's problems: the most important reason, every detail."""
    top = min(found, key=lambda p: _PRIORITY.get(p.reason, len(_PRIORITY)))
    return DecodeError(top.reason, "; ".join(p.detail for p in found)[:1000])


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
    return _error(validation_problems(exc, hints))


def validation_problems(
    exc: ValidationError, hints: Mapping[str, str] | None = None
) -> list[Problem]:
    """One :class:`Problem` per pydantic error, in pydantic's order."""
    found = []
    for error in exc.errors(include_url=False):
        reason = _reason(error)
        field = ".".join(str(p) for p in error["loc"]) or None
        location = field or "record"
        if hints and location in hints:
            location = f"{location} ({hints[location]})"
        found.append(Problem(reason, f"{location}: {_message(error, reason)}", field))
    return found


# One decoder for every record (json.loads with a hook builds a new one per call).
_DUPLICATES: Final = json.JSONDecoder(object_pairs_hook=no_duplicate_keys)


def _unique_keys_document(value: bytes) -> Any:
    """The decoded document when ``value`` certainly names no key twice, else None
    ("look closer"; a JSON ``null`` text is None too, and looked at closer).

    Every key of a JSON text is followed by one colon; any other colon lies inside a
    string, as itself unless written as a ``\\u003a`` escape. orjson decodes the text
    keeping one key of a duplicate pair and writes the document back with a colon per
    key and the strings' own colons. So, without such escapes, the written-back document
    has as many colons as the text only if nothing was dropped: no key is named twice.
    Anything orjson refuses (UTF-16, a BOM, NaN, ...) takes the exact path.
    """
    if b"\\" in value and b"\\u003" in value:  # one byte first: memchr, ~20x cheaper
        return None
    try:
        document = orjson.loads(value)
        written = orjson.dumps(document)
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):
        return None
    return document if value.count(b":") == written.count(b":") else None


def _no_duplicates_for_sure(value: bytes) -> bool:
    """True only when ``value`` certainly names no key twice; False means "look closer"."""
    return _unique_keys_document(value) is not None


def duplicate_key_problem(value: bytes | str) -> Problem | None:
    """A Problem if a JSON object in ``value`` names a key twice (the last would win
    silently: ``"id":"123456782","id":"pt-1"``), else None. Invalid JSON is left to the
    model's parser."""
    if isinstance(value, bytes) and _no_duplicates_for_sure(value):
        return None
    try:
        # What json.loads does with bytes and str, on the shared decoder.
        if isinstance(value, str):
            if value.startswith("\ufeff"):
                return None  # json.loads refuses a BOM in a str
            text = value
        else:
            text = value.decode(json.detect_encoding(value), "surrogatepass")
        _DUPLICATES.decode(text)
    except DuplicateKey as exc:
        key = str(exc)[:40]
        return Problem(
            "duplicate_key",
            f"a JSON object names the key {key!r} twice; send each field once",
            key,
        )
    except (ValueError, RecursionError):
        return None
    return None


def _reason(error: ErrorDetails) -> str:
    kind = error["type"]
    if kind in _PRIORITY:
        return kind  # our own error types (PydanticCustomError) are reason codes
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
    if kind == "less_than_equal" and loc and loc[-1] in _INTEGER_FIELDS:
        return "number_out_of_range"
    if kind == "int_parsing_size":
        return "number_out_of_range"
    return "invalid_field"


_INTEGER_FIELDS: Final = frozenset({"sequence", "version"})


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


AGB_SYSTEMS: Final = frozenset(
    {"http://fhir.nl/fhir/NamingSystem/agb-z", "urn:oid:2.16.840.1.113883.2.4.6.1"}
)
BSN_SYSTEMS: Final = frozenset(
    {"http://fhir.nl/fhir/NamingSystem/bsn", "urn:oid:2.16.840.1.113883.2.4.6.3"}
)
BOOKED_VIA_SYSTEM: Final = "urn:e-afspraken:booked-via"
KIND_SYSTEM: Final = "urn:e-afspraken:kind"
# Event ids of FHIR resources: uuid5(this, "{practice_id}/{appointment_id}/{sequence}").
EVENT_ID_NAMESPACE: Final = uuid.UUID("5f0d9a52-6f43-5c1e-9a51-2c6e0a3d7b11")

_PRACTITIONERS: Final = ("Practitioner", "PractitionerRole")

# Where an internal field comes from, for error messages a FHIR developer can follow.
_HINTS: Final = {
    "appointment_id": "Appointment.id",
    "practice_id": "Location participant's actor.identifier (system agb-z)",
    "sequence": "meta.versionId / meta.lastUpdated",
    "occurred_at": "meta.lastUpdated",
    "source_system": "meta.source",
    "status": "Appointment.status",
    "start": "Appointment.start",
    "end": "Appointment.end",
    "appointment_type": "appointmentType / serviceType",
    "appointment_type.code": "appointmentType.coding[0].code",
    "appointment_type.display": "appointmentType.coding[0].display",
    "agenda": "HealthcareService participant, else the practitioner",
    "agenda.id": "HealthcareService participant's actor.reference",
    "agenda.display": "HealthcareService participant's actor.display",
    "practitioner": "Practitioner participant",
    "practitioner.id": "Practitioner participant's actor.reference",
    "practitioner.display": "Practitioner participant's actor.display",
    "location.display": "Location participant's actor.display",
    "patient": "Patient participant",
    "patient.id": "Patient participant's actor.reference",
    "patient.required": "Patient participant's required",
    "booked_via": f"meta.tag ({BOOKED_VIA_SYSTEM})",
    "kind": f"meta.tag ({KIND_SYSTEM})",
}


# --------------------------------------------------------------------------- FHIR R4


class _Fhir(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Coding(_Fhir):
    system: str | None = None
    code: str | None = None
    display: str | None = None


class CodeableConcept(_Fhir):
    # default_factory: a literal [] default is deep-copied for every instance
    coding: list[Coding] = Field(default_factory=list)
    text: str | None = None


class Identifier(_Fhir):
    system: str | None = None
    value: str | None = None


class Reference(_Fhir):
    reference: str | None = None
    type: str | None = None
    identifier: Identifier | None = None
    display: str | None = None


class Participant(_Fhir):
    type: list[CodeableConcept] = Field(default_factory=list)
    actor: Reference | None = None
    required: str | None = None
    status: str | None = None


class Meta(_Fhir):
    # FHIR's own (camelCase) element names
    versionId: str | None = None
    lastUpdated: AwareDatetime | None = None
    source: str | None = None
    tag: list[Coding] = Field(default_factory=list)


class FhirAppointment(_Fhir):
    """The part of a FHIR R4 Appointment this service reads."""

    resourceType: str
    id: str | None = None
    identifier: list[Identifier] = Field(default_factory=list)
    meta: Meta | None = None
    status: Any = None
    appointmentType: CodeableConcept | None = None
    serviceType: list[CodeableConcept] = Field(default_factory=list)
    start: Any = None
    end: Any = None
    participant: list[Participant] = Field(default_factory=list)


# The same resource as msgspec structs: the hot path's decoder. Every field is as
# strict as the model's or stricter (status, start and end must be text, lastUpdated is
# read by pydantic's own datetime parser), so whatever these decode, the model reads the
# same; anything else goes to the model, which names the problems.
class _MCoding(msgspec.Struct):
    system: str | None = None
    code: str | None = None
    display: str | None = None


class _MConcept(msgspec.Struct):
    coding: list[_MCoding] = []
    text: str | None = None


class _MIdentifier(msgspec.Struct):
    system: str | None = None
    value: str | None = None


class _MReference(msgspec.Struct):
    reference: str | None = None
    type: str | None = None
    identifier: _MIdentifier | None = None
    display: str | None = None


class _MParticipant(msgspec.Struct):
    type: list[_MConcept] = []
    actor: _MReference | None = None
    required: str | None = None
    status: str | None = None


class _MMeta(msgspec.Struct):
    versionId: str | None = None
    lastUpdated: Any = None  # the text, then Meta's AwareDatetime of it
    source: str | None = None
    tag: list[_MCoding] = []


class _MAppointment(msgspec.Struct):
    resourceType: str
    id: str | None = None
    identifier: list[_MIdentifier] = []
    meta: _MMeta | None = None
    status: str | None = None
    appointmentType: _MConcept | None = None
    serviceType: list[_MConcept] = []
    start: str | None = None
    end: str | None = None
    participant: list[_MParticipant] = []


_FAST_DECODER: Final = msgspec.json.Decoder(_MAppointment)
_AWARE: Final = TypeAdapter(AwareDatetime)
# Its core validator itself, without TypeAdapter's Python wrapper around it.
_AWARE_CHECK: Final = _AWARE.validator.validate_python


def _fast_resource(source: object) -> FhirAppointment | None:
    """The resource as :class:`FhirAppointment` reads it, by msgspec (a few microseconds
    instead of some twenty) from the JSON bytes or from the document the duplicate-key
    proof decoded already; None when msgspec refuses it, and the model then reads it and
    names its problems. The structs have the model's fields, which is all the mapping
    reads."""
    try:
        if isinstance(source, bytes):
            resource = _FAST_DECODER.decode(source)
        else:
            resource = msgspec.convert(source, _MAppointment)
    except (msgspec.MsgspecError, RecursionError):
        return None
    meta = resource.meta
    if meta is not None and meta.lastUpdated is not None:
        if not isinstance(meta.lastUpdated, str):
            return None
        try:
            meta.lastUpdated = _AWARE_CHECK(meta.lastUpdated)
        except ValidationError:
            return None
    return cast(FhirAppointment, resource)


_NAMESPACE_SHA1: Final = hashlib.sha1(EVENT_ID_NAMESPACE.bytes, usedforsecurity=False)


def event_id_for(practice_id: str, appointment_id: str, sequence: int) -> uuid.UUID:
    return uuid.UUID(_event_id_hex(practice_id, appointment_id, sequence))


def _event_id_hex(practice_id: str, appointment_id: str, sequence: int) -> str:
    """``uuid.uuid5(EVENT_ID_NAMESPACE, name).hex`` in a third of the time: the mapping
    hands the text to AppointmentEvent, whose validator makes the UUID anyway."""
    sha1 = _NAMESPACE_SHA1.copy()  # cheaper than a new hash of the namespace and the name
    sha1.update(f"{practice_id}/{appointment_id}/{sequence}".encode())
    digest = bytearray(sha1.digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    return digest.hex()


def parse_fhir(value: bytes | None, *, received_at: datetime) -> AppointmentEvent:
    """A FHIR R4 Appointment (JSON bytes) as an AppointmentEvent, or DecodeError."""
    found = _fhir_problems(value, received_at)
    if isinstance(found, AppointmentEvent):
        return found
    raise _error(found)


def fhir_to_event(resource: FhirAppointment, *, received_at: datetime) -> AppointmentEvent:
    found = _resource_problems(resource, received_at)
    if isinstance(found, AppointmentEvent):
        return found
    raise _error(found)


def _fhir_problems(value: bytes | None, received_at: datetime) -> AppointmentEvent | list[Problem]:
    if value is None:
        return [Problem("no_value", "the record has no value")]
    document = _unique_keys_document(value)
    if document is not None:
        # No key twice, for sure: the structs are read from the document decoded for that.
        duplicate = None
        resource = _fast_resource(document)
    else:
        duplicate = duplicate_key_problem(value)
        # With a key twice, only the model's reading (the last one wins) is reported on.
        resource = _fast_resource(value) if duplicate is None else None
    if resource is None:
        try:
            resource = FhirAppointment.model_validate_json(value)
        except ValidationError as exc:
            return ([duplicate] if duplicate else []) + validation_problems(exc)
    found = _resource_problems(resource, received_at, cache_parts=len(value) <= _CACHED_BODY)
    if duplicate is None:
        return found
    return [duplicate] + ([] if isinstance(found, AppointmentEvent) else found)


def _resource_problems(
    resource: FhirAppointment, received_at: datetime, *, cache_parts: bool = False
) -> AppointmentEvent | list[Problem]:
    if resource.resourceType != "Appointment":
        return [
            Problem(
                "not_an_appointment",
                f"resourceType is {resource.resourceType[:40]!r}; this topic takes Appointment",
                None,
            )
        ]
    found: list[Problem] = []
    meta = resource.meta or _NO_META
    appointment_id = resource.id or next((i.value for i in resource.identifier if i.value), None)
    if not appointment_id:
        found.append(
            Problem(
                "missing_field",
                "appointment_id (Appointment.id): Field required",
                "appointment_id",
            )
        )

    # Each participant's actor read once: (participant, the id its reference names).
    patients: list[tuple[Participant, str | None]] = []
    practitioner: tuple[Participant, str | None] | None = None
    service: tuple[Participant, str | None] | None = None
    locations: list[Reference] = []
    for participant in resource.participant:
        actor = participant.actor
        if actor is None:
            continue
        identifier = actor.identifier
        if identifier is not None and identifier.system in BSN_SYSTEMS and _BSN_NAMED not in found:
            found.append(_BSN_NAMED)
        # (resource type, id) of the actor: what its reference names (``Patient/123``, an
        # absolute URL, ``.../Patient/123/_history/2``), ``type`` first; else ``type`` alone.
        kind, ident = actor.type, None
        if actor.reference:
            named, ident = _reference(actor.reference)
            if ident is not None:
                kind = kind or named
        if kind == "Patient":
            patients.append((participant, ident))
        elif kind in _PRACTITIONERS and practitioner is None:
            practitioner = (participant, ident)
        elif kind == "HealthcareService" and service is None:
            service = (participant, ident)
        elif kind == "Location":
            locations.append(actor)

    patient: dict[str, Any] | None = None
    if len(patients) > 1:
        found.append(Problem("invalid_field", _MANY_PATIENTS, "patient"))
    elif patients:
        participant, ident = patients[0]
        patient = {"id": _id_of(participant.actor, ident)}
        if participant.required is not None:
            patient["required"] = participant.required
    practice_id: str | None = None
    for actor in locations:
        identifier = actor.identifier
        if identifier is not None and identifier.system in AGB_SYSTEMS:
            practice_id = identifier.value or ""
            break
    else:
        found.append(Problem("missing_field", _NO_PRACTICE, "practice_id"))
    try:
        sequence: int | None = _sequence(meta)
    except DecodeError as exc:
        found.append(Problem(exc.reason, exc.detail, "sequence"))
        sequence = None

    event_id: str | None = None
    if practice_id is not None and appointment_id and sequence is not None:
        event_id = _event_id_hex(practice_id.strip(), appointment_id.strip(), sequence)
    fields: dict[str, Any] = {
        "occurred_at": meta.lastUpdated or received_at,
        "source_system": (meta.source or "fhir")[:64],
    }
    # The fields the mapping found (an absent one is the model's to name).
    if event_id is not None:
        fields["event_id"] = event_id
    if practice_id is not None:
        fields["practice_id"] = practice_id
    if appointment_id is not None:
        fields["appointment_id"] = appointment_id
    if sequence is not None:
        fields["sequence"] = sequence
    if resource.status is not None:
        fields["status"] = resource.status
    if resource.start is not None:
        fields["start"] = resource.start
    if resource.end is not None:
        fields["end"] = resource.end
    part = _part if cache_parts else _part.__wrapped__
    appointment_type = _coded(resource.appointmentType or next(iter(resource.serviceType), None))
    if appointment_type is not None:
        fields["appointment_type"] = part(AppointmentType, *appointment_type)
    if patient is not None:
        fields["patient"] = patient
    if practitioner is not None:
        participant, ident = practitioner
        actor = participant.actor
        practitioner_id, display = _id_of(actor, ident), _display(actor)
        role = _concept_text(next(iter(participant.type), None))
        fields["practitioner"] = part(Practitioner, practitioner_id, display, role)
        fields["agenda"] = part(Agenda, practitioner_id, display)
    if service is not None:
        participant, ident = service
        fields["agenda"] = part(
            Agenda, _id_of(participant.actor, ident), _display(participant.actor)
        )
    for actor in locations:
        if actor.display:
            fields["location"] = part(Location, actor.display)
            break
    booked_via = kind_tag = _UNSET
    for tag in meta.tag:
        if tag.system == BOOKED_VIA_SYSTEM:
            booked_via = tag.code
        elif tag.system == KIND_SYSTEM:
            kind_tag = tag.code
    # The last tag of a system counts; one without a code leaves the default.
    if booked_via is not _UNSET and booked_via is not None:
        fields["booked_via"] = booked_via
    if kind_tag is not _UNSET and kind_tag is not None:
        fields["kind"] = kind_tag
    if not found:
        event = _fast_event(fields)
        if event is not None:
            return event
    try:
        event = AppointmentEvent.model_validate(fields)
    except ValidationError as exc:
        # A field whose mapping already failed is reported once, by that mapping.
        failed = {p.field for p in found} | ({"event_id"} if event_id is None else set())
        found.extend(
            p
            for p in validation_problems(exc, _HINTS)
            if (p.field or "").split(".")[0] not in failed
        )
    else:
        if not found:
            return event
    return found


_NO_META: Final = Meta()
_UNSET: Final[Any] = object()
_BSN_NAMED: Final = Problem(
    "bsn_like_patient_id",
    "participant actor.identifier: a person is named by BSN; send the pseudonymous "
    "portal id (Patient/{id}) instead",
    "patient",
)
_MANY_PATIENTS: Final = (
    "patient (Patient participant): more than one Patient; send one Appointment per patient"
)
_NO_PRACTICE: Final = (
    "practice_id: no practice AGB code; give a Location participant an actor.identifier "
    "with system http://fhir.nl/fhir/NamingSystem/agb-z and the practice's AGB code"
)


# The cache holds its keys: only parts of records of at most _CACHED_BODY bytes are cached
# (no text in them is longer), so the cache stays below 2048 x 4 KB, whatever is sent.
_CACHED_BODY: Final = 4096


@lru_cache(maxsize=2048, typed=True)
def _part(model: type[BaseModel], *values: str | None) -> Any:
    """The field of AppointmentEvent that ``model`` is, of ``values`` (its fields in order):
    the instance AppointmentEvent would make of them, validated once per distinct values
    (a practice's practitioners, agendas, locations and appointment types recur in every
    resource) and taken as it is (revalidate_instances "never": the same frozen value a
    dict gives); values the model refuses are handed on as a dict, for AppointmentEvent to
    name their problems where it always did (``agenda.display``)."""
    data = dict(zip(model.__pydantic_fields__, values, strict=True))
    try:
        return model.model_validate(data)
    except ValidationError:
        return data


def _id_of(actor: Reference | None, ident: str | None) -> str | None:
    """The actor's id: what its reference names (``ident``), else its identifier's value."""
    if ident:
        return ident
    if actor is not None and actor.identifier is not None:
        return actor.identifier.value
    return None


# --------------------------------------------------------------------------- pieces


# The cache holds its keys: only references of at most this many characters are cached,
# so it stays below 4096 x 256 characters whatever is sent (a real one is far shorter).
_CACHED_REFERENCE: Final = 256


def _reference(reference: str) -> tuple[str | None, str | None]:
    """(type, id) a reference names, or (None, None): read once per distinct short
    reference (a practice's practitioners and locations recur in every resource)."""
    if len(reference) <= _CACHED_REFERENCE:
        return _cached_reference(reference)
    return _read_reference(reference)


def _read_reference(reference: str) -> tuple[str | None, str | None]:
    parts = reference.split("/")
    if "" in parts:
        parts = [p for p in parts if p]
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    if len(parts) >= 2 and parts[-2][:1].isupper():
        return parts[-2], parts[-1]
    return None, None


_cached_reference = lru_cache(maxsize=4096)(_read_reference)


def _display(actor: Reference | None) -> str:
    return (actor.display or "") if actor is not None else ""


def _concept_text(concept: CodeableConcept | None) -> str | None:
    if concept is None:
        return None
    for coding in concept.coding:
        if coding.display or coding.code:
            return coding.display or coding.code
    return concept.text


def _coded(concept: CodeableConcept | None) -> tuple[str, str] | None:
    """(code, display) of the appointment type."""
    if concept is None:
        return None
    for coding in concept.coding:
        if coding.code:
            return coding.code, coding.display or concept.text or ""
    if concept.text:
        return concept.text[:64], concept.text
    return None


def _sequence(meta: Meta) -> int:
    version = (meta.versionId or "").strip()
    if version.isdigit():
        # str.isdigit() is true for "²" and "٣" too, which int() refuses or reads:
        # only ASCII digits are a version, and it must fit 64 bits.
        if not version.isascii() or len(version) > 19 or int(version) > MAX_INT64:
            raise DecodeError(
                "number_out_of_range",
                "sequence (meta.versionId): give meta.versionId as ASCII digits, an integer "
                "of at most 2**63 - 1 that grows with every change",
            )
        return int(version)
    if version:
        # Not silently ordered by lastUpdated instead: a connector that sends a versionId
        # means it as the order, and mixing the two sources would compare unlike numbers.
        raise DecodeError(
            "number_out_of_range",
            "sequence (meta.versionId): give meta.versionId as ASCII digits, an integer "
            "that grows with every change, or leave it out to order by meta.lastUpdated",
        )
    if meta.lastUpdated is not None:
        try:
            return int(meta.lastUpdated.timestamp() * 1000)
        except (OverflowError, ValueError):
            raise DecodeError(
                "time_out_of_range",
                "sequence (meta.lastUpdated): the time must lie between 2000-01-01 and "
                "2100-01-01 (UTC)",
            ) from None
    raise DecodeError(
        "missing_field",
        "sequence (meta.versionId / meta.lastUpdated): give meta.versionId as an integer that "
        "grows with every change, or meta.lastUpdated",
    )
