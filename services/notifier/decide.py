"""Whether a due reminder is sent: the one place where that is decided.

A pure function of the due reminder, the latest appointment state, the practice's
config, the patient's preferences, the clock and the ledger. Every ReminderDue ends in
exactly one Decision, and so in exactly one Outcome: a suppression always has a reason.

The order of the checks is part of the rule, first match wins:

1. ``duplicate``: the ledger already holds a sent outcome for this reminder id. Checked
   first because nothing else may ever cause a second message for one appointment time.
2. ``reminders_disabled``: the practice decides (also for reminders set before it
   switched off). A missing config means the defaults, which have reminders off.
3. ``unknown_appointment``: no current state to check the rest against.
4. ``patient_discussion``: a meeting about the patient, by booking_events' flag or by the
   classifier run again here with the practice's current rules (the second line of
   defence). Before the status and timing checks so that a meeting is always reported
   as a meeting, never under a milder reason.
5. ``cancelled`` / ``not_booked``: the state at send time decides.
6. ``moved``: the appointment no longer starts when this reminder said.
7. ``not_remindable_type``: the practice's allow-list of types.
8. ``booked_recently`` / ``too_late``: the scheduler found no good moment.
9. ``too_late``: less than ``min_lead_minutes`` ahead now.
10. ``no_consent``: no preference record, reminders off, or a record of someone else.
11. ``no_channel``: consent, but nothing both the practice and the patient can use.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from schemas.models import (
    Appointment,
    Channel,
    MeetingInfo,
    OutcomeReason,
    PatientPreferences,
    PracticeConfig,
    ReminderDue,
)
from services.domain.classify import classify

__all__ = ["ALL_CHANNELS", "CANCELLED_STATUSES", "Decision", "decide", "usable_channels"]

ALL_CHANNELS: frozenset[Channel] = frozenset({"email", "push"})
CANCELLED_STATUSES = frozenset({"cancelled", "noshow", "entered-in-error"})
# Only a confirmed appointment is reminded; proposed, pending and waitlist are not (yet),
# and arrived/checked-in/fulfilled have nothing left to remind of.
REMINDABLE_STATUS = "booked"
_CHANNEL_ORDER: tuple[Channel, ...] = ("email", "push")


@dataclass(frozen=True)
class Decision:
    status: Literal["send", "suppressed"]
    reason: OutcomeReason | None = None
    channels: tuple[Channel, ...] = ()
    # Short, non-personal explanation for the practice (e.g. which meeting rule matched).
    detail: str | None = None

    @property
    def send(self) -> bool:
        return self.status == "send"


def _suppress(reason: OutcomeReason, detail: str | None = None) -> Decision:
    return Decision(status="suppressed", reason=reason, detail=detail)


def _meeting(appointment: Appointment, config: PracticeConfig) -> MeetingInfo | None:
    """booking_events' flag, or the classifier again with the practice's current rules."""
    if appointment.meeting.is_meeting:
        return appointment.meeting
    again = classify(appointment, config.meeting_rules)
    return again if again.is_meeting else None


def usable_channels(
    config: PracticeConfig,
    prefs: PatientPreferences,
    service_channels: frozenset[Channel] = ALL_CHANNELS,
) -> tuple[Channel, ...]:
    """Channels the practice offers, the patient can be reached on and this service runs."""
    available: set[Channel] = set()
    if prefs.email:
        available.add("email")
    if prefs.push_subscriptions:
        available.add("push")
    if "email" in available and config.sender is None:
        available.discard("email")  # a config with e-mail off may lack a sender
    wanted = set(config.channels) & available & service_channels
    return tuple(c for c in _CHANNEL_ORDER if c in wanted)


def decide(
    due: ReminderDue,
    appointment: Appointment | None,
    config: PracticeConfig | None,
    prefs: PatientPreferences | None,
    *,
    now: datetime,
    already_sent: bool,
    service_channels: frozenset[Channel] = ALL_CHANNELS,
) -> Decision:
    """Send or suppress, with the reason (see the module docstring for the order)."""
    if already_sent:
        return _suppress("duplicate", "a reminder for this appointment time was sent before")
    if config is None:
        return _suppress("reminders_disabled", "no config for the practice: defaults, off")
    if not config.reminders_enabled:
        return _suppress("reminders_disabled")
    if appointment is None:
        return _suppress("unknown_appointment")
    meeting = _meeting(appointment, config)
    if meeting is not None:
        return _suppress("patient_discussion", f"meeting rule {meeting.rule}")
    if appointment.status in CANCELLED_STATUSES:
        return _suppress("cancelled", f"status {appointment.status}")
    if appointment.status != REMINDABLE_STATUS:
        return _suppress("not_booked", f"status {appointment.status}")
    if appointment.start != due.start:
        return _suppress("moved")
    remind_only = config.remind_only_types
    if remind_only is not None and appointment.appointment_type.code not in remind_only:
        return _suppress("not_remindable_type")
    if due.reason is not None:
        return _suppress(due.reason)
    if appointment.start - now < timedelta(minutes=config.min_lead_minutes):
        return _suppress("too_late", f"less than {config.min_lead_minutes} minutes ahead")
    if (
        prefs is None
        or not prefs.reminders
        or prefs.practice_id != appointment.practice_id
        or prefs.patient_id != appointment.patient.id
    ):
        return _suppress("no_consent")
    channels = usable_channels(config, prefs, service_channels)
    if not channels:
        return _suppress("no_channel")
    return Decision(status="send", channels=channels)
