"""decide(): every suppression reason, the order of the checks, and the safety properties."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from schemas.models import (
    APPOINTMENT_STATUSES,
    Appointment,
    PatientPreferences,
    PracticeConfig,
    ReminderDue,
)
from services.domain.classify import classify
from services.notifier.decide import Decision, decide
from services.notifier.samples import (
    sample_appointment,
    sample_config,
    sample_due,
    sample_preferences,
)

NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
START = NOW + timedelta(hours=24)
SUB = {
    "endpoint": "https://fcm.googleapis.com/fcm/send/abc",
    "keys": {"p256dh": "B" + "A" * 86, "auth": "A" * 22},
}


def _appointment(**overrides: Any) -> Appointment:
    return sample_appointment(start=overrides.pop("start", START), **overrides)


def _run(
    *,
    due: ReminderDue | None = None,
    appointment: Appointment | str | None = "default",
    config: PracticeConfig | str | None = "default",
    prefs: PatientPreferences | str | None = "default",
    now: datetime = NOW,
    already_sent: bool = False,
) -> Decision:
    appt = _appointment() if appointment == "default" else appointment
    assert not isinstance(appt, str)
    cfg = sample_config() if config == "default" else config
    assert not isinstance(cfg, str)
    pref = sample_preferences(updated_at=NOW) if prefs == "default" else prefs
    assert not isinstance(pref, str)
    if due is None:
        due = sample_due(appt or _appointment(), fired_at=now)
    return decide(due, appt, cfg, pref, now=now, already_sent=already_sent)


def test_a_consenting_patient_is_reminded_by_email() -> None:
    decision = _run()
    assert decision == Decision(status="send", channels=("email",))


def test_both_channels_when_both_are_there() -> None:
    prefs = sample_preferences(updated_at=NOW, push_subscriptions=[SUB])
    assert _run(prefs=prefs).channels == ("email", "push")


def test_push_only_patient() -> None:
    prefs = sample_preferences(updated_at=NOW, email=None, push_subscriptions=[SUB])
    assert _run(prefs=prefs).channels == ("push",)


def test_channels_the_practice_does_not_offer_are_dropped() -> None:
    config = sample_config(channels=["push"])
    prefs = sample_preferences(updated_at=NOW, push_subscriptions=[SUB])
    assert _run(config=config, prefs=prefs).channels == ("push",)


def test_a_channel_the_service_does_not_run_is_dropped() -> None:
    prefs = sample_preferences(updated_at=NOW, email=None, push_subscriptions=[SUB])
    appt = _appointment()
    decision = decide(
        sample_due(appt, fired_at=NOW),
        appt,
        sample_config(),
        prefs,
        now=NOW,
        already_sent=False,
        service_channels=frozenset({"email"}),
    )
    assert decision.reason == "no_channel"


def _reason(decision: Decision) -> str | None:
    assert decision.status == "suppressed"
    assert decision.channels == ()
    return decision.reason


def test_duplicate() -> None:
    assert _reason(_run(already_sent=True)) == "duplicate"


def test_reminders_disabled() -> None:
    assert _reason(_run(config=sample_config(reminders_enabled=False))) == "reminders_disabled"


def test_no_config_means_defaults_which_are_off() -> None:
    assert _reason(_run(config=None)) == "reminders_disabled"


def test_unknown_appointment() -> None:
    due = sample_due(_appointment(), fired_at=NOW)
    assert _reason(_run(due=due, appointment=None)) == "unknown_appointment"


@pytest.mark.parametrize(
    "overrides",
    [
        {"meeting": {"is_meeting": True, "rule": "kind", "matched": "meeting"}},
        {"kind": "meeting"},
        {"patient": {"id": "p-1", "required": "information-only"}},
        {"appointment_type": {"code": "MDO", "display": "MDO ouderen"}},
        {"agenda": {"id": "ag-9", "display": "Teamoverleg"}},
        {"appointment_type": {"code": "X1", "display": "Patiëntenbespreking"}},
    ],
    ids=["flag", "kind", "information-only", "acronym", "compound", "accent"],
)
def test_meeting_by_any_rule(overrides: dict[str, Any]) -> None:
    assert _reason(_run(appointment=_appointment(**overrides))) == "patient_discussion"


def test_meeting_by_the_practices_current_rules() -> None:
    # booking_events classified it before the practice added the agenda to its rules.
    appointment = _appointment(agenda={"id": "ag-7", "display": "Dinsdagmiddag"})
    config = sample_config(meeting_rules={"agenda_ids": ["ag-7"]})
    assert _reason(_run(appointment=appointment, config=config)) == "patient_discussion"
    config = sample_config(meeting_rules={"keywords": ["dinsdagmiddag"]})
    assert _reason(_run(appointment=appointment, config=config)) == "patient_discussion"


@pytest.mark.parametrize("status", ["cancelled", "noshow", "entered-in-error"])
def test_cancelled(status: str) -> None:
    assert _reason(_run(appointment=_appointment(status=status))) == "cancelled"


@pytest.mark.parametrize("status", ["proposed", "pending", "waitlist", "arrived", "fulfilled"])
def test_not_booked(status: str) -> None:
    assert _reason(_run(appointment=_appointment(status=status))) == "not_booked"


def test_moved_since_the_reminder_fired() -> None:
    due = sample_due(_appointment(), fired_at=NOW)
    moved = _appointment(start=START + timedelta(hours=2), sequence=2)
    assert _reason(_run(due=due, appointment=moved)) == "moved"


def test_not_remindable_type() -> None:
    config = sample_config(remind_only_types=["GRIEP"])
    assert _reason(_run(config=config)) == "not_remindable_type"
    assert _run(config=sample_config(remind_only_types=["C10"])).send


@pytest.mark.parametrize("reason", ["booked_recently", "too_late"])
def test_the_schedulers_reason_is_kept(reason: str) -> None:
    due = sample_due(_appointment(), fired_at=NOW, reason=reason)
    assert _reason(_run(due=due)) == reason


def test_too_late_less_than_min_lead_ahead() -> None:
    near = NOW + timedelta(minutes=59)
    appointment = _appointment(start=near)
    assert _reason(_run(appointment=appointment)) == "too_late"
    ok = _appointment(start=NOW + timedelta(minutes=60))
    assert _run(appointment=ok).send


def test_no_consent() -> None:
    assert _reason(_run(prefs=None)) == "no_consent"
    assert _reason(_run(prefs=sample_preferences(updated_at=NOW, reminders=False))) == "no_consent"


def test_preferences_of_another_patient_are_no_consent() -> None:
    other = sample_preferences(patient_id="p-2", updated_at=NOW)
    assert _reason(_run(prefs=other)) == "no_consent"


def test_no_channel() -> None:
    prefs = sample_preferences(updated_at=NOW, email=None)
    assert _reason(_run(prefs=prefs)) == "no_channel"
    # The patient has only push, the practice only e-mail.
    prefs = sample_preferences(updated_at=NOW, email=None, push_subscriptions=[SUB])
    assert _reason(_run(config=sample_config(channels=["email"]), prefs=prefs)) == "no_channel"


def test_order_duplicate_before_everything() -> None:
    assert _reason(_run(already_sent=True, config=None, prefs=None)) == "duplicate"


def test_order_meeting_before_cancel_move_and_timing() -> None:
    # A cancelled, moved meeting, too near, of a type not on the list: reported as a meeting.
    due = sample_due(_appointment(), fired_at=NOW, reason="too_late")
    meeting = _appointment(kind="meeting", status="cancelled", start=NOW + timedelta(minutes=5))
    config = sample_config(remind_only_types=["GRIEP"])
    assert _reason(_run(due=due, appointment=meeting, config=config)) == "patient_discussion"


def test_order_practice_switch_before_appointment_state() -> None:
    assert _reason(_run(config=sample_config(reminders_enabled=False), appointment=None)) == (
        "reminders_disabled"
    )


# --------------------------------------------------------------------------- properties

_plain = st.sampled_from(["Consult", "griepprik", "Spreekuur", "x"])
_texts = _plain | _plain | st.sampled_from(["Teamoverleg", "MDO", "PaTz", "FTO-overleg"])


def _mostly(value: Any, *others: Any) -> st.SearchStrategy[Any]:
    """`value` about three times in four, else one of `others`."""
    return st.sampled_from([value] * (3 * len(others)) + list(others))


@st.composite
def _inputs(draw: st.DrawFn) -> tuple[Any, ...]:
    start = NOW + timedelta(minutes=draw(st.integers(-120, 3000)))
    appointment = _appointment(
        start=start,
        status=draw(_mostly("booked", *APPOINTMENT_STATUSES)),
        kind=draw(_mostly(None, "consult", "meeting")),
        patient={
            "id": "p-1",
            "required": draw(_mostly("required", "optional", "information-only")),
        },
        appointment_type={"code": draw(_mostly("C10", "MDO", "X")), "display": draw(_texts)},
        agenda={"id": draw(st.sampled_from(["ag-1", "ag-2"])), "display": draw(_texts)},
        meeting={"is_meeting": draw(_mostly(False, True))},
    )
    config = sample_config(
        reminders_enabled=draw(_mostly(True, False)),
        channels=draw(st.sampled_from([["email"], ["push"], ["email", "push"]])),
        remind_only_types=draw(_mostly(None, ["C10"], ["X", "MDO"], [])),
        meeting_rules={
            "agenda_ids": draw(st.lists(st.sampled_from(["ag-1", "ag-2"]), max_size=1)),
            "keywords": draw(st.lists(st.sampled_from(["spreekuur", "consult"]), max_size=1)),
        },
    )
    prefs = sample_preferences(
        patient_id=draw(_mostly("p-1", "p-2")),
        updated_at=NOW,
        reminders=draw(_mostly(True, False)),
        email="a@b.example.org" if draw(st.booleans()) else None,
        push_subscriptions=[SUB] if draw(st.booleans()) else [],
    )
    moved = draw(_mostly(False, True))
    due = sample_due(
        appointment,
        fired_at=NOW,
        start=start + timedelta(hours=1) if moved else start,
        reason=draw(_mostly(None, "booked_recently", "too_late")),
    )
    if moved:
        due = due.model_copy(update={"reminder_id": due.reminder_id.rsplit("/", 1)[0] + "/moved"})
    return (
        due,
        appointment if draw(_mostly(True, False)) else None,
        config if draw(_mostly(True, False)) else None,
        prefs if draw(_mostly(True, False)) else None,
        draw(_mostly(False, True)),
    )


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_inputs())
def test_safety_rules_hold_for_any_input(inputs: tuple[Any, ...]) -> None:
    due, appointment, config, prefs, already_sent = inputs
    decision = decide(due, appointment, config, prefs, now=NOW, already_sent=already_sent)
    event(f"decision: {decision.reason or 'send'}")
    # Exactly one reason for a suppression, none for a send.
    assert (decision.reason is None) == decision.send
    if not decision.send:
        return
    assert not already_sent
    assert config is not None and config.reminders_enabled
    assert appointment is not None
    assert not appointment.meeting.is_meeting
    assert appointment.kind != "meeting"
    assert appointment.patient.required != "information-only"
    assert not classify(appointment, config.meeting_rules).is_meeting
    assert appointment.status == "booked"
    assert appointment.start == due.start
    assert appointment.start - NOW >= timedelta(minutes=config.min_lead_minutes)
    assert prefs is not None and prefs.reminders and prefs.patient_id == appointment.patient.id
    assert decision.channels
    assert set(decision.channels) <= set(config.channels)
    if config.remind_only_types is not None:
        assert appointment.appointment_type.code in config.remind_only_types


_HAZARDS: dict[str, dict[str, Any]] = {
    "meeting flag": {"appointment": {"meeting": {"is_meeting": True, "rule": "kind"}}},
    "kind meeting": {"appointment": {"kind": "meeting"}},
    "information-only": {"appointment": {"patient": {"id": "p-1", "required": "information-only"}}},
    "keyword in type": {"appointment": {"appointment_type": {"code": "C10", "display": "PaTz"}}},
    "keyword in agenda": {"appointment": {"agenda": {"id": "ag-1", "display": "HAGRO-overleg"}}},
    "agenda rule": {"config": {"meeting_rules": {"agenda_ids": ["ag-1"]}}},
    "practice off": {"config": {"reminders_enabled": False}},
    "no config": {"config": None},
    "no preferences": {"prefs": None},
    "consent off": {"prefs": {"reminders": False}},
}


@settings(max_examples=200, deadline=None)
@given(
    st.sets(st.sampled_from(sorted(_HAZARDS))),
    st.integers(60, 3000),
    st.sampled_from([["email"], ["push"], ["email", "push"]]),
    st.booleans(),
)
def test_any_meeting_non_consent_or_switch_off_never_sends(
    hazards: set[str], minutes_ahead: int, channels: list[str], push: bool
) -> None:
    """From a reminder that is sent, switching on any set of hazards suppresses it."""
    parts: dict[str, dict[str, Any] | None] = {"appointment": {}, "config": {}, "prefs": {}}
    for name in hazards:
        for part, change in _HAZARDS[name].items():
            current = parts[part]
            parts[part] = None if change is None or current is None else {**current, **change}
    start = NOW + timedelta(minutes=minutes_ahead)
    base = _appointment(start=start)
    appointment = _appointment(start=start, **(parts["appointment"] or {}))
    config = (
        None if parts["config"] is None else sample_config(channels=channels, **parts["config"])
    )
    prefs_fields = {"push_subscriptions": [SUB]} if push else {}
    prefs = (
        None
        if parts["prefs"] is None
        else sample_preferences(updated_at=NOW, **{**prefs_fields, **parts["prefs"]})
    )
    decision = decide(
        sample_due(base, fired_at=NOW), appointment, config, prefs, now=NOW, already_sent=False
    )
    if hazards:
        assert not decision.send, (hazards, decision)
    else:
        assert decision.send == ("email" in channels or push), decision
