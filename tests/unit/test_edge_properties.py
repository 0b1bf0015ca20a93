"""Issue 12, one property per boundary: whatever the edge accepts, every later stage
processes without an exception.

The stages: parsing (native and FHIR), classification, the Appointment state, the
scheduler's reader, due time and planning (and firing), the ReminderDue, the notifier's
decision, rendering, and composing the MIME message and the push payload. What the edge
refuses must be refused with a DLQ reason code (or, for a config, ConfigRejected), never
with another exception. ``REMINDERS_HYPOTHESIS_EXAMPLES`` sets the number of examples.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from hypothesis import event, given
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas.models import (
    INSTANT_RANGE,
    Appointment,
    AppointmentEvent,
    MeetingRules,
    PatientPreferences,
    PracticeConfig,
    ReminderDue,
    unsafe_text_problem,
)
from services.booking_events.normalize import appointment_json
from services.common.followup import FollowupAppointment
from services.common.practice_config import ConfigRejected, validate_practice_config
from services.domain.classify import classify
from services.domain.codec import DecodeError, decode
from services.domain.errors import PermanentSendError
from services.domain.his_events import REASONS, parse_event, problems
from services.domain.render import render_reminder, sample_appointment
from services.insights.projection import appointment_row
from services.notifier.decide import decide
from services.notifier.email import compose_email
from services.notifier.push import MAX_PAYLOAD_BYTES, push_payload
from services.notifier.samples import sample_config
from services.reminder_scheduler.due_time import Policy, compute_due
from services.reminder_scheduler.planner import Planner
from services.reminder_scheduler.records import fired_values, from_ms, read_appointment, to_ms
from services.reminder_scheduler.timers import PartitionTimers
from tests.support.wide import (
    config_documents,
    edge_settings,
    fhir_documents,
    native_documents,
    preference_documents,
)

RECEIVED = datetime(2026, 11, 20, 13, 0, tzinfo=UTC)
RULES = MeetingRules(agenda_ids=["AG-OVERLEG"], keywords=["overleg"])
_POLICIES = [
    Policy.from_config(None),
    Policy.from_config(
        PracticeConfig.model_validate(
            {
                "practice_id": "01234567",
                "name": "P",
                "timezone": "Pacific/Kiritimati",
                "send": {"policy": "day_before_at", "time": "23:59"},
                "quiet_hours": {"start": "20:00", "end": "09:00"},
                "min_lead_minutes": 1440,
            }
        )
    ),
    Policy.from_config(
        PracticeConfig.model_validate(
            {
                "practice_id": "01234567",
                "name": "P",
                "timezone": "America/Curacao",
                "send": {"policy": "hours_before", "hours": 168},
                "quiet_hours": None,
                "min_lead_minutes": 0,
            }
        )
    ),
]
_SENDER_DOMAIN = "praktijk.example.org"


def _encode(doc: Any, ascii_only: bool) -> bytes:
    return json.dumps(doc, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


def _send_all(config: PracticeConfig, appointment: Appointment, to: str) -> None:
    """Render and compose in both languages, as the notifier would."""
    for language in ("nl", "en"):
        rendered = render_reminder(config, appointment, language)
        sender = config.sender
        wire = compose_email(
            reminder_id=appointment.reminder_id,
            from_address=str(sender.email) if sender else "a@praktijk.example.org",
            from_name=sender.name if sender else config.name,
            to=to,
            subject=rendered.email.subject,
            text=rendered.email.text,
            html=rendered.email.html,
            unsubscribe_url=config.preferences_url,
            message_id_domain=_SENDER_DOMAIN,
            date=RECEIVED,
        ).data
        assert wire.isascii()  # 7-bit on the wire, whatever the input
        payload = push_payload(rendered.push.title, rendered.push.body, language)
        assert len(payload) <= MAX_PAYLOAD_BYTES
        assert rendered.push.body.split("\n")[-1].startswith(("Heeft u", "Urgent"))


def _fits(table: Any, row: dict[str, Any]) -> None:
    """The row goes into the projection's table on PostgreSQL too: within each column's
    length and integer width, no NUL (what PostgreSQL refuses and SQLite stores)."""
    for column in table.columns:
        value = row[column.name]
        if value is None:
            assert column.nullable, column.name
        elif isinstance(column.type, sa.String):
            assert len(value) <= (column.type.length or len(value)), column.name
            assert "\x00" not in value, column.name
        elif isinstance(column.type, sa.BigInteger):
            assert -(2**63) <= value < 2**63, column.name
        elif isinstance(column.type, sa.Integer):
            assert -(2**31) <= value < 2**31, column.name


def _texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [t for item in value.values() for t in _texts(item)]
    if isinstance(value, list):
        return [t for item in value for t in _texts(item)]
    return []


def _downstream(accepted: AppointmentEvent) -> None:
    """Every later stage, for an event the edge accepted."""
    meeting = classify(accepted, RULES)
    state = appointment_json(accepted, None, meeting)
    appointment = Appointment.model_validate_json(state.value)
    # Every text of the state is one plain line: it is stored (insights' PostgreSQL refuses
    # NUL), logged, compared and shown.
    for text in _texts(appointment.model_dump(mode="json")):
        assert unsafe_text_problem(text) is None, text
    reader = read_appointment(state.value)
    _fits(FollowupAppointment.__table__, appointment_row(state.value))
    key = appointment.key.encode()
    for policy in _POLICIES:
        compute_due(appointment.start, appointment.booked_at, policy)
        compute_due(appointment.start, appointment.booked_at, policy, now=appointment.updated_at)
        planner = Planner(PartitionTimers(), lambda _, p=policy: p)
        planner.appointment(key, reader, RECEIVED)
        for timer in planner.timers.pop_due(to_ms(INSTANT_RANGE[1]), 10):
            now = from_ms(timer.due_ms)
            fire = planner.at_fire(timer, now)
            if fire is None:
                continue
            due_bytes, _ = fired_values(
                practice_id=appointment.practice_id,
                appointment_id=appointment.appointment_id,
                patient_id=appointment.patient.id,
                start=appointment.start,
                end=appointment.end,
                sequence=appointment.sequence,
                due_at=fire.due_at,
                fired_at=now,
                reason=fire.reason,
            )
            due = decode(ReminderDue, due_bytes)
            config = sample_config(practice_id=appointment.practice_id)
            decide(due, appointment, config, None, now=now, already_sent=False)
    _send_all(sample_config(practice_id=appointment.practice_id), appointment, "p@example.org")


def _through_the_edge(value: bytes, *, fhir: bool) -> None:
    event_, found = problems(value, fhir=fhir, received_at=RECEIVED)
    try:
        parsed: AppointmentEvent | None = parse_event(value, fhir=fhir, received_at=RECEIVED)
    except DecodeError as exc:
        assert exc.reason in REASONS
        assert event_ is None and found and found[0].reason == exc.reason
        assert all(p.reason in REASONS for p in found)
        event(f"refused: {exc.reason}")
        return
    assert found == [] and event_ == parsed
    assert parsed is not None
    event("accepted")
    _downstream(parsed)


@edge_settings
@given(doc=native_documents(), ascii_only=st.booleans())
def test_whatever_the_native_edge_accepts_every_stage_processes(doc: Any, ascii_only: bool) -> None:
    _through_the_edge(_encode(doc, ascii_only), fhir=False)


@edge_settings
@given(doc=fhir_documents(), ascii_only=st.booleans())
def test_whatever_the_fhir_edge_accepts_every_stage_processes(doc: Any, ascii_only: bool) -> None:
    _through_the_edge(_encode(doc, ascii_only), fhir=True)


_STARTS = [
    datetime(2000, 1, 3, 0, 5, tzinfo=UTC),
    datetime(2026, 3, 29, 1, 30, tzinfo=UTC),
    datetime(2026, 10, 25, 0, 30, tzinfo=UTC),
    datetime(2099, 12, 30, 23, 0, tzinfo=UTC),
]


@edge_settings
@given(doc=config_documents(), as_json=st.booleans())
def test_whatever_the_config_edge_accepts_every_stage_processes(doc: Any, as_json: bool) -> None:
    data: Any = json.dumps(doc).encode("utf-8", "surrogatepass") if as_json else doc
    try:
        config = validate_practice_config(data)
    except ConfigRejected as exc:
        assert exc.reason and "\n" not in exc.reason
        event("refused")
        return
    event("accepted")
    policy = Policy.from_config(config)
    for start in _STARTS:
        compute_due(start, start - timedelta(days=30), policy)
        compute_due(start, start - timedelta(hours=1), policy, now=start - timedelta(minutes=5))
    for code in [*list(config.appointment_types)[:3], "NOT-LISTED"]:
        appointment = sample_appointment(config, code, RECEIVED)
        _send_all(config, appointment, "p@example.org")


@edge_settings
@given(data=st.data())
def test_whatever_the_preferences_edge_accepts_every_stage_processes(data: st.DataObject) -> None:
    config = sample_config(practice_id="01234567")
    appointment = sample_appointment(config, "C10", RECEIVED)
    doc = data.draw(preference_documents(config.practice_id, appointment.patient.id))
    try:
        prefs = PatientPreferences.model_validate_json(json.dumps(doc))
    except ValidationError:
        event("refused")
        return
    event("accepted")
    due = ReminderDue(
        reminder_id=appointment.reminder_id,
        practice_id=appointment.practice_id,
        appointment_id=appointment.appointment_id,
        patient_id=appointment.patient.id,
        start=appointment.start,
        sequence=0,
        due_at=appointment.start - timedelta(hours=24),
        fired_at=appointment.start - timedelta(hours=24),
    )
    decision = decide(due, appointment, config, prefs, now=due.fired_at, already_sent=False)
    if decision.send and prefs.email is not None:
        try:
            _send_all(config, appointment, str(prefs.email))
        except PermanentSendError as exc:
            # A mailbox the mail system cannot take ends as a failed outcome with this
            # reason (the notifier's designed path), never as an exception.
            assert exc.reason == "invalid_address"
