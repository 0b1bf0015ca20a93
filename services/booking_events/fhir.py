"""FHIR R4 ``Appointment`` resources to the internal AppointmentEvent.

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

import uuid
from datetime import datetime
from typing import Any, Final

from pydantic import AwareDatetime, BaseModel, ConfigDict, ValidationError

from schemas.models import AppointmentEvent
from services.booking_events.normalize import event_from_dict, invalid
from services.common.codec import DecodeError

__all__ = [
    "AGB_SYSTEMS",
    "BOOKED_VIA_SYSTEM",
    "BSN_SYSTEMS",
    "EVENT_ID_NAMESPACE",
    "KIND_SYSTEM",
    "FhirAppointment",
    "event_id_for",
    "fhir_to_event",
    "parse_fhir",
]

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


class _Fhir(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class Coding(_Fhir):
    system: str | None = None
    code: str | None = None
    display: str | None = None


class CodeableConcept(_Fhir):
    coding: list[Coding] = []
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
    type: list[CodeableConcept] = []
    actor: Reference | None = None
    required: str | None = None
    status: str | None = None


class Meta(_Fhir):
    # FHIR's own (camelCase) element names
    versionId: str | None = None
    lastUpdated: AwareDatetime | None = None
    source: str | None = None
    tag: list[Coding] = []


class FhirAppointment(_Fhir):
    """The part of a FHIR R4 Appointment this service reads."""

    resourceType: str
    id: str | None = None
    identifier: list[Identifier] = []
    meta: Meta | None = None
    status: Any = None
    appointmentType: CodeableConcept | None = None
    serviceType: list[CodeableConcept] = []
    start: Any = None
    end: Any = None
    participant: list[Participant] = []


def event_id_for(practice_id: str, appointment_id: str, sequence: int) -> uuid.UUID:
    return uuid.uuid5(EVENT_ID_NAMESPACE, f"{practice_id}/{appointment_id}/{sequence}")


def parse_fhir(value: bytes | None, *, received_at: datetime) -> AppointmentEvent:
    """A FHIR R4 Appointment (JSON bytes) as an AppointmentEvent, or DecodeError."""
    if value is None:
        raise DecodeError("no_value", "the record has no value")
    try:
        resource = FhirAppointment.model_validate_json(value)
    except ValidationError as exc:
        raise invalid(exc) from exc
    return fhir_to_event(resource, received_at=received_at)


def fhir_to_event(resource: FhirAppointment, *, received_at: datetime) -> AppointmentEvent:
    if resource.resourceType != "Appointment":
        raise DecodeError(
            "not_an_appointment",
            f"resourceType is {resource.resourceType[:40]!r}; this topic takes Appointment",
        )
    meta = resource.meta or Meta()
    appointment_id = resource.id or next((i.value for i in resource.identifier if i.value), None)
    if not appointment_id:
        raise DecodeError("missing_field", "appointment_id (Appointment.id): Field required")

    patients: list[Participant] = []
    practitioner: Participant | None = None
    service: Participant | None = None
    locations: list[Participant] = []
    for participant in resource.participant:
        _refuse_bsn(participant.actor)
        kind, _ = _actor(participant.actor)
        if kind == "Patient":
            patients.append(participant)
        elif kind in _PRACTITIONERS and practitioner is None:
            practitioner = participant
        elif kind == "HealthcareService" and service is None:
            service = participant
        elif kind == "Location":
            locations.append(participant)

    # The patient first: a BSN is refused before anything else is looked at.
    patient = _patient(patients)
    practice_id = _practice_id(locations)
    sequence = _sequence(meta)
    fields: dict[str, Any] = {
        "event_id": event_id_for(practice_id.strip(), appointment_id.strip(), sequence),
        "occurred_at": meta.lastUpdated or received_at,
        "source_system": (meta.source or "fhir")[:64],
        "practice_id": practice_id,
        "appointment_id": appointment_id,
        "sequence": sequence,
        "status": resource.status,
        "start": resource.start,
        "end": resource.end,
        "appointment_type": _coded(
            resource.appointmentType or next(iter(resource.serviceType), None)
        ),
        "patient": patient,
    }
    if practitioner is not None:
        practitioner_id, display = _actor_id(practitioner.actor), _display(practitioner.actor)
        fields["practitioner"] = {
            "id": practitioner_id,
            "display": display,
            "role": _concept_text(next(iter(practitioner.type), None)),
        }
        fields["agenda"] = {"id": practitioner_id, "display": display}
    if service is not None:
        fields["agenda"] = {"id": _actor_id(service.actor), "display": _display(service.actor)}
    location = next((p for p in locations if _display(p.actor)), None)
    if location is not None:
        fields["location"] = {"display": _display(location.actor)}
    for tag in meta.tag:
        if tag.system == BOOKED_VIA_SYSTEM:
            fields["booked_via"] = tag.code
        elif tag.system == KIND_SYSTEM:
            fields["kind"] = tag.code
    return event_from_dict({k: v for k, v in fields.items() if v is not None}, _HINTS)


# --------------------------------------------------------------------------- pieces


def _actor(actor: Reference | None) -> tuple[str | None, str | None]:
    """(resource type, id) of a participant's actor: ``Patient/123``, an absolute URL or
    ``.../Patient/123/_history/2``, or ``type`` with only an identifier."""
    if actor is None:
        return None, None
    kind, ident = actor.type, None
    if actor.reference:
        parts = [p for p in actor.reference.split("/") if p]
        if "_history" in parts:
            parts = parts[: parts.index("_history")]
        if len(parts) >= 2 and parts[-2][:1].isupper():
            kind = kind or parts[-2]
            ident = parts[-1]
    return kind, ident


def _actor_id(actor: Reference | None) -> str | None:
    _, ident = _actor(actor)
    if ident:
        return ident
    if actor is not None and actor.identifier is not None:
        return actor.identifier.value
    return None


def _display(actor: Reference | None) -> str:
    return (actor.display or "") if actor is not None else ""


def _concept_text(concept: CodeableConcept | None) -> str | None:
    if concept is None:
        return None
    for coding in concept.coding:
        if coding.display or coding.code:
            return coding.display or coding.code
    return concept.text


def _coded(concept: CodeableConcept | None) -> dict[str, Any] | None:
    if concept is None:
        return None
    coding = next((c for c in concept.coding if c.code), None)
    if coding is not None:
        return {"code": coding.code, "display": coding.display or concept.text or ""}
    if concept.text:
        return {"code": concept.text[:64], "display": concept.text}
    return None


def _practice_id(locations: list[Participant]) -> str:
    for participant in locations:
        actor = participant.actor
        identifier = actor.identifier if actor is not None else None
        if identifier is not None and identifier.system in AGB_SYSTEMS:
            return identifier.value or ""
    raise DecodeError(
        "missing_field",
        "practice_id: no practice AGB code; give a Location participant an actor.identifier "
        "with system http://fhir.nl/fhir/NamingSystem/agb-z and the practice's AGB code",
    )


def _sequence(meta: Meta) -> int:
    version = (meta.versionId or "").strip()
    if version.isdigit():
        return int(version)
    if meta.lastUpdated is not None:
        return int(meta.lastUpdated.timestamp() * 1000)
    raise DecodeError(
        "missing_field",
        "sequence (meta.versionId / meta.lastUpdated): give meta.versionId as an integer that "
        "grows with every change, or meta.lastUpdated",
    )


def _refuse_bsn(actor: Reference | None) -> None:
    identifier = actor.identifier if actor is not None else None
    if identifier is not None and identifier.system in BSN_SYSTEMS:
        raise DecodeError(
            "bsn_like_patient_id",
            "participant actor.identifier: a person is named by BSN; send the pseudonymous "
            "portal id (Patient/{id}) instead",
        )


def _patient(patients: list[Participant]) -> dict[str, Any] | None:
    if not patients:
        return None
    if len(patients) > 1:
        raise DecodeError(
            "invalid_field",
            "patient (Patient participant): more than one Patient; send one Appointment per "
            "patient",
        )
    participant = patients[0]
    actor = participant.actor
    patient: dict[str, Any] = {"id": _actor_id(actor)}
    if participant.required is not None:
        patient["required"] = participant.required
    return patient
