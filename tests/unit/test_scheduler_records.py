"""The scheduler's fast reader of appointments.v1 and its writers of ReminderDue/FiredMarker."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas.models import Appointment, FiredMarker, ReminderDue, reminder_id_for
from services.domain.codec import DecodeError, decode, encode
from services.reminder_scheduler.records import (
    fired_values,
    from_ms,
    from_us,
    read_appointment,
    read_marker,
    to_ms,
    to_us,
)
from services.reminder_scheduler.samples import appointment_value

START = datetime(2026, 12, 1, 8, 30, 15, 250000, tzinfo=UTC)


def appointment_doc(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "source_system": "medicom",
        "practice_id": "01234567",
        "appointment_id": "A-1001",
        "sequence": 3,
        "status": "booked",
        "start": "2026-12-01T09:30:15.25+01:00",
        "end": "2026-12-01T09:40:00+01:00",
        "appointment_type": {"code": "C10", "display": "1 klacht, 10 minuten"},
        "agenda": {"id": "ag1", "display": "Dokter Jansen"},
        "practitioner": {"id": "pr1", "display": "Dr. Jansen", "role": "huisarts"},
        "booked_via": "portal",
        "patient": {"id": "pat-7f3a", "required": "required"},
        "booked_at": "2026-11-20T10:00:00Z",
        "updated_at": "2026-11-21T10:00:00Z",
        "meeting": {"is_meeting": False},
    }
    doc.update(changes)
    return doc


def test_reads_what_the_contract_writes() -> None:
    value = encode(Appointment.model_validate(appointment_doc()))
    state = read_appointment(value)
    assert state.key == "01234567/A-1001"
    assert state.patient_id == "pat-7f3a"
    assert state.status == "booked"
    assert state.sequence == 3
    assert state.start == START
    assert state.start_us == to_us(START)
    assert state.end_us == to_us(datetime(2026, 12, 1, 8, 40, tzinfo=UTC))
    assert state.booked_us == to_us(datetime(2026, 11, 20, 10, tzinfo=UTC))
    assert state.updated_us == to_us(datetime(2026, 11, 21, 10, tzinfo=UTC))


@pytest.mark.parametrize(
    ("value", "reason", "field"),
    [
        (b"{not json", "not_json", "JSON"),
        (b"[1, 2]", "invalid", "object"),
        (json.dumps(appointment_doc(patient={"id": "123456789"})).encode(), "invalid", "BSN"),
        (json.dumps(appointment_doc(patient=None)).encode(), "invalid", "patient"),
        (json.dumps(appointment_doc(practice_id="a/b")).encode(), "invalid", "practice_id"),
        (json.dumps(appointment_doc(status="done")).encode(), "invalid", "status"),
        (json.dumps(appointment_doc(sequence=True)).encode(), "invalid", "sequence"),
        (json.dumps(appointment_doc(sequence=-1)).encode(), "invalid", "sequence"),
        (json.dumps(appointment_doc(start="2026-12-01T09:30")).encode(), "invalid", "start"),
        (json.dumps(appointment_doc(start="tomorrow")).encode(), "invalid", "start"),
        (
            json.dumps(appointment_doc(end="2026-12-01T08:00:00+01:00")).encode(),
            "invalid",
            "end",
        ),
        (json.dumps(appointment_doc(booked_at=None)).encode(), "invalid", "booked_at"),
    ],
)
def test_refuses_with_a_reason_naming_the_field(value: bytes, reason: str, field: str) -> None:
    with pytest.raises(DecodeError) as caught:
        read_appointment(value)
    assert caught.value.reason == reason
    assert field in caught.value.detail
    assert "123456789" not in caught.value.detail


def test_what_it_refuses_the_contract_refuses_too() -> None:
    for bad in (appointment_doc(patient={"id": "123456789"}), appointment_doc(status="x")):
        with pytest.raises(ValidationError):
            Appointment.model_validate(bad)


def test_reminder_due_and_marker_match_the_models() -> None:
    fired_at = datetime(2026, 11, 30, 8, 30, 16, 1234, tzinfo=UTC)
    due_at = datetime(2026, 11, 30, 8, 30, 15, tzinfo=UTC)
    end = START + timedelta(minutes=10)
    for reason in (None, "too_late", "booked_recently"):
        due_bytes, marker_bytes = fired_values(
            practice_id="01234567",
            appointment_id="A-1001",
            patient_id="pat-7f3a",
            start=START,
            end=end,
            sequence=2**63 + 5,
            due_at=due_at,
            fired_at=fired_at,
            reason=reason,
        )
        due = decode(ReminderDue, due_bytes)
        assert due.reminder_id == reminder_id_for("01234567", "A-1001", START)
        assert due.reminder_id == "01234567/A-1001/2026-12-01T08:30:15Z"
        assert (due.start, due.due_at, due.fired_at) == (START, due_at, fired_at)
        assert due.reason == reason and due.sequence == 2**63 + 5
        assert due.patient_id == "pat-7f3a" and due.practice_id == "01234567"
        assert json.loads(due_bytes) == json.loads(encode(due))
        marker = decode(FiredMarker, marker_bytes)
        assert marker.reminder_id == due.reminder_id
        assert (marker.start, marker.end, marker.due_at) == (START, end, due_at)
        assert json.loads(marker_bytes) == json.loads(encode(marker))
        state = read_marker(marker_bytes)
        assert (state.key, state.start, state.end) == ("01234567/A-1001", START, end)


def test_integer_times_round_trip() -> None:
    assert from_us(to_us(START)) == START
    assert from_ms(to_ms(START)) == START.replace(microsecond=250000)
    assert to_us(datetime(1970, 1, 1, 1, tzinfo=UTC)) == 3_600_000_000


def test_the_bulk_sample_is_a_valid_appointment() -> None:
    value = appointment_value("01234567", "A-9", start=START, meeting=True, patient_id="p-9")
    appointment = decode(Appointment, value)
    assert appointment.meeting.is_meeting and appointment.start == START
    assert read_appointment(value).key == "01234567/A-9"


_ID_CHARS = st.characters(codec="utf-8", categories=("L", "N", "P", "S", "Z"))
_IDS = st.one_of(
    st.text(alphabet="Az09._:-/ ", max_size=70),
    st.text(alphabet=_ID_CHARS, max_size=70),
    st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,66}", fullmatch=True),
)


# The contract's identifier pattern (schemas.models), whole string; the contract strips
# whitespace first, the scheduler refuses what booking_events would have stripped.
_CONTRACT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")


@settings(max_examples=400, deadline=None)
@given(appointment_id=_IDS, patient_id=_IDS)
def test_accepts_exactly_the_ids_of_the_contracts_pattern(
    appointment_id: str, patient_id: str
) -> None:
    doc = appointment_doc(appointment_id=appointment_id, patient={"id": patient_id})
    bsn_like = len(patient_id) in (8, 9) and patient_id.isascii() and patient_id.isdigit()
    expected = (
        _CONTRACT_ID.fullmatch(appointment_id) is not None
        and _CONTRACT_ID.fullmatch(patient_id) is not None
        and not bsn_like
    )
    try:
        read_appointment(json.dumps(doc).encode())
        accepted = True
    except DecodeError as exc:
        accepted = False
        assert exc.reason == "invalid"
    assert accepted == expected
    if expected:
        Appointment.model_validate(doc)  # and the contract accepts it too
