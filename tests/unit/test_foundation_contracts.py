"""The contracts: models, generated JSON Schemas, settings."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from schemas import AppointmentEvent, PatientPreferences, PracticeConfig, reminder_id_for
from schemas.generate import SCHEMA_DIR, drifted
from schemas.topics import Topics
from services.common.settings import KafkaSettings, Settings

EVENT = {
    "event_id": "6f1c1f3e-3b7a-4d44-9d7c-0f3c1d2b9a10",
    "occurred_at": "2026-11-30T08:00:00+01:00",
    "source_system": "medicom",
    "practice_id": "01999001",
    "appointment_id": "A-1001",
    "sequence": 1,
    "status": "booked",
    "start": "2026-12-01T09:30:00+01:00",
    "end": "2026-12-01T09:40:00+01:00",
    "appointment_type": {"code": "C10", "display": "Consult 10 min"},
    "agenda": {"id": "AG-1", "display": "Spreekuur dr. Jansen"},
    "practitioner": {"id": "P-1", "display": "dr. Jansen", "role": "huisarts"},
    "booked_via": "portal",
    "patient": {"id": "pt-7f3a", "required": "required"},
}


def test_json_schema_files_match_the_models() -> None:
    assert drifted() == [], "run `.venv/bin/python -m schemas.generate` and commit schemas/json"
    for path in SCHEMA_DIR.glob("*.schema.json"):
        json.loads(path.read_text())


def test_event_field_names_are_the_contract() -> None:
    event = AppointmentEvent.model_validate(EVENT)
    assert set(EVENT) <= set(event.model_dump())


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"start": "2026-12-01T09:30:00"}, "start"),
        ({"end": "2026-12-01T09:00:00+01:00"}, "end must be after start"),
        ({"status": "maybe"}, "status"),
        ({"practice_id": ""}, "practice_id"),
        ({"patient": {"id": "123456782"}}, "BSN"),
        ({"sequence": "two"}, "sequence"),
    ],
)
def test_bad_events_are_refused_with_a_reason(change: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        AppointmentEvent.model_validate({**EVENT, **change})
    assert fragment in str(info.value)


def test_reminder_id_names_the_start_in_utc() -> None:
    start = datetime(2026, 12, 1, 8, 30, tzinfo=UTC)
    assert reminder_id_for("01999001", "A-1", start) == "01999001/A-1/2026-12-01T08:30:00Z"


def test_practice_with_reminders_on_needs_a_phone() -> None:
    with pytest.raises(ValidationError, match="phone is required"):
        PracticeConfig(practice_id="01999001", name="Praktijk", reminders_enabled=True)
    off = PracticeConfig(practice_id="01999001", name="Praktijk")
    assert off.reminders_enabled is False and off.timezone == "Europe/Amsterdam"


def test_unknown_config_fields_and_time_zones_are_refused() -> None:
    with pytest.raises(ValidationError, match="Extra inputs"):
        PracticeConfig.model_validate({"practice_id": "01999001", "name": "P", "colour": "red"})
    with pytest.raises(ValidationError, match="unknown time zone"):
        PracticeConfig(practice_id="01999001", name="P", timezone="Mars/Olympus")


def test_preferences_default_to_no_consent() -> None:
    prefs = PatientPreferences(
        practice_id="01999001", patient_id="pt-1", updated_at=datetime(2026, 1, 1, tzinfo=UTC)
    )
    assert prefs.reminders is False and prefs.language == "nl"


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REMINDERS_KAFKA__BOOTSTRAP_SERVERS", "kafka-1:9093")
    monkeypatch.setenv("REMINDERS_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("REMINDERS_KAFKA__SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("REMINDERS_KAFKA__SASL_USERNAME", "svc")
    monkeypatch.setenv("REMINDERS_KAFKA__SASL_PASSWORD", "s3cret")
    monkeypatch.setenv("REMINDERS_SMTP__PORT", "2525")
    monkeypatch.setenv("REMINDERS_METRICS__PORT", "9999")
    settings = Settings()
    assert settings.smtp.port == 2525 and settings.metrics.port == 9999
    assert "s3cret" not in repr(settings)  # secrets never print
    params = settings.kafka.aiokafka_params()
    assert params["security_protocol"] == "SASL_SSL"
    assert params["sasl_mechanism"] == "SCRAM-SHA-512"
    assert params["sasl_plain_password"] == "s3cret"
    assert params["ssl_context"] is not None
    fs = settings.kafka.faststream_params()
    assert type(fs["security"]).__name__ == "SASLScram512"
    assert fs["security"].use_ssl is True


def test_sasl_without_credentials_is_refused() -> None:
    with pytest.raises(ValidationError, match="needs sasl_mechanism"):
        KafkaSettings(security_protocol="SASL_SSL")


def test_plaintext_renders_without_security() -> None:
    kafka = KafkaSettings(bootstrap_servers="127.0.0.1:9092")
    assert kafka.faststream_params()["security"] is None
    assert "ssl_context" not in kafka.aiokafka_params()


def test_topic_names_are_the_contract() -> None:
    names = {spec.name for spec in Topics().specs()}
    assert {
        "his.appointments.v1",
        "appointments.v1",
        "practice.config.v1",
        "patient.preferences.v1",
        "reminders.due.v1",
        "reminders.fired.v1",
        "notifications.outcomes.v1",
        "his.appointments.v1.dlq.v1",
    } <= names
    compacted = {s.name for s in Topics().specs() if s.config["cleanup.policy"] == "compact"}
    assert compacted == {
        "appointments.v1",
        "practice.config.v1",
        "patient.preferences.v1",
        "reminders.fired.v1",
    }
