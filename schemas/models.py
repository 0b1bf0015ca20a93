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
from pydantic_core import PydanticCustomError

__all__ = [
    "APPOINTMENT_STATUSES",
    "ID_PATTERN",
    "INSTANT_RANGE",
    "MAX_INT64",
    "UNSAFE_TEXT",
    "AgbCode",
    "Agenda",
    "Appointment",
    "AppointmentEvent",
    "AppointmentType",
    "AppointmentTypeText",
    "Branding",
    "DayBeforeAt",
    "FiredMarker",
    "HoursBefore",
    "Instant",
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
    "unsafe_text_problem",
    "utc_text",
]

# Identifiers end up in Kafka keys joined by "/", in metric labels and in Message-IDs:
# a small alphabet keeps them safe in all three.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"
Identifier = Annotated[str, StringConstraints(pattern=ID_PATTERN)]

# Every integer of a record fits a signed 64-bit integer (Kafka, Java consumers, the
# scheduler's packed timers).
MAX_INT64 = 2**63 - 1
Int64 = Annotated[int, Field(ge=0, le=MAX_INT64)]
# Internal records carry the scheduler's unsigned 64-bit sequence.
UInt64 = Annotated[int, Field(ge=0, le=2**64 - 1)]


def _agb_code(value: str) -> str:
    if not (len(value) == 8 and value.isascii() and value.isdigit()):
        raise PydanticCustomError(
            "invalid_practice_id",
            "the practice id must be the practice's AGB code: 8 digits, such as 01234567",
        )
    return value


# A practice is named by its AGB code (Vektis), 8 ASCII digits, wherever it enters.
AgbCode = Annotated[Identifier, AfterValidator(_agb_code)]

# A Dutch BSN is 9 digits (older ones 8 with a leading zero dropped). A patient id that
# looks like one, in any common notation (1234.56.782, 1234 56 782, BSN123456782,
# 0123456782), is refused outright: the portal id must be pseudonymous.
_BSN_SEPARATORS = re.compile(r"[\s._:/-]")
_BSN_PREFIX = re.compile(r"^(?:bsn|nl)?", re.IGNORECASE)


# An ASCII letter that neither the prefix (bsn, nl) nor a separator removes: not a BSN.
_NOT_BSN_LETTER = re.compile(r"[ac-kmo-rt-z]", re.IGNORECASE)


def _is_bsn_like(value: str) -> bool:
    if _NOT_BSN_LETTER.search(value) is not None:
        return False  # the cheap answer for almost every pseudonymous id
    compact = _BSN_PREFIX.sub("", _BSN_SEPARATORS.sub("", value), count=1).lstrip("0")
    return compact.isascii() and compact.isdigit() and 7 <= len(compact) <= 9


def _not_bsn_like(value: str) -> str:
    if _is_bsn_like(value):
        raise ValueError(
            "patient id looks like a BSN (8-9 digits); send the pseudonymous portal id instead"
        )
    return value


PatientId = Annotated[Identifier, AfterValidator(_not_bsn_like)]

# Characters that must never reach a header, a subject, a push payload or the From name:
# C0 and C1 controls (U+0085 too), line and paragraph separators, bidirectional controls
# (they can reverse the urgent line that follows), invisible format characters and lone
# surrogates (no UTF-8 encoder takes them).
UNSAFE_TEXT = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff"
    "\ufff9-\ufffb\ud800-\udfff]"
)
_UNSAFE_IN_LINES = re.compile(  # the same, but tab, CR and LF allowed (bodies, sources)
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f"
    "\ufeff\ufff9-\ufffb\ud800-\udfff]"
)
# An RFC 2047 encoded word: the e-mail package would decode it into the header (CR/LF).
_ENCODED_WORD = re.compile(r"=\?[^?\s]*\?[bBqQ]\?")


def unsafe_text_problem(value: str, *, multiline: bool = False) -> str | None:
    """Why ``value`` may not reach a header, subject or push message, or None."""
    if value.isascii() and value.isprintable() and "=?" not in value:
        return None  # printable ASCII (no control character) and no encoded word
    unsafe = _UNSAFE_IN_LINES if multiline else UNSAFE_TEXT
    found = unsafe.search(value)
    if found is not None:
        return (
            f"contains the invisible or control character U+{ord(found.group()):04X}; "
            "use plain text"
            + ("" if multiline else " on one line")
            + " without control, line-separator or direction characters"
        )
    if _ENCODED_WORD.search(value):
        return "contains an RFC 2047 encoded word (=?...?=); write plain text"
    return None


def _plain_line(value: str) -> str:
    problem = unsafe_text_problem(value)
    if problem is not None:
        raise PydanticCustomError("control_character", problem)
    return value


def _plain_lines(value: str) -> str:
    problem = unsafe_text_problem(value, multiline=True)
    if problem is not None:
        raise PydanticCustomError("control_character", problem)
    return value


# Codes and ids from HIS agendas (an appointment type's code, an agenda's or practitioner's
# id, the source system) are stored, logged and compared downstream (insights keeps them in
# PostgreSQL, which refuses NUL): bounded, single line, plain, like the display texts.
HisCode = Annotated[
    str, StringConstraints(min_length=1, max_length=64), AfterValidator(_plain_line)
]

# Display texts come from HIS agendas and practice admins: bounded, single line, plain.
ShortText = Annotated[
    str,
    StringConstraints(max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$", strip_whitespace=True),
    AfterValidator(_plain_line),
]
LongText = Annotated[str, StringConstraints(max_length=2000), AfterValidator(_plain_lines)]

# Every instant lies in this range once converted to UTC: beyond it, arithmetic on it
# (due times, epoch microseconds, the day before) overflows or is meaningless.
INSTANT_RANGE = (
    datetime(2000, 1, 1, tzinfo=ZoneInfo("UTC")),
    datetime(2100, 1, 1, tzinfo=ZoneInfo("UTC")),
)


def _sane_instant(value: datetime) -> datetime:
    # This runs for every time of every event. A UTC offset is less than a day, so a
    # local year 2001..2098 is inside the range whatever the zone: no offset arithmetic.
    if 2001 <= value.year <= 2098:
        return value
    low, high = INSTANT_RANGE
    # Aware datetimes compare as instants (by UTC), and the comparison cannot overflow
    # where converting year 1 or 9999 to UTC would.
    if not low <= value < high:
        raise PydanticCustomError(
            "time_out_of_range",
            "the time must lie between 2000-01-01 and 2100-01-01 (UTC)",
        )
    return value


Instant = Annotated[AwareDatetime, AfterValidator(_sane_instant)]

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
    code: HisCode
    display: ShortText = ""


class Agenda(_Incoming):
    id: HisCode
    display: ShortText = ""


class Practitioner(_Incoming):
    id: HisCode
    display: ShortText = ""
    role: ShortText | None = None


class Location(_Incoming):
    display: ShortText


class PatientParticipant(_Incoming):
    id: PatientId
    required: Literal["required", "optional", "information-only"] = "required"


class _AppointmentFields(_Incoming):
    source_system: HisCode
    practice_id: AgbCode
    appointment_id: Identifier
    sequence: Int64
    status: AppointmentStatus
    start: Instant
    end: Instant
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
    occurred_at: Instant
    # Free text from the HIS (often the complaint). Accepted so connectors can send
    # their record as is, but never stored downstream and never shown to anyone.
    comment: Annotated[str, StringConstraints(max_length=4000)] | None = None


MeetingRule = Literal["kind", "information_only", "agenda_id", "appointment_type_code", "keyword"]


class MeetingInfo(_Record):
    is_meeting: bool
    rule: MeetingRule | None = None
    # What matched (the agenda id, type code or keyword), for the practice to read.
    matched: str | None = None


# The state keeps reading what the edge accepted before its codes had to be plain lines
# (records of then are still in the compacted appointments.v1): refusing them now would
# drop those appointments' reminders. Only the edge (AppointmentEvent) is stricter.
_StoredCode = Annotated[str, StringConstraints(min_length=1, max_length=64)]
# From attributes: an AppointmentType, Agenda or Practitioner of an event goes into the
# state as it is.
_STORED = ConfigDict(frozen=True, extra="ignore", str_strip_whitespace=True, from_attributes=True)


class StoredAppointmentType(AppointmentType):
    model_config = _STORED

    code: _StoredCode


class StoredAgenda(Agenda):
    model_config = _STORED

    id: _StoredCode


class StoredPractitioner(Practitioner):
    model_config = _STORED

    id: _StoredCode


class Appointment(_AppointmentFields):
    """Current state of one appointment in the compacted ``appointments.v1``.

    The HIS ``comment`` is deliberately absent (data minimisation, DESIGN rule 5).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    source_system: _StoredCode
    appointment_type: StoredAppointmentType
    agenda: StoredAgenda
    practitioner: StoredPractitioner

    booked_at: Instant
    updated_at: Instant
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


_CLOCK_TIME = re.compile(r"^([01][0-9]|2[0-3]):([0-5][0-9])(?::00)?$")


def _clock_error() -> PydanticCustomError:
    return PydanticCustomError(
        "time_parsing",
        'write the time as local "HH:MM", such as "21:00"',
        {"error": "local HH:MM on the 24-hour clock, without seconds or UTC offset"},
    )


def _time_as_text(value: object) -> object:
    """A time of day is local wall-clock time, ``"HH:MM"``: seconds other than ``:00``
    (what a dumped config holds), fractions and UTC offsets are refused, not dropped,
    so that what is shown ("21:00") is exactly what is applied."""
    # YAML 1.1 reads an unquoted 18:00 as the number 1080, and pydantic would take a
    # number as seconds after midnight (00:18): refuse numbers instead of guessing.
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError('write the time as text "HH:MM", such as "18:00"')
    if isinstance(value, dt.time):
        if value.tzinfo is not None or value.second or value.microsecond:
            raise _clock_error()
        return value
    if isinstance(value, str):
        found = _CLOCK_TIME.match(value.strip())
        if found is None:
            raise _clock_error()
        return dt.time(int(found.group(1)), int(found.group(2)))
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
    instructions: Annotated[
        str, StringConstraints(max_length=1000), AfterValidator(_plain_lines)
    ] = ""


class MeetingRules(_Record):
    agenda_ids: list[Annotated[str, StringConstraints(min_length=1, max_length=64)]] = []
    appointment_type_codes: list[
        Annotated[str, StringConstraints(min_length=1, max_length=64)]
    ] = []
    keywords: list[Annotated[str, StringConstraints(min_length=2, max_length=64)]] = []


class TemplateSet(_Record):
    """Jinja2 sources for one language. Missing parts fall back to the built-in texts."""

    # Line breaks in a source are allowed: rendering joins a subject or push text into one.
    subject: (
        Annotated[str, StringConstraints(max_length=300), AfterValidator(_plain_lines)] | None
    ) = None
    text: LongText | None = None
    html: (
        Annotated[str, StringConstraints(max_length=20000), AfterValidator(_plain_lines)] | None
    ) = None
    push_title: (
        Annotated[str, StringConstraints(max_length=200), AfterValidator(_plain_lines)] | None
    ) = None
    push_body: (
        Annotated[str, StringConstraints(max_length=1000), AfterValidator(_plain_lines)] | None
    ) = None


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

    practice_id: AgbCode
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
    version: Int64 = 0

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
    updated_at: Instant

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
    start: Instant
    sequence: UInt64
    due_at: Instant
    fired_at: Instant
    reason: Literal["booked_recently", "too_late"] | None = None


class FiredMarker(_Record):
    """Scheduler-internal, compacted ``reminders.fired.v1``: what fired for which start."""

    reminder_id: str
    practice_id: Identifier
    appointment_id: Identifier
    start: Instant
    end: Instant
    due_at: Instant
    fired_at: Instant


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
    # The record passed the checks, but deciding on it raised: the due record is in the
    # dead-letter topic (reason processing_failed) and this outcome tells the practice.
    "processing_failed",
]


class Outcome(_Record):
    """Every ReminderDue ends in exactly one Outcome on ``notifications.outcomes.v1``."""

    reminder_id: str
    practice_id: Identifier
    appointment_id: Identifier
    channel: Channel | None = None
    status: Literal["sent", "suppressed", "failed"]
    reason: OutcomeReason | None = None
    at: Instant
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
