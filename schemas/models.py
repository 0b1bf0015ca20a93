"""The records on the topics of DESIGN.md, as pydantic models.

These models are the contract. Field names are relied on by HIS connectors, the patient
portal and the acceptance tests: extend them, never rename them. The JSON Schema files
beside this module are generated from these models (``reminders schemas write``).
"""

from __future__ import annotations

import base64
import datetime as dt
import re
from datetime import datetime
from typing import Annotated, Any, Literal, get_args
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    EmailStr,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

__all__ = [
    "APPOINTMENT_STATUSES",
    "Agenda",
    "Appointment",
    "AppointmentEvent",
    "AppointmentType",
    "AppointmentTypeText",
    "Branding",
    "DayBeforeAt",
    "FiredMarker",
    "HoursBefore",
    "Location",
    "MeetingInfo",
    "MeetingRules",
    "Outcome",
    "PatientParticipant",
    "PatientPreferences",
    "PracticeConfig",
    "Practitioner",
    "PushKeys",
    "PushSubscriptionRecord",
    "QuietHours",
    "ReminderDue",
    "Sender",
    "TemplateSet",
    "appointment_key",
    "reminder_id_for",
    "utc_text",
]

# Identifiers end up in Kafka keys joined by "/", in metric labels and in Message-IDs:
# a small alphabet keeps them safe in all three.
_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"
Identifier = Annotated[str, StringConstraints(pattern=_ID_PATTERN)]

# A Dutch BSN is 9 digits (older ones 8 with a leading zero dropped). A patient id that
# looks like one is refused outright: the portal id must be pseudonymous.
_BSN_LIKE = re.compile(r"^\d{8,9}$")


def _not_bsn_like(value: str) -> str:
    if _BSN_LIKE.match(value):
        raise ValueError(
            "patient id looks like a BSN (8-9 digits); send the pseudonymous portal id instead"
        )
    return value


PatientId = Annotated[Identifier, AfterValidator(_not_bsn_like)]

# Display texts come from HIS agendas and practice admins: bounded, single line.
ShortText = Annotated[
    str, StringConstraints(max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$", strip_whitespace=True)
]
LongText = Annotated[str, StringConstraints(max_length=2000)]

AppointmentStatus = Literal[
    "proposed",
    "pending",
    "booked",
    "arrived",
    "fulfilled",
    "cancelled",
    "noshow",
    "entered-in-error",
    "checked-in",
    "waitlist",
]
APPOINTMENT_STATUSES: tuple[str, ...] = get_args(AppointmentStatus)

Language = Literal["nl", "en"]
Channel = Literal["email", "push"]


def utc_text(moment: datetime) -> str:
    """RFC 3339 in UTC with a ``Z``, second precision: the form used inside ids."""
    return moment.astimezone(ZoneInfo("UTC")).strftime("%Y-%m-%dT%H:%M:%SZ")


def appointment_key(practice_id: str, appointment_id: str) -> str:
    return f"{practice_id}/{appointment_id}"


def reminder_id_for(practice_id: str, appointment_id: str, start: datetime) -> str:
    """One reminder per appointment time: the id names the start it reminds of."""
    return f"{practice_id}/{appointment_id}/{utc_text(start)}"


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


class _Incoming(BaseModel):
    # Events from HIS connectors: unknown fields are dropped, never stored, so a vendor
    # adding a field of its own does not break the pipeline (and cannot smuggle data in).
    model_config = ConfigDict(frozen=True, extra="ignore", str_strip_whitespace=True)


# --------------------------------------------------------------------------- appointments


class AppointmentType(_Incoming):
    code: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    display: ShortText = ""


class Agenda(_Incoming):
    id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    display: ShortText = ""


class Practitioner(_Incoming):
    id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    display: ShortText = ""
    role: ShortText | None = None


class Location(_Incoming):
    display: ShortText


class PatientParticipant(_Incoming):
    id: PatientId
    required: Literal["required", "optional", "information-only"] = "required"


class _AppointmentFields(_Incoming):
    source_system: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    practice_id: Identifier
    appointment_id: Identifier
    sequence: Annotated[int, Field(ge=0)]
    status: AppointmentStatus
    start: AwareDatetime
    end: AwareDatetime
    appointment_type: AppointmentType
    agenda: Agenda
    practitioner: Practitioner
    location: Location | None = None
    booked_via: Literal["portal", "phone", "desk", "other"] = "other"
    patient: PatientParticipant
    kind: Literal["consult", "meeting"] | None = None

    @model_validator(mode="after")
    def _end_after_start(self) -> _AppointmentFields:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        return self


class AppointmentEvent(_AppointmentFields):
    """What an HIS connector publishes on ``his.appointments.v1``."""

    event_id: UUID
    occurred_at: AwareDatetime
    # Free text from the HIS (often the complaint). Accepted so connectors can send
    # their record as is, but never stored downstream and never shown to anyone.
    comment: Annotated[str, StringConstraints(max_length=4000)] | None = None


MeetingRule = Literal["kind", "information_only", "agenda_id", "appointment_type_code", "keyword"]


class MeetingInfo(_Record):
    is_meeting: bool
    rule: MeetingRule | None = None
    # What matched (the agenda id, type code or keyword), for the practice to read.
    matched: str | None = None


class Appointment(_AppointmentFields):
    """Current state of one appointment in the compacted ``appointments.v1``.

    The HIS ``comment`` is deliberately absent (data minimisation, DESIGN rule 5).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    booked_at: AwareDatetime
    updated_at: AwareDatetime
    meeting: MeetingInfo
    last_event_id: UUID | None = None

    @property
    def key(self) -> str:
        return appointment_key(self.practice_id, self.appointment_id)

    @property
    def reminder_id(self) -> str:
        return reminder_id_for(self.practice_id, self.appointment_id, self.start)


# --------------------------------------------------------------------------- practice config


def _valid_timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(
            f"unknown time zone {value!r}; use an IANA name such as Europe/Amsterdam"
        ) from exc
    return value


TimeZoneName = Annotated[str, AfterValidator(_valid_timezone)]


def _time_as_text(value: object) -> object:
    # YAML 1.1 reads an unquoted 18:00 as the number 1080, and pydantic would take a
    # number as seconds after midnight (00:18): refuse numbers instead of guessing.
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError('write the time as text "HH:MM", such as "18:00"')
    return value


ClockTime = Annotated[dt.time, BeforeValidator(_time_as_text)]


class HoursBefore(_Record):
    policy: Literal["hours_before"] = "hours_before"
    hours: Annotated[float, Field(gt=0, le=24 * 7)] = 24


class DayBeforeAt(_Record):
    policy: Literal["day_before_at"]
    time: ClockTime = dt.time(18, 0)


SendPolicy = Annotated[HoursBefore | DayBeforeAt, Field(discriminator="policy")]


class QuietHours(_Record):
    start: ClockTime = dt.time(21, 0)
    end: ClockTime = dt.time(8, 0)

    @model_validator(mode="after")
    def _not_empty(self) -> QuietHours:
        if self.start == self.end:
            raise ValueError("quiet_hours start and end are equal; use null for no quiet hours")
        return self


class Sender(_Record):
    email: EmailStr
    name: ShortText


HttpLink = Annotated[str, StringConstraints(pattern=r"^https?://[^\s<>\"]+$", max_length=2000)]


class AppointmentTypeText(_Record):
    label: ShortText
    with_whom: ShortText = ""
    instructions: Annotated[str, StringConstraints(max_length=1000)] = ""


class MeetingRules(_Record):
    agenda_ids: list[Annotated[str, StringConstraints(min_length=1, max_length=64)]] = []
    appointment_type_codes: list[
        Annotated[str, StringConstraints(min_length=1, max_length=64)]
    ] = []
    keywords: list[Annotated[str, StringConstraints(min_length=2, max_length=64)]] = []


class TemplateSet(_Record):
    """Jinja2 sources for one language. Missing parts fall back to the built-in texts."""

    subject: Annotated[str, StringConstraints(max_length=300)] | None = None
    text: LongText | None = None
    html: Annotated[str, StringConstraints(max_length=20000)] | None = None
    push_title: Annotated[str, StringConstraints(max_length=200)] | None = None
    push_body: Annotated[str, StringConstraints(max_length=1000)] | None = None


_PHONE = re.compile(r"^\+?[0-9][0-9 ()-]{5,20}[0-9]$")


_ACCENT = re.compile(r"^#[0-9a-fA-F]{6}$")
# A base64 PNG or JPEG of at most 100 KB (decoded): 4/3 of that in base64, rounded up.
MAX_LOGO_BYTES = 100 * 1024
_MAX_LOGO_B64 = (MAX_LOGO_BYTES + 2) // 3 * 4


class Branding(_Record):
    """The practice's look in mails and pages: an accent colour and a logo (inline, cid:)."""

    accent_color: str = "#1a6e5c"
    # base64 of a PNG or JPEG image; practice-admin decodes and re-encodes every upload.
    logo: Annotated[str, StringConstraints(max_length=_MAX_LOGO_B64)] | None = None

    @field_validator("accent_color")
    @classmethod
    def _colour(cls, value: str) -> str:
        if not _ACCENT.match(value):
            raise ValueError('branding.accent_color must be a colour such as "#1a6e5c"')
        return value.lower()

    @field_validator("logo")
    @classmethod
    def _image(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            data = base64.b64decode(value, validate=True)
        except ValueError as exc:
            raise ValueError("branding.logo must be base64 (a PNG or JPEG image)") from exc
        if len(data) > MAX_LOGO_BYTES:
            raise ValueError("branding.logo is larger than 100 KB")
        if not (data.startswith(b"\x89PNG\r\n\x1a\n") or data.startswith(b"\xff\xd8\xff")):
            raise ValueError("branding.logo must be a PNG or JPEG image")
        return value


class PracticeConfig(_Record):
    """A practice's settings on ``practice.config.v1``; a tombstone means defaults (off)."""

    practice_id: Identifier
    name: ShortText
    phone: ShortText | None = None
    reminders_enabled: bool = False
    timezone: TimeZoneName = "Europe/Amsterdam"
    send: SendPolicy = HoursBefore()
    quiet_hours: QuietHours | None = QuietHours()
    min_lead_minutes: Annotated[int, Field(ge=0, le=24 * 60)] = 60
    skip_if_booked_within_hours: Annotated[float, Field(ge=0, le=24 * 7)] = 12
    channels: list[Channel] = ["email", "push"]
    sender: Sender | None = None
    preferences_url: HttpLink | None = None
    appointment_types: dict[str, AppointmentTypeText] = {}
    remind_only_types: list[str] | None = None
    meeting_rules: MeetingRules = MeetingRules()
    # {type code or "default": {language: TemplateSet}}
    templates: dict[str, dict[Language, TemplateSet]] = {}
    branding: Branding = Branding()
    version: Annotated[int, Field(ge=0)] = 0

    @field_validator("phone")
    @classmethod
    def _phone_shape(cls, value: str | None) -> str | None:
        if value is not None and not _PHONE.match(value):
            raise ValueError(
                "phone must be a telephone number such as 020-1234567 or +31 20 123 4567"
            )
        return value

    @field_validator("channels")
    @classmethod
    def _unique_channels(cls, value: list[Channel]) -> list[Channel]:
        if len(set(value)) != len(value):
            raise ValueError("channels lists a channel twice")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> PracticeConfig:
        if self.reminders_enabled:
            if not self.phone:
                raise ValueError(
                    "phone is required when reminders are on: every reminder tells the patient "
                    "to phone the practice for urgent matters"
                )
            if "email" in self.channels and self.sender is None:
                raise ValueError("sender (email, name) is required when e-mail reminders are on")
            if not self.channels:
                raise ValueError("channels is empty while reminders are on")
        return self

    def type_text(self, code: str) -> AppointmentTypeText | None:
        return self.appointment_types.get(code)


# --------------------------------------------------------------------------- preferences


class PushKeys(_Record):
    p256dh: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{40,200}={0,2}$")]
    auth: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{8,64}={0,2}$")]


class PushSubscriptionRecord(_Record):
    endpoint: HttpLink
    keys: PushKeys


class PatientPreferences(_Record):
    """Consent and channels from the patient portal; a tombstone means no consent."""

    practice_id: Identifier
    patient_id: PatientId
    reminders: bool = False
    email: EmailStr | None = None
    push_subscriptions: list[PushSubscriptionRecord] = []
    language: Language = "nl"
    updated_at: AwareDatetime

    @property
    def key(self) -> str:
        return f"{self.practice_id}/{self.patient_id}"


# --------------------------------------------------------------------------- reminders


class ReminderDue(_Record):
    """Emitted by the scheduler on ``reminders.due.v1`` when a reminder falls due."""

    reminder_id: str
    practice_id: Identifier
    appointment_id: Identifier
    patient_id: PatientId
    start: AwareDatetime
    sequence: int
    due_at: AwareDatetime
    fired_at: AwareDatetime
    reason: Literal["booked_recently", "too_late"] | None = None


class FiredMarker(_Record):
    """Scheduler-internal, compacted ``reminders.fired.v1``: what fired for which start."""

    reminder_id: str
    practice_id: Identifier
    appointment_id: Identifier
    start: AwareDatetime
    end: AwareDatetime
    due_at: AwareDatetime
    fired_at: AwareDatetime


OutcomeReason = Literal[
    "no_consent",
    "no_channel",
    "reminders_disabled",
    "patient_discussion",
    "not_remindable_type",
    "cancelled",
    "moved",
    "too_late",
    "booked_recently",
    "duplicate",
    "invalid_address",
    "permanent_failure",
    "subscription_gone",
    "retries_exhausted",
    "unknown_appointment",
    "no_config",
    "render_failed",
    "not_booked",
]


class Outcome(_Record):
    """Every ReminderDue ends in exactly one Outcome on ``notifications.outcomes.v1``."""

    reminder_id: str
    practice_id: Identifier
    appointment_id: Identifier
    channel: Channel | None = None
    status: Literal["sent", "suppressed", "failed"]
    reason: OutcomeReason | None = None
    at: AwareDatetime
    # Extensions: the Message-ID of a sent mail, and a short non-personal detail.
    message_id: str | None = None
    detail: Annotated[str, StringConstraints(max_length=500)] | None = None


def model_json_schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schema of every record, by file name."""
    models: list[type[BaseModel]] = [
        AppointmentEvent,
        Appointment,
        PracticeConfig,
        PatientPreferences,
        ReminderDue,
        FiredMarker,
        Outcome,
    ]
    return {f"{m.__name__}.schema.json": m.model_json_schema() for m in models}
