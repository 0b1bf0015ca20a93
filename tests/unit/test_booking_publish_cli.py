"""`reminders publish appointment FILE`: the connector kit's verdict, without a broker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "his"


@pytest.mark.parametrize("name", ["appointment-native.json", "appointment-fhir.json"])
def test_the_examples_are_valid(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["publish", "appointment", str(EXAMPLES / name), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("valid ")
    assert "practice 01054321" in out


def test_an_invalid_event_prints_the_reason_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    event = json.loads((EXAMPLES / "appointment-native.json").read_text())
    event["patient"]["id"] = "123456782"
    path = tmp_path / "event.json"
    path.write_text(json.dumps(event))
    assert main(["publish", "appointment", str(path), "--bootstrap", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("invalid (bsn_like_patient_id): patient.id")
    assert "123456782" not in err


def test_fhir_is_detected_by_its_resource_type(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    resource = json.loads((EXAMPLES / "appointment-fhir.json").read_text())
    resource["status"] = "planned"
    path = tmp_path / "fhir.json"
    path.write_text(json.dumps(resource))
    assert main(["publish", "appointment", str(path), "--dry-run"]) == 2
    assert capsys.readouterr().err.startswith("invalid (unknown_status): status (Appointment.")


def test_a_meeting_is_announced(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    event = json.loads((EXAMPLES / "appointment-native.json").read_text())
    event["appointment_type"] = {"code": "X1", "display": "Patiëntbespreking"}
    path = tmp_path / "event.json"
    path.write_text(json.dumps(event))
    assert main(["publish", "appointment", str(path), "--dry-run"]) == 0
    assert "classified as a meeting (rule keyword: bespreking)" in capsys.readouterr().out


def test_a_missing_file_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["publish", "appointment", "/nonexistent/event.json"]) == 2
    assert capsys.readouterr().err.startswith("error: cannot read /nonexistent/event.json")
