"""Issue 12: what the edges accept, every later stage can process.

Each test here failed before the fix (the input was accepted and stopped a service later,
or was accepted although it could never be sent) and passes after it.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from schemas.models import Appointment, AppointmentEvent, PatientParticipant, PracticeConfig
from services.common.practice_config import ConfigRejected, validate_practice_config
from services.domain.codec import DecodeError
from services.domain.his_events import REASONS, parse_event, problems

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "deploy" / "examples" / "his"
RECEIVED = datetime(2026, 11, 20, 13, 0, tzinfo=UTC)


def _native(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EXAMPLES / "appointment-native.json").read_text())
    data.update(changes)
    return data


def _fhir() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EXAMPLES / "appointment-fhir.json").read_text())
    return data


def _refused(value: bytes, *, fhir: bool = False) -> DecodeError:
    with pytest.raises(DecodeError) as caught:
        parse_event(value, fhir=fhir, received_at=RECEIVED)
    assert caught.value.reason in REASONS
    event, found = problems(value, fhir=fhir, received_at=RECEIVED)
    assert event is None and found and found[0].reason == caught.value.reason
    return caught.value


def _config(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "practice_id": "01999001",
        "name": "Huisartsenpraktijk De Linde",
        "phone": "020-1234567",
        "reminders_enabled": True,
        "sender": {"email": "herinnering@delinde.example.org", "name": "De Linde"},
        "appointment_types": {"C10": {"label": "Consult van 10 minuten"}},
    }
    data.update(changes)
    return data


def _config_refused(data: dict[str, Any] | bytes) -> str:
    with pytest.raises(ConfigRejected) as caught:
        validate_practice_config(data)
    return caught.value.reason


# --------------------------------------------------------------------------- the three stoppers


@pytest.mark.parametrize(
    "version", ["²", "٣", "1²", "99999999999999999999999", "abc", "v2", "1.0", "-1", 'W/"3"']
)
def test_fhir_version_id_of_unicode_digits_or_beyond_64_bits_is_refused(version: str) -> None:
    data = _fhir()
    data.setdefault("meta", {})["versionId"] = version
    error = _refused(json.dumps(data).encode(), fhir=True)
    assert error.reason == "number_out_of_range"
    assert "ASCII digits" in error.detail


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("9999-12-31T23:30:00-01:00", "9999-12-31T23:45:00-01:00"),
        ("0001-01-01T00:30:00+01:00", "0001-01-01T00:45:00+01:00"),
        ("2100-01-01T00:30:00Z", "2100-01-01T00:45:00Z"),
        ("1999-12-31T23:30:00Z", "2026-12-01T10:00:00+01:00"),
    ],
)
def test_times_outside_a_sane_range_after_utc_conversion_are_refused(start: str, end: str) -> None:
    error = _refused(json.dumps(_native(start=start, end=end)).encode())
    assert error.reason == "time_out_of_range"


@pytest.mark.parametrize(
    "value", ["21:00:30.5+02:00", "21:00+02:00", "21:00:30", "21:00Z", "9:00", "24:00", "21.00"]
)
def test_quiet_hours_must_be_local_hh_mm(value: str) -> None:
    reason = _config_refused(_config(quiet_hours={"start": value, "end": "08:00"}))
    assert 'quiet_hours.start must be a time such as "18:00"' in reason
    assert "without seconds or UTC offset" in reason


def test_times_of_day_as_hh_mm_or_a_dumped_hh_mm_00_are_accepted() -> None:
    config = validate_practice_config(_config(quiet_hours={"start": "21:00", "end": "07:30:00"}))
    assert config.quiet_hours is not None
    assert config.quiet_hours.start.isoformat() == "21:00:00"
    assert config.quiet_hours.end.tzinfo is None


# --------------------------------------------------------------------------- HIS edge


@pytest.mark.parametrize(
    "patient_id",
    [
        "1234.56.782",
        "1234 56 782",
        "BSN123456782",
        "bsn:123456782",
        "0123456782",
        "123456782",
        "12345678",
        "NL-1234-56-782",
    ],
)
def test_bsn_like_patient_ids_in_other_notations_are_refused(patient_id: str) -> None:
    data = _native()
    data["patient"] = {**data["patient"], "id": patient_id}
    assert _refused(json.dumps(data).encode()).reason in ("bsn_like_patient_id", "invalid_field")
    with pytest.raises(ValueError, match="BSN"):
        PatientParticipant(id=patient_id.replace(" ", "."))


@pytest.mark.parametrize("patient_id", ["pt-7f3a91", "P12345", "pat-2026-11", "A1"])
def test_pseudonymous_patient_ids_stay_accepted(patient_id: str) -> None:
    data = _native()
    data["patient"] = {**data["patient"], "id": patient_id}
    event, found = problems(json.dumps(data).encode(), fhir=False, received_at=RECEIVED)
    assert found == [] and event is not None


def test_duplicate_json_keys_in_a_his_record_are_refused() -> None:
    text = json.dumps(_native())
    # "id":"123456782" first, "id":"pt-..." last: the last would win silently.
    sneaky = text.replace('"patient": {', '"patient": {"id": "123456782", ', 1)
    assert sneaky != text
    error = _refused(sneaky.encode())
    assert error.reason in ("duplicate_key", "bsn_like_patient_id")
    _, found = problems(sneaky.encode(), fhir=False, received_at=RECEIVED)
    assert "duplicate_key" in {p.reason for p in found}
    fhir = json.dumps(_fhir())
    twice = fhir.replace('"status"', '"status": "cancelled", "status"', 1)
    assert _refused(twice.encode(), fhir=True).reason == "duplicate_key"


def test_sequence_beyond_64_bits_is_refused_at_the_edge() -> None:
    error = _refused(json.dumps(_native(sequence=10**30)).encode())
    assert error.reason == "number_out_of_range"
    ok, found = problems(
        json.dumps(_native(sequence=2**63 - 1)).encode(), fhir=False, received_at=RECEIVED
    )
    assert found == [] and ok is not None


@pytest.mark.parametrize("practice_id", ["practice-1", "0105432", "010543210", "AGB01054"])
def test_practice_ids_that_are_not_agb_codes_are_refused(practice_id: str) -> None:
    assert _refused(json.dumps(_native(practice_id=practice_id)).encode()).reason == (
        "invalid_practice_id"
    )
    assert "AGB code" in _config_refused(_config(practice_id=practice_id))


@pytest.mark.parametrize("char", ["\u202e", "\u2066", "\u2028", "\u0085", "\u200f", "\ufeff"])
def test_control_and_bidi_characters_in_his_texts_are_refused(char: str) -> None:
    data = _native()
    data["agenda"] = {**data["agenda"], "display": f"Spreek{char}uur"}
    assert _refused(json.dumps(data).encode()).reason == "control_character"


_CODE_CHARS = ["\x00", "\r\n", "\u202e", "\u2028", "\u0085", "\ufeff"]


@pytest.mark.parametrize("char", _CODE_CHARS)
@pytest.mark.parametrize(
    "field",
    ["appointment_type.code", "agenda.id", "practitioner.id", "source_system"],
)
def test_control_and_bidi_characters_in_his_codes_are_refused(char: str, field: str) -> None:
    """A NUL once reached insights' PostgreSQL table and stopped it on every restart."""
    data = _native()
    if "." in field:
        part, name = field.split(".")
        data[part] = {**data[part], name: f"X{char}1"}
    else:
        data[field] = f"his{char}1"
    value = json.dumps(data).encode()
    error = _refused(value)
    assert error.reason == "control_character"
    assert f"U+{ord(char[0]):04X}" in error.detail
    _, found = problems(value, fhir=False, received_at=RECEIVED)
    assert [(p.reason, p.field) for p in found] == [("control_character", field)]


@pytest.mark.parametrize("char", _CODE_CHARS)
@pytest.mark.parametrize("where", ["code", "practitioner", "service", "source"])
def test_control_and_bidi_characters_in_fhir_codes_are_refused(char: str, where: str) -> None:
    data = _fhir()
    if where == "code":
        data["appointmentType"]["coding"][0]["code"] = f"C{char}10"
    elif where == "practitioner":
        data["participant"][1]["actor"]["reference"] = f"Practitioner/P{char}017"
    elif where == "service":
        data["participant"][2]["actor"]["reference"] = f"HealthcareService/AG{char}1"
    else:
        data["meta"]["source"] = f"urn:his:{char}medicom"
    error = _refused(json.dumps(data).encode(), fhir=True)
    assert error.reason == "control_character"
    assert f"U+{ord(char[0]):04X}" in error.detail


def test_plain_his_codes_stay_accepted() -> None:
    data = _native(source_system="urn:his:medicom")
    data["appointment_type"] = {"code": "C10 (lang)", "display": ""}
    data["agenda"] = {"id": "AG:JANSEN/2", "display": ""}
    data["practitioner"] = {"id": "P-017_é", "display": ""}
    event, found = problems(json.dumps(data).encode(), fhir=False, received_at=RECEIVED)
    assert found == [] and event is not None
    assert event.practitioner.id == "P-017_é"


# --------------------------------------------------------------------------- config edge


@pytest.mark.parametrize("char", ["\u202e", "\u2066", "\u2028", "\u0085", "\u200b"])
@pytest.mark.parametrize(
    "where",
    ["name", "sender.name", "label", "subject", "push_title", "push_body", "text"],
)
def test_control_and_bidi_characters_in_config_texts_are_refused(char: str, where: str) -> None:
    data = _config()
    if where == "name":
        data["name"] = f"De {char}Linde"
    elif where == "sender.name":
        data["sender"] = {**data["sender"], "name": f"De {char}Linde"}
    elif where == "label":
        data["appointment_types"] = {"C10": {"label": f"Con{char}sult"}}
    else:
        data["templates"] = {"default": {"nl": {where: f"Tot {char}morgen"}}}
    reason = _config_refused(data)
    assert "control" in reason and f"U+{ord(char):04X}" in reason


def test_encoded_words_in_header_texts_are_refused() -> None:
    evil = "=?utf-8?q?Linde=0D=0AReply-To:_x@attacker.example?="
    assert "encoded word" in _config_refused(_config(sender={"email": "a@b.example", "name": evil}))
    assert "encoded word" in _config_refused(_config(name=evil))


def test_duplicate_json_keys_in_a_config_are_refused() -> None:
    text = json.dumps(_config())
    twice = text.replace(
        '"reminders_enabled": true', '"reminders_enabled": false, "reminders_enabled": true'
    )
    assert twice != text
    assert "twice" in _config_refused(twice.encode())


def test_a_valid_config_copy_is_not_changed_by_the_checks() -> None:
    data = _config()
    before = copy.deepcopy(data)
    assert isinstance(validate_practice_config(data), PracticeConfig)
    assert data == before


# --------------------------------------------------------------------------- the connector kit


def _publish_dry_run(tmp_path: Path, document: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "event.json"
    path.write_text(json.dumps(document, ensure_ascii=False), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("REMINDERS_")}
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "publish", "appointment", str(path), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
    )


def test_publish_dry_run_refuses_the_stopping_inputs_without_a_traceback(tmp_path: Path) -> None:
    fhir = _fhir()
    fhir["meta"]["versionId"] = "²"
    native = _native(start="9999-12-31T23:30:00-01:00", end="9999-12-31T23:45:00-01:00")
    for document, reason in ((fhir, "number_out_of_range"), (native, "time_out_of_range")):
        result = _publish_dry_run(tmp_path, document)
        assert result.returncode == 2, result.stderr
        assert f"invalid ({reason})" in result.stderr
        assert "Traceback" not in result.stderr


def test_a_stored_state_from_before_the_plain_code_rule_is_still_read() -> None:
    """appointments.v1 is compacted: states written while the edge still let a NUL or a
    line break through in a code are read on every start. The edge refuses such codes
    now, the state model still reads them, so those appointments keep their reminders."""
    state = {
        "source_system": "his\n1",
        "practice_id": "01234567",
        "appointment_id": "A-OLD",
        "sequence": 1,
        "status": "booked",
        "start": "2026-12-10T09:00:00+00:00",
        "end": "2026-12-10T09:10:00+00:00",
        "appointment_type": {"code": "C\x0010", "display": "Consult"},
        "agenda": {"id": "AG\u202e1", "display": ""},
        "practitioner": {"id": "P\r\n1", "display": ""},
        "patient": {"id": "pt-1", "required": "required"},
        "booked_at": "2026-12-01T09:00:00+00:00",
        "updated_at": "2026-12-01T09:00:00+00:00",
        "meeting": {"is_meeting": False},
    }
    appointment = Appointment.model_validate_json(json.dumps(state))
    assert appointment.appointment_type.code == "C\x0010"
    assert appointment.agenda.id == "AG\u202e1"
    with pytest.raises(ValidationError):
        AppointmentEvent.model_validate(
            {
                **state,
                "event_id": "e3e70682-c209-4cac-629f-6fbed82c07cd",
                "occurred_at": "2026-12-01T09:00:00+00:00",
            }
        )
