"""Native and FHIR R4 events to the internal form; the reasons for refusing them; the
Appointment record; the duplicate/stale rule and the ledger."""

from __future__ import annotations

import copy
import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from schemas.models import Appointment, AppointmentEvent, MeetingInfo
from services.booking_events.ledger import Ledger, Seen, judge, seen_from_state
from services.booking_events.normalize import appointment_json, to_appointment
from services.domain.codec import DecodeError, encode
from services.domain.his_events import (
    REASONS,
    check_placement,
    content_type,
    event_id_for,
    is_fhir,
    parse_event,
    parse_fhir,
    parse_native,
)
from services.domain.partition import partition_for

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "his"
RECEIVED = datetime(2026, 11, 20, 13, 0, tzinfo=UTC)


def _native() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EXAMPLES / "appointment-native.json").read_text())
    return data


def _fhir() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EXAMPLES / "appointment-fhir.json").read_text())
    return data


def _raw(data: Any) -> bytes:
    return json.dumps(data).encode()


def _reason(value: bytes | None, *, fhir: bool = False) -> DecodeError:
    with pytest.raises(DecodeError) as caught:
        parse_event(value, fhir=fhir, received_at=RECEIVED)
    assert caught.value.reason in REASONS
    return caught.value


# --------------------------------------------------------------------------- native


def test_the_native_example_is_valid() -> None:
    event = parse_native(_raw(_native()))
    assert event.practice_id == "01054321"
    assert event.patient.required == "required"
    assert event.comment is not None  # accepted, and dropped from the state (below)


@pytest.mark.parametrize(
    ("change", "reason", "field"),
    [
        ({"status": "gone"}, "unknown_status", "status"),
        ({"start": "2026-12-01T09:30:00"}, "time_without_offset", "start"),
        ({"occurred_at": "2026-11-20T14:03:12"}, "time_without_offset", "occurred_at"),
        ({"end": "2026-12-01T09:00:00+01:00"}, "end_before_start", "record"),
        ({"end": "2026-12-01T09:30:00+01:00"}, "end_before_start", "record"),
        ({"patient": {"id": "123456782"}}, "bsn_like_patient_id", "patient.id"),
        ({"patient": {"id": "12345678"}}, "bsn_like_patient_id", "patient.id"),
        ({"practice_id": ""}, "empty_practice_id", "practice_id"),
        ({"practice_id": "   "}, "empty_practice_id", "practice_id"),
        ({"practice_id": "a/b"}, "invalid_field", "practice_id"),
        ({"sequence": "x"}, "invalid_field", "sequence"),
        ({"sequence": -1}, "invalid_field", "sequence"),
        ({"event_id": "not-a-uuid"}, "invalid_field", "event_id"),
        ({"agenda": None}, "invalid_field", "agenda"),
        ({"patient": {"id": "pt-1", "required": "maybe"}}, "invalid_field", "patient.required"),
    ],
)
def test_bad_native_events_are_refused_with_a_reason(
    change: dict[str, Any], reason: str, field: str
) -> None:
    error = _reason(_raw({**_native(), **change}))
    assert error.reason == reason
    assert error.detail.startswith(field)


@pytest.mark.parametrize("missing", ["event_id", "practice_id", "start", "patient", "agenda"])
def test_a_missing_field_is_named(missing: str) -> None:
    data = _native()
    del data[missing]
    error = _reason(_raw(data))
    assert (error.reason, error.detail) == ("missing_field", f"{missing}: Field required")


@pytest.mark.parametrize("value", [b"", b"nope", b'{"event_id": ', b"[1, 2]", b'"text"', b"\xff{"])
def test_not_json_is_refused(value: bytes) -> None:
    assert _reason(value).reason == "not_json"


def test_a_record_without_value_is_refused() -> None:
    assert _reason(None).reason == "no_value"


def test_the_privacy_reason_wins_over_others_and_no_value_is_echoed() -> None:
    data = {**_native(), "patient": {"id": "123456782"}, "status": "gone", "start": "x"}
    error = _reason(_raw(data))
    assert error.reason == "bsn_like_patient_id"
    assert "123456782" not in error.detail


def test_fhir_sent_without_the_header_gets_a_hint() -> None:
    error = _reason(_raw(_fhir()))
    assert error.reason == "missing_field"
    assert "content-type: application/fhir+json" in error.detail


def test_the_content_type_header_selects_fhir() -> None:
    assert is_fhir([("content-type", b"application/fhir+json")])
    assert is_fhir([("Content-Type", b"application/fhir+json; fhirVersion=4.0")])
    assert not is_fhir([("content-type", b"application/json")])
    assert not is_fhir([])
    assert content_type([("x", b"y")]) is None


# --------------------------------------------------------------------------- placement


def test_the_key_must_be_the_practice_id() -> None:
    event = parse_native(_raw(_native()))
    n = 12
    right = partition_for(event.practice_id, n)
    check_placement(event, b"01054321", right, n)
    check_placement(event, None, right, n)
    with pytest.raises(DecodeError) as caught:
        check_placement(event, b"01099999", right, n)
    assert caught.value.reason == "key_mismatch"
    with pytest.raises(DecodeError) as caught:
        check_placement(event, b"01054321", (right + 1) % n, n)
    assert caught.value.reason == "wrong_partition"


# --------------------------------------------------------------------------- the record


def test_the_state_record_is_what_the_model_writes_without_the_comment() -> None:
    event = parse_native(_raw(_native()))
    meeting = MeetingInfo(is_meeting=True, rule="keyword", matched="MDO")
    state = appointment_json(event, None, meeting)
    expected = to_appointment(event, event.occurred_at, meeting)
    assert state.value == encode(expected)
    assert Appointment.model_validate_json(state.value) == expected
    assert b"comment" not in state.value and b"never stored" not in state.value
    assert state.booked_at == "2026-11-20T14:03:12+01:00"


def test_booked_at_is_kept_and_updated_at_follows_the_event() -> None:
    data = {**_native(), "occurred_at": "2026-11-25T08:00:00Z", "sequence": 2}
    data["appointment_type"] = {"code": "C10", "display": 'tricky ,"event_id":"x'}
    event = parse_native(_raw(data))
    state = appointment_json(event, "2026-11-20T14:03:12+01:00", MeetingInfo(is_meeting=False))
    record = Appointment.model_validate_json(state.value)
    assert record.booked_at == datetime(2026, 11, 20, 13, 3, 12, tzinfo=UTC)
    assert record.updated_at == datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
    assert record.last_event_id == event.event_id
    assert record.appointment_type.display == 'tricky ,"event_id":"x'
    assert state.booked_at == "2026-11-20T14:03:12+01:00"


# --------------------------------------------------------------------------- FHIR


def _from_fhir(data: dict[str, Any]) -> AppointmentEvent:
    return parse_fhir(_raw(data), received_at=RECEIVED)


def test_the_fhir_example_maps_to_the_same_internal_event() -> None:
    event = _from_fhir(_fhir())
    assert event.practice_id == "01054321"
    assert event.appointment_id == "A-2026-118735"
    assert event.sequence == 1
    assert event.status == "booked"
    assert event.start == datetime(2026, 12, 1, 8, 40, tzinfo=UTC)
    assert (event.appointment_type.code, event.appointment_type.display) == (
        "C10",
        "1 klacht, 10 minuten",
    )
    assert (event.agenda.id, event.agenda.display) == ("AG-JANSEN", "Spreekuur dr. Jansen")
    assert (event.practitioner.id, event.practitioner.role) == ("P-017", "huisarts")
    assert event.location is not None and event.location.display.startswith("Huisartsen")
    assert (event.patient.id, event.patient.required) == ("pt-8f3a2c92", "required")
    assert (event.booked_via, event.kind, event.source_system) == (
        "portal",
        "consult",
        "urn:his:medicom",
    )
    assert event.occurred_at == datetime(2026, 11, 20, 13, 5, 40, tzinfo=UTC)
    assert event.comment is None  # the FHIR comment is never read
    assert event.event_id == event_id_for("01054321", "A-2026-118735", 1)


def test_a_resent_fhir_version_has_the_same_event_id() -> None:
    assert _from_fhir(_fhir()).event_id == _from_fhir(_fhir()).event_id
    newer = _fhir()
    newer["meta"]["versionId"] = "2"
    assert _from_fhir(newer).event_id != _from_fhir(_fhir()).event_id


def test_fhir_sequence_from_last_updated_and_occurred_at_from_the_record() -> None:
    data = _fhir()
    data["meta"] = {"lastUpdated": "2026-11-20T14:05:40.250+01:00"}
    event = _from_fhir(data)
    assert event.sequence == int(datetime(2026, 11, 20, 13, 5, 40, 250000, UTC).timestamp() * 1000)
    assert event.source_system == "fhir"
    del data["meta"]
    error = _reason(_raw(data), fhir=True)
    assert error.reason == "missing_field" and "meta.versionId" in error.detail


def test_fhir_service_type_and_text_only_types_and_the_practitioner_agenda() -> None:
    data = _fhir()
    data.pop("appointmentType")
    data["serviceType"] = [{"text": "MDO ouderenzorg"}]
    data["participant"] = [p for p in data["participant"] if "HealthcareService" not in str(p)]
    event = _from_fhir(data)
    assert (event.appointment_type.code, event.appointment_type.display) == (
        "MDO ouderenzorg",
        "MDO ouderenzorg",
    )
    assert (event.agenda.id, event.agenda.display) == ("P-017", "dr. E. Jansen")


def test_fhir_information_only_patient_and_absolute_references() -> None:
    data = _fhir()
    data["participant"][0] = {
        "actor": {"reference": "https://his.example/fhir/Patient/pt-1/_history/3"},
        "required": "information-only",
    }
    event = _from_fhir(data)
    assert (event.patient.id, event.patient.required) == ("pt-1", "information-only")


def _fhir_with(**changes: Any) -> dict[str, Any]:
    data = copy.deepcopy(_fhir())
    data.update(changes)
    return data


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (_fhir_with(resourceType="Patient"), "not_an_appointment"),
        (_fhir_with(status="planned"), "unknown_status"),
        (_fhir_with(start="2026-12-01T09:40:00"), "time_without_offset"),
        (_fhir_with(end="2026-12-01T09:00:00+01:00"), "end_before_start"),
        (_fhir_with(id=None), "missing_field"),
        (_fhir_with(participant="nope"), "invalid_field"),
        (_fhir_with(meta={"versionId": "1", "lastUpdated": "2026-11-20T14:05:40"}), None),
    ],
)
def test_bad_fhir_is_refused_with_a_reason(data: dict[str, Any], reason: str | None) -> None:
    error = _reason(_raw(data), fhir=True)
    assert error.reason == (reason or "time_without_offset")


def test_a_fhir_patient_named_by_bsn_is_refused() -> None:
    data = _fhir()
    data["participant"][0]["actor"] = {
        "identifier": {"system": "http://fhir.nl/fhir/NamingSystem/bsn", "value": "123456782"}
    }
    error = _reason(_raw(data), fhir=True)
    assert error.reason == "bsn_like_patient_id"
    assert "123456782" not in error.detail
    data["participant"][0]["actor"] = {"reference": "Patient/123456782"}
    assert _reason(_raw(data), fhir=True).reason == "bsn_like_patient_id"


def test_fhir_without_a_practice_agb_code_is_refused() -> None:
    data = _fhir()
    data["participant"][3]["actor"].pop("identifier")
    error = _reason(_raw(data), fhir=True)
    assert error.reason == "missing_field" and "agb-z" in error.detail
    data["participant"][3]["actor"]["identifier"] = {
        "system": "urn:oid:2.16.840.1.113883.2.4.6.1",
        "value": "",
    }
    assert _reason(_raw(data), fhir=True).reason == "empty_practice_id"


def test_fhir_with_two_patients_or_no_practitioner_is_refused() -> None:
    data = _fhir()
    data["participant"].append({"actor": {"reference": "Patient/pt-2"}})
    assert _reason(_raw(data), fhir=True).reason == "invalid_field"
    data = _fhir()
    data["participant"] = [p for p in data["participant"] if "Practitioner/" not in str(p)]
    error = _reason(_raw(data), fhir=True)
    assert error.reason == "missing_field" and "practitioner" in error.detail


# --------------------------------------------------------------------------- the ledger


def _event(sequence: int, event_id: uuid.UUID | None = None) -> AppointmentEvent:
    data = {**_native(), "sequence": sequence, "event_id": str(event_id or uuid.uuid4())}
    return parse_native(_raw(data))


def test_duplicates_and_stale_events_are_recognised() -> None:
    first = _event(3)
    seen = Seen(3, first.event_id.int, "2026-11-20T14:03:12+01:00", 0.0)
    assert judge(None, first) == "accepted"
    assert judge(seen, first) == "duplicate"
    assert judge(seen, _event(3)) == "duplicate"  # same sequence, other id
    assert judge(seen, _event(5, first.event_id)) == "duplicate"  # same id
    assert judge(seen, _event(2)) == "stale"
    assert judge(seen, _event(4)) == "accepted"


def test_the_ledger_follows_the_compacted_topic_in_log_order() -> None:
    event = parse_native(_raw(_native()))
    value = appointment_json(event, None, MeetingInfo(is_meeting=False)).value
    ledger = Ledger()
    ledger.apply("01054321/A-2026-118734", value)
    seen = ledger.get("01054321/A-2026-118734")
    assert seen == seen_from_state(value)
    assert seen is not None
    assert (seen.sequence, seen.event_id, seen.booked_at) == (
        1,
        event.event_id.int,
        "2026-11-20T14:03:12+01:00",
    )
    assert seen.end == event.end.timestamp()
    assert ledger.ended_before(event.end.timestamp() + 1) == ["01054321/A-2026-118734"]
    assert ledger.ended_before(event.end.timestamp()) == []
    ledger.apply("01054321/A-2026-118734", None)
    assert len(ledger) == 0
    with pytest.raises(DecodeError):
        ledger.apply("x/y", b'{"sequence": 1}')
