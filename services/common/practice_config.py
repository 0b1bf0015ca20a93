"""Practice configuration and patient preferences: validation in one place, and their tables.

Every service keeps ``practice.config.v1`` and ``patient.preferences.v1`` as in-memory
tables (:class:`services.common.table.Table`), loaded before the service reports ready
and updated live. :func:`practice_config_table` and :func:`patient_preferences_table`
build them the same way everywhere.

:func:`validate_practice_config` is the one check a config passes, in the CLI before it
is published and in every service when it is read: the model's rules (phone when
reminders are on, time zone, times and send policy, channels, e-mail addresses, unknown
fields) plus the cross-checks below and the templates, compiled and test-rendered in
the sandbox. A rejected config carries a reason written for a practice administrator;
a table keeps the practice's last valid config in force.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

from aiokafka import ConsumerRecord
from pydantic import BaseModel, ValidationError

from schemas.models import (
    AppointmentTypeText,
    DayBeforeAt,
    HoursBefore,
    MeetingRules,
    PatientPreferences,
    PracticeConfig,
    PushKeys,
    PushSubscriptionRecord,
    QuietHours,
    Sender,
    TemplateSet,
)
from schemas.topics import Topics
from services.common.settings import KafkaSettings
from services.common.table import InvalidRecord, Table
from services.domain.codec import DecodeError, DuplicateKey, encode, no_duplicate_keys
from services.domain.render import DEFAULT_KEY, TemplateRejected, check_templates
from services.domain.sendable import check_sendable

__all__ = [
    "MAX_CONFIG_BYTES",
    "ConfigRejected",
    "explain_validation_error",
    "patient_preferences_table",
    "practice_config_table",
    "validate_for_table",
    "validate_practice_config",
]

log = logging.getLogger(__name__)

_MAX_REASON = 1000


class ConfigRejected(ValueError):
    """A practice config that cannot be used; ``reason`` is for a practice administrator."""

    def __init__(self, reason: str, practice_id: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.practice_id = practice_id


# --------------------------------------------------------------------------- explaining

# Which model an unknown field was found in, by the shape of its location, so the
# reason can list the fields that are allowed there.
_FIELDS_AT: list[tuple[tuple[str, ...], type[BaseModel]]] = [
    (("send",), HoursBefore),
    (("quiet_hours",), QuietHours),
    (("sender",), Sender),
    (("meeting_rules",), MeetingRules),
    (("appointment_types", "*"), AppointmentTypeText),
    (("templates", "*", "*"), TemplateSet),
    (("push_subscriptions", "*"), PushSubscriptionRecord),
    (("push_subscriptions", "*", "keys"), PushKeys),
]
_SEND_TAGS = ("hours_before", "day_before_at")
_ID_PATTERN_HINT = "must be 1-64 letters, digits, '.', '_', ':' or '-', without spaces"


def _allowed_fields(parent: tuple[str, ...], root: type[BaseModel]) -> list[str]:
    if not parent:
        return list(root.model_fields)
    for shape, model in _FIELDS_AT:
        if len(shape) == len(parent) and all(
            s in ("*", p) for s, p in zip(shape, parent, strict=True)
        ):
            if model is HoursBefore:
                return sorted(set(HoursBefore.model_fields) | set(DayBeforeAt.model_fields))
            return list(model.model_fields)
    return []


def _location(loc: tuple[int | str, ...]) -> tuple[str, ...]:
    parts = [str(p) for p in loc]
    # A discriminated union puts the tag into the location: send.day_before_at.time.
    if len(parts) > 1 and parts[0] == "send" and parts[1] in _SEND_TAGS:
        del parts[1]
    return tuple(parts)


def _explain_one(error: Mapping[str, Any], root: type[BaseModel]) -> str:
    loc = _location(tuple(error["loc"]))
    kind: str = error["type"]
    ctx: Mapping[str, Any] = error.get("ctx") or {}
    message: str = error["msg"]
    is_key = bool(loc) and loc[-1] == "[key]"
    if is_key:
        loc = loc[:-1]
    where = ".".join(loc)
    label = where or "the record"

    if kind == "extra_forbidden":
        allowed = _allowed_fields(loc[:-1], root)
        hint = f"; allowed here: {', '.join(allowed)}" if allowed else ""
        return f"unknown field '{where}' (check the spelling){hint}"
    if kind == "missing":
        return f"{label} is required"
    if kind in ("value_error", "assertion_error"):
        text = message.removeprefix("Value error, ").removeprefix("Assertion failed, ")
        if not loc or text.startswith(loc[-1]) or text.startswith(where):
            return text
        return f"{where}: {text}"
    if kind == "string_pattern_mismatch":
        pattern = str(ctx.get("pattern", ""))
        if pattern.startswith("^[A-Za-z0-9][A-Za-z0-9._:-]"):
            return f"{label} {_ID_PATTERN_HINT}"
        if pattern.startswith("^https?://"):
            return f"{label} must be a web address starting with https://"
        if pattern.startswith("^[^\\x00-\\x1f"):
            return f"{label} must be a single line of text"
        return f"{label} has an invalid format"
    if kind == "time_parsing" or kind == "time_type":
        detail = ctx.get("error")
        suffix = f" ({detail})" if detail else ""
        return f'{label} must be a time such as "18:00"{suffix}'
    if kind == "union_tag_invalid":
        return (
            f"{label}.policy must be one of {ctx.get('expected_tags')} (found '{ctx.get('tag')}')"
        )
    if kind == "union_tag_not_found":
        return f"{label} needs a policy: 'hours_before' or 'day_before_at'"
    if kind in ("bool_parsing", "bool_type"):
        return f"{label} must be true or false"
    if kind == "string_type":
        return f'{label} must be text (put quotes around numbers such as "01999001")'
    if kind == "literal_error":
        what = "key" if is_key else "value"
        return f"{label}: {what} must be {ctx.get('expected')}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"{label} must be a mapping of fields"
    if kind == "list_type":
        return f"{label} must be a list"
    return f"{label}: {message}"


def explain_validation_error(exc: ValidationError, root: type[BaseModel] = PracticeConfig) -> str:
    """One line naming every problem, in words an administrator can act on, without values."""
    seen: list[str] = []
    for error in exc.errors(include_url=False, include_input=False):
        text = _explain_one(error, root)
        if text not in seen:
            seen.append(text)
    return "; ".join(seen)[:_MAX_REASON]


# --------------------------------------------------------------------------- validation

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


# A config is one record on practice.config.v1 and lives in memory in every service:
# well below Kafka's default 1 MB record limit, refused here before Kafka is asked.
MAX_CONFIG_BYTES = 256 * 1024
# Quiet hours may cover at most this much of the day: the rest is left for sending.
_MAX_QUIET = dt.timedelta(hours=16)


def _too_large(size: int) -> str:
    return (
        f"the config is {size // 1024} KB; at most {MAX_CONFIG_BYTES // 1024} KB fits "
        "practice.config.v1: shorten the templates or instructions"
    )


def _quiet_length(quiet: QuietHours) -> dt.timedelta:
    day = dt.date(2026, 1, 1)
    start = dt.datetime.combine(day, quiet.start)
    end = dt.datetime.combine(day, quiet.end)
    return (end - start) % dt.timedelta(days=1)


def _settings_together(config: PracticeConfig) -> list[str]:
    """Settings each valid on their own that together leave no moment to send."""
    problems: list[str] = []
    send = config.send
    if isinstance(send, HoursBefore) and send.hours * 60 < config.min_lead_minutes:
        problems.append(
            f"send.hours ({send.hours:g}) is less than min_lead_minutes "
            f"({config.min_lead_minutes}): every reminder would be too late; send earlier "
            "or lower min_lead_minutes"
        )
    if config.quiet_hours is not None and _quiet_length(config.quiet_hours) > _MAX_QUIET:
        length = _quiet_length(config.quiet_hours)
        hours, minutes = divmod(int(length.total_seconds()) // 60, 60)
        problems.append(
            f"quiet_hours cover {hours}:{minutes:02d} hours of the day; leave at least "
            f"{24 - int(_MAX_QUIET.total_seconds()) // 3600} hours for sending"
        )
    return problems


def _cross_checks(config: PracticeConfig) -> list[str]:
    problems: list[str] = _settings_together(config)
    for code in config.appointment_types:
        if not code.strip() or len(code) > 64 or _CONTROL.search(code):
            problems.append(
                f"appointment_types: type code {code!r} must be 1-64 characters on one line"
            )
        elif code == DEFAULT_KEY:
            problems.append(
                "appointment_types: 'default' is reserved for the templates that apply to "
                "every type; use the HIS type code"
            )
    for code in config.templates:
        if code != DEFAULT_KEY and code not in config.appointment_types:
            problems.append(
                f"templates has texts for type '{code}', which is not in appointment_types: "
                "add the type there (with its label) or correct the code"
            )
    meeting_codes = set(config.meeting_rules.appointment_type_codes)
    if config.remind_only_types is not None:
        if not config.remind_only_types and config.reminders_enabled:
            problems.append(
                "remind_only_types is empty, so no appointment would ever be reminded; "
                "list the types to remind, or remove remind_only_types to remind every type"
            )
        seen: set[str] = set()
        for code in config.remind_only_types:
            if code in seen:
                problems.append(f"remind_only_types lists '{code}' twice")
            seen.add(code)
            if code in meeting_codes:
                problems.append(
                    f"type '{code}' is both in remind_only_types and in "
                    "meeting_rules.appointment_type_codes; a meeting is never reminded, "
                    "so remove it from one of the two"
                )
            elif code not in config.appointment_types:
                problems.append(
                    f"remind_only_types lists '{code}', which has no entry in "
                    "appointment_types; add its label there (a misspelt code would silently "
                    "stop the reminders for that type)"
                )
    return problems


def _parse(data: Mapping[str, Any] | bytes | str | PracticeConfig) -> PracticeConfig:
    if isinstance(data, PracticeConfig):
        # Re-validate: a copy made with model_copy(update=...) skips the model's checks.
        data = data.model_dump(mode="python", warnings=False)
    elif isinstance(data, bytes | str):
        try:
            data = json.loads(data, object_pairs_hook=no_duplicate_keys)
        except DuplicateKey as exc:
            raise ConfigRejected(
                f"the config names the field '{str(exc)[:64]}' twice; the last one would win "
                "silently, so give each field once"
            ) from None
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigRejected(f"the config is not valid JSON: {exc}") from exc
    if not isinstance(data, Mapping):
        raise ConfigRejected(
            "a practice config is a mapping of fields (practice_id, name, phone, ...), "
            f"not a {type(data).__name__}"
        )
    practice_id = data.get("practice_id")
    pid = practice_id if isinstance(practice_id, str) else None
    try:
        return PracticeConfig.model_validate(dict(data))
    except ValidationError as exc:
        raise ConfigRejected(explain_validation_error(exc), pid) from exc


def validate_practice_config(
    data: Mapping[str, Any] | bytes | str | PracticeConfig,
    *,
    composed: bool = True,
) -> PracticeConfig:
    """The practice config if it can be used; else ConfigRejected with the reason.

    ``data`` is a mapping (from YAML or JSON), the JSON bytes of a record, or a model.
    With ``composed`` (the default: ``config validate``/``apply``, practice-admin and
    booking_events, which dead-letters a rejected config), every reminder the config can
    produce is rendered and composed as a real e-mail and push message
    (services.domain.sendable), so that a config that validates can be sent. The
    services' tables skip only that step: it costs a composed message per type and
    language, for every practice, at every start.
    """
    if isinstance(data, bytes | str) and len(data) > MAX_CONFIG_BYTES:
        raise ConfigRejected(_too_large(len(data)))
    return _checked(_parse(data), composed=composed)


def _checked(config: PracticeConfig, *, composed: bool) -> PracticeConfig:
    """The checks of :func:`validate_practice_config` after the model's own."""
    problems = _cross_checks(config)
    size = len(encode(config))
    if size > MAX_CONFIG_BYTES:
        problems.append(_too_large(size))
    if problems:
        raise ConfigRejected("; ".join(problems)[:_MAX_REASON], config.practice_id)
    try:
        check_templates(config)
        if composed:
            check_sendable(config)
    except TemplateRejected as exc:
        raise ConfigRejected(exc.reason[:_MAX_REASON], config.practice_id) from exc
    return config


def validate_for_table(config: PracticeConfig) -> PracticeConfig:
    """The ``validate`` hook of the config table: DecodeError keeps the last valid config.

    The table's decoder has just built ``config`` from the record's JSON with the
    model's own validation, so only the checks after it run here (validating the model
    a second time cost about 100 µs per practice at every start)."""
    try:
        return _checked(config, composed=False)
    except ConfigRejected as exc:
        raise DecodeError("invalid_config", exc.reason) from exc


# --------------------------------------------------------------------------- tables


def _config_on_invalid(downstream: InvalidRecord | None, log_rejections: bool) -> InvalidRecord:
    async def on_invalid(record: ConsumerRecord[bytes, bytes], error: DecodeError) -> None:
        if error.reason == "invalid" and record.value is not None:
            # The table's decoder words model errors for developers; reword them.
            try:
                validate_practice_config(record.value)
            except ConfigRejected as exc:
                error = DecodeError("invalid_config", exc.reason)
        key = record.key.decode("utf-8", "replace") if record.key is not None else None
        if log_rejections:
            # A config holds no patient data; the reason names fields and type codes only.
            log.warning(
                "practice config rejected; the last valid config stays in force",
                extra={
                    "practice_id": key,
                    "topic": record.topic,
                    "partition": record.partition,
                    "offset": record.offset,
                    "error_reason": error.reason,
                    "error_detail": error.detail,
                },
            )
        if downstream is not None:
            await downstream(record, error)

    return on_invalid


def practice_config_table(
    settings: KafkaSettings,
    *,
    on_invalid: InvalidRecord | None = None,
    on_change: Callable[[str, PracticeConfig | None, PracticeConfig | None], None] | None = None,
    log_rejections: bool = True,
) -> Table[PracticeConfig]:
    """Every practice's last valid config, keyed by practice id (start it with no partitions).

    Rejected records are logged (without personal data) and passed to ``on_invalid``
    with an administrator's reason: booking_events sends them to the DLQ there.
    """
    return Table(
        settings,
        Topics(settings.topic_prefix).practice_config,
        PracticeConfig,
        validate=validate_for_table,
        key_of=lambda config: config.practice_id,
        on_invalid=_config_on_invalid(on_invalid, log_rejections),
        on_change=on_change,
        name="practice-config",
    )


def patient_preferences_table(
    settings: KafkaSettings,
    *,
    on_invalid: InvalidRecord | None = None,
    on_change: (
        Callable[[str, PatientPreferences | None, PatientPreferences | None], None] | None
    ) = None,
) -> Table[PatientPreferences]:
    """Consent and channels per ``{practice_id}/{patient_id}``; a tombstone means no consent.

    Start it with the partitions the service owns; the notifier passes ``on_invalid``
    to send bad records to the DLQ.
    """
    return Table(
        settings,
        Topics(settings.topic_prefix).patient_preferences,
        PatientPreferences,
        key_of=lambda prefs: prefs.key,
        on_invalid=on_invalid,
        on_change=on_change,
        name="patient-preferences",
    )
