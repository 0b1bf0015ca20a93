"""Example records around the notifier: for its tests, its benchmark and previews.

Each builder takes keyword overrides for any field of the record, so a test states only
what it is about ("a meeting", "no consent") and gets a valid record for the rest.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from schemas.models import (
    Appointment,
    PatientPreferences,
    PracticeConfig,
    ReminderDue,
    reminder_id_for,
)

__all__ = ["sample_appointment", "sample_config", "sample_due", "sample_preferences"]

PHONE = "020-1234567"


def sample_config(practice_id: str = "01234567", **overrides: Any) -> PracticeConfig:
    """A practice with reminders on, both channels, one appointment type."""
    fields: dict[str, Any] = {
        "practice_id": practice_id,
        "name": "Huisartsenpraktijk De Linde",
        "phone": PHONE,
        "reminders_enabled": True,
        "timezone": "Europe/Amsterdam",
        "min_lead_minutes": 60,
        "channels": ["email", "push"],
        "sender": {"email": "noreply@delinde.example.org", "name": "Praktijk De Linde"},
        "preferences_url": "https://portaal.example.org/voorkeuren",
        "appointment_types": {
            "C10": {
                "label": "Consult 10 minuten",
                "with_whom": "de huisarts",
                "instructions": "Neem uw medicijnlijst mee.",
            }
        },
        "version": 1,
    }
    fields.update(overrides)
    return PracticeConfig.model_validate(fields)


def sample_appointment(
    practice_id: str = "01234567",
    appointment_id: str = "a-1",
    *,
    start: datetime,
    patient_id: str = "p-1",
    **overrides: Any,
) -> Appointment:
    """A booked 10-minute consult that is not a meeting."""
    fields: dict[str, Any] = {
        "source_system": "medicom",
        "practice_id": practice_id,
        "appointment_id": appointment_id,
        "sequence": 1,
        "status": "booked",
        "start": start,
        "end": start + timedelta(minutes=10),
        "appointment_type": {"code": "C10", "display": "Consult"},
        "agenda": {"id": "ag-1", "display": "Spreekuur dr. Jansen"},
        "practitioner": {"id": "pr-1", "display": "dr. Jansen", "role": "huisarts"},
        "location": {"display": "Lindelaan 1, Utrecht"},
        "booked_via": "portal",
        "patient": {"id": patient_id, "required": "required"},
        "booked_at": start - timedelta(days=7),
        "updated_at": start - timedelta(days=7),
        "meeting": {"is_meeting": False},
    }
    fields.update(overrides)
    return Appointment.model_validate(fields)


def sample_preferences(
    practice_id: str = "01234567",
    patient_id: str = "p-1",
    *,
    updated_at: datetime,
    **overrides: Any,
) -> PatientPreferences:
    """A consenting patient reachable by e-mail (no push subscription)."""
    fields: dict[str, Any] = {
        "practice_id": practice_id,
        "patient_id": patient_id,
        "reminders": True,
        "email": f"{patient_id}@patient.example.org",
        "push_subscriptions": [],
        "language": "nl",
        "updated_at": updated_at,
    }
    fields.update(overrides)
    return PatientPreferences.model_validate(fields)


def sample_due(appointment: Appointment, *, fired_at: datetime, **overrides: Any) -> ReminderDue:
    """The ReminderDue the scheduler would emit for this appointment now."""
    fields: dict[str, Any] = {
        "reminder_id": reminder_id_for(
            appointment.practice_id, appointment.appointment_id, appointment.start
        ),
        "practice_id": appointment.practice_id,
        "appointment_id": appointment.appointment_id,
        "patient_id": appointment.patient.id,
        "start": appointment.start,
        "sequence": appointment.sequence,
        "due_at": fired_at,
        "fired_at": fired_at,
        "reason": None,
    }
    fields.update(overrides)
    return ReminderDue.model_validate(fields)
