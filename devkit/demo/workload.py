"""Synthetic practices, patients and agendas, and what should arrive: no real data anywhere.

The generator produces practice configs, patient preferences and HIS events (bookings,
reschedules, cancellations, meetings linked to patients, duplicates and out-of-order
retries), and computes, independently of the services' own rules, which reminders must
reach which channel. The demo and the fault suite compare the sinks with that.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from schemas import (
    AppointmentEvent,
    PatientPreferences,
    PracticeConfig,
    PushSubscriptionRecord,
    reminder_id_for,
)

__all__ = ["Expected", "Workload", "generate", "practice_id_for"]

# Appointment types a practice writes texts for (the step plan's examples).
TYPES: dict[str, dict[str, str]] = {
    "C10": {
        "label": "Consult 10 minuten (1 klacht)",
        "with_whom": "de huisarts",
        "instructions": "Neem uw medicijnlijst mee.",
    },
    "C20": {
        "label": "Dubbel consult 20 minuten",
        "with_whom": "de huisarts",
        "instructions": "Voor meerdere vragen of een uitgebreid gesprek.",
    },
    "OOR": {
        "label": "Oren uitspuiten",
        "with_whom": "de assistent",
        "instructions": "Druppel uw oren drie dagen vooraf met olijfolie.",
    },
    "BD": {
        "label": "Bloeddruk meten",
        "with_whom": "de praktijkondersteuner (POH)",
        "instructions": "",
    },
}
# Internal meetings linked to patients: never reminded.
MEETINGS = [
    # (type code, type display, agenda id, agenda display, how it is recognised)
    ("MDO", "MDO ouderenzorg", "AG-MDO", "Multidisciplinair overleg", "type code rule"),
    ("OVL", "Overleg", "AG-PATZ", "PaTz-bijeenkomst", "keyword"),
    ("C10", "Consult 10 min", "AG-TEAM", "Teamoverleg huisartsen", "keyword in compound"),
    ("C20", "Consult", "AG-DR", "Spreekuur", "information-only patient"),
]
FIRST_NAMES = ["Anouk", "Bram", "Daan", "Emma", "Fenna", "Jesse", "Lotte", "Milan", "Noor", "Sem"]
LAST_NAMES = ["de Vries", "Jansen", "Bakker", "Visser", "Smit", "Meijer", "de Boer", "Mulder"]


def practice_id_for(index: int) -> str:
    """AGB-like 8-digit practice codes in a range no real practice uses here."""
    return f"0199{index:04d}"


@dataclass
class Expected:
    """What must happen to each reminder, computed from the inputs alone."""

    # reminder id -> channels that must receive it
    deliveries: dict[str, set[str]] = field(default_factory=dict)
    # reminder id -> why nothing is sent (for the demo summary)
    suppressed: dict[str, str] = field(default_factory=dict)
    meetings: set[str] = field(default_factory=set)

    def count(self, channel: str) -> int:
        return sum(1 for chans in self.deliveries.values() if channel in chans)


@dataclass
class Workload:
    practices: list[PracticeConfig]
    preferences: list[PatientPreferences]
    events: list[AppointmentEvent]
    expected: Expected
    # Synthetic patient names: they appear in no record, and the log scan checks so.
    patient_names: dict[str, str]
    emails: list[str]
    # What the HIS sends after the appointment times: fulfilled or noshow (fewer no-shows
    # among reminded patients), and some cancellations by patients after their reminder.
    final_events: list[AppointmentEvent] = field(default_factory=list)


PushFactory = Callable[[], PushSubscriptionRecord]


def _practice(
    index: int, enabled: bool, preferences_url: str, sender_domain: str
) -> PracticeConfig:
    pid = practice_id_for(index)
    return PracticeConfig.model_validate(
        {
            "practice_id": pid,
            "name": f"Huisartsenpraktijk De Linde {index}",
            "phone": f"020-{1234567 + index:07d}",
            "reminders_enabled": enabled,
            "timezone": "Europe/Amsterdam",
            "send": {"policy": "hours_before", "hours": 24},
            # No quiet hours, so the demo's reminders fall due when it says, day or night.
            "quiet_hours": None,
            "min_lead_minutes": 60,
            "skip_if_booked_within_hours": 12,
            "channels": ["email", "push"],
            "sender": {"email": f"praktijk{index}@{sender_domain}", "name": f"De Linde {index}"},
            "preferences_url": preferences_url,
            "appointment_types": TYPES,
            "meeting_rules": {
                "agenda_ids": [],
                "appointment_type_codes": ["MDO"],
                "keywords": ["bijeenkomst"],
            },
            "version": 1,
        }
    )


def generate(
    *,
    now: datetime,
    practices: int = 3,
    patients: int = 20,
    appointments: int = 30,
    seed: int = 7,
    lead: tuple[float, float] = (20.0, 50.0),
    disabled_practices: int = 1,
    push_factory: PushFactory | None = None,
    preferences_url: str = "https://portaal.example.org/voorkeuren",
    email_domain: str = "example.org",
    messy: bool = True,
) -> Workload:
    """A morning of bookings whose reminders fall due ``lead`` seconds from ``now``.

    Appointments start 24 h plus ``lead`` from now (the practices remind 24 h before).
    ``messy`` adds duplicate and out-of-order HIS events, which must change nothing.
    """
    rng = random.Random(seed)
    configs = [
        _practice(
            i,
            enabled=i >= disabled_practices,
            preferences_url=preferences_url,
            sender_domain=email_domain,
        )
        for i in range(practices)
    ]
    prefs: list[PatientPreferences] = []
    consent: dict[tuple[str, str], set[str]] = {}
    names: dict[str, str] = {}
    emails: list[str] = []
    for config in configs:
        for j in range(patients):
            patient_id = f"pt-{config.practice_id[-4:]}-{j:04d}"
            names[patient_id] = f"{rng.choice(FIRST_NAMES)} {rng.choice(LAST_NAMES)}"
            roll = rng.random()
            if roll < 0.10:
                continue  # never set preferences: no record means no message
            email = f"{patient_id}@{email_domain}"
            wants_push = push_factory is not None and rng.random() < 0.35
            wants_email = not wants_push or rng.random() < 0.3
            reminders = roll >= 0.25  # 15% switched reminders off
            subs = [push_factory()] if wants_push and push_factory is not None else []
            prefs.append(
                PatientPreferences(
                    practice_id=config.practice_id,
                    patient_id=patient_id,
                    reminders=reminders,
                    email=email if wants_email else None,
                    push_subscriptions=subs,
                    language="en" if rng.random() < 0.2 else "nl",
                    updated_at=now - timedelta(days=rng.randint(1, 300)),
                )
            )
            if wants_email:
                emails.append(email)
            channels = set()
            if reminders and wants_email:
                channels.add("email")
            if reminders and subs:
                channels.add("push")
            consent[(config.practice_id, patient_id)] = channels

    events: list[AppointmentEvent] = []
    finals: list[AppointmentEvent] = []
    # Its own generator, so the rest of the workload stays what it was for a seed.
    fates = random.Random(seed + 1)
    expected = Expected()
    for config in configs:
        pid = config.practice_id
        for k in range(appointments):
            appointment_id = f"A{k:05d}"
            patient_id = f"pt-{pid[-4:]}-{rng.randrange(patients):04d}"
            occurred = now - timedelta(seconds=rng.uniform(5, 60))
            start = now + timedelta(hours=24, seconds=rng.uniform(*lead))
            start = start.replace(microsecond=0)
            code = rng.choice(list(TYPES))
            agenda = {"id": "AG-DR", "display": "Spreekuur huisarts"}
            required = "required"
            meeting = rng.random() < 0.12
            type_display = TYPES[code]["label"]
            if meeting:
                code, type_display, agenda_id, agenda_display, how = rng.choice(MEETINGS)
                agenda = {"id": agenda_id, "display": agenda_display}
                if how == "information-only patient":
                    required = "information-only"
            base: dict[str, Any] = {
                "source_system": rng.choice(["medicom", "promedico", "microhis", "hix"]),
                "practice_id": pid,
                "appointment_id": appointment_id,
                "status": "booked",
                "appointment_type": {"code": code, "display": type_display},
                "agenda": agenda,
                "practitioner": {"id": "PR-1", "display": "dr. A. Huisarts", "role": "huisarts"},
                "location": {"display": "Praktijk De Linde, kamer 2"},
                "booked_via": "portal",
                "patient": {"id": patient_id, "required": required},
                # HIS free text that must never reach a message or a log.
                "comment": "klacht: hoofdpijn sinds 3 dagen",
            }
            history = [
                {
                    **base,
                    "sequence": 1,
                    "start": start,
                    "end": start + timedelta(minutes=10),
                    "occurred_at": occurred,
                }
            ]
            fate = rng.random()
            if not meeting and fate < 0.12:
                moved = start + timedelta(seconds=rng.uniform(1, 10))
                history.append(
                    {
                        **base,
                        "sequence": 2,
                        "start": moved,
                        "end": moved + timedelta(minutes=10),
                        "occurred_at": occurred + timedelta(seconds=2),
                    }
                )
            elif not meeting and fate < 0.22:
                history.append(
                    {
                        **base,
                        "sequence": 2,
                        "status": "cancelled",
                        "start": start,
                        "end": start + timedelta(minutes=10),
                        "occurred_at": occurred + timedelta(seconds=2),
                    }
                )
            batch = [
                AppointmentEvent.model_validate(
                    {**h, "event_id": str(uuid.UUID(int=rng.getrandbits(128)))}
                )
                for h in history
            ]
            events.extend(batch)
            if messy and rng.random() < 0.15:
                events.append(batch[0])  # a connector retry: same event id
            if messy and len(batch) > 1 and rng.random() < 0.5:
                events.append(batch[0])  # late, out of order: must not roll back

            final = history[-1]
            rid = reminder_id_for(pid, appointment_id, final["start"])
            if meeting:
                expected.meetings.add(rid)
                expected.suppressed[rid] = "patient_discussion"
            elif final["status"] == "cancelled":
                expected.suppressed[rid] = "cancelled"
            elif not config.reminders_enabled:
                expected.suppressed[rid] = "reminders_disabled"
            else:
                granted = consent.get((pid, patient_id))
                if granted is None:
                    expected.suppressed[rid] = "no_consent"
                elif not granted:
                    expected.suppressed[rid] = "no_consent_or_channel"
                else:
                    expected.deliveries[rid] = set(granted)
            if not meeting and final["status"] != "cancelled":
                finals.append(_final_event(fates, final, reminded=rid in expected.deliveries))
    return Workload(configs, prefs, events, expected, names, emails, finals)


def _final_event(rng: random.Random, last: dict[str, Any], *, reminded: bool) -> AppointmentEvent:
    """The HIS's last word on an appointment: a reminded patient's cancellation three hours
    before, or after the time fulfilled or noshow (less often noshow when reminded)."""
    start: datetime = last["start"]
    via = last["booked_via"]
    if reminded and rng.random() < 0.15:
        # Reminded, the patient cancels through the portal: a slot freed in time.
        status, at, via = "cancelled", start - timedelta(hours=3), "portal"
    elif rng.random() < (0.05 if reminded else 0.25):
        status, at = "noshow", start + timedelta(minutes=20)
    else:
        status, at = "fulfilled", start + timedelta(minutes=20)
    return AppointmentEvent.model_validate(
        {
            **last,
            "event_id": str(uuid.UUID(int=rng.getrandbits(128))),
            "sequence": last["sequence"] + 1,
            "status": status,
            "occurred_at": at,
            "booked_via": via,
        }
    )
