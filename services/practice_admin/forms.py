"""From the pages' forms to a PracticeConfig candidate, and the checks' reasons to fields.

Each page changes only its own part of the config in force. The candidate then passes
the one validation (:func:`services.common.practice_config.validate_practice_config`);
its reasons (the CLI's words) are shown beside the field they name.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from schemas.models import PracticeConfig

__all__ = [
    "TEMPLATE_PARTS",
    "FormErrors",
    "changed_fields",
    "errors_by_field",
    "lines",
    "meeting_rules_update",
    "settings_update",
    "texts_update",
]

TEMPLATE_PARTS = ("subject", "text", "html", "push_title", "push_body")
LANGUAGES = ("nl", "en")

FormErrors = dict[str, list[str]]

# Which form field a reason is about, by the config path it starts with or names.
_SETTINGS_FIELDS: list[tuple[str, str]] = [
    ("phone", "phone"),
    ("name", "name"),
    ("sender (email, name)", "sender_email"),
    ("sender.email", "sender_email"),
    ("sender.name", "sender_name"),
    ("sender", "sender_email"),
    ("channels", "channels"),
    ("send.hours", "send_hours"),
    ("send.time", "send_time"),
    ("send", "send_policy"),
    ("quiet_hours.start", "quiet_start"),
    ("quiet_hours.end", "quiet_end"),
    ("quiet_hours", "quiet_start"),
    ("branding.accent_color", "accent_color"),
    ("branding.logo", "logo"),
    ("preferences_url", "preferences_url"),
    ("remind_only_types", "general"),
]


def _field_for(reason: str, table: Iterable[tuple[str, str]]) -> str:
    for prefix, field in table:
        if reason.startswith(prefix) or f"'{prefix}" in reason:
            return field
    return "general"


def errors_by_field(reason: str, table: Iterable[tuple[str, str]] | None = None) -> FormErrors:
    found: FormErrors = {}
    for part in reason.split("; "):
        part = part.strip()
        if part:
            field = _field_for(part, _SETTINGS_FIELDS if table is None else table)
            found.setdefault(field, []).append(part)
    return found


def texts_fields(code: str) -> list[tuple[str, str]]:
    table: list[tuple[str, str]] = [
        (f"appointment_types.{code}.label", "label"),
        (f"appointment_types.{code}.with_whom", "with_whom"),
        (f"appointment_types.{code}.instructions", "instructions"),
        ("appointment_types: type code", "code"),
        ("appointment_types: 'default'", "code"),
    ]
    for language in LANGUAGES:
        for part in TEMPLATE_PARTS:
            table.append((f"templates.{code}.{language}.{part}", f"tpl_{language}_{part}"))
            table.append(
                (f"template for type '{code}', {language}, {part}", f"tpl_{language}_{part}")
            )
            table.append((f"templates[{code}][{language}].{part}", f"tpl_{language}_{part}"))
    table.append(("phone", "general"))
    return table


def _text(form: Mapping[str, Any], name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def lines(value: str) -> list[str]:
    return [line.strip() for line in value.replace(",", "\n").splitlines() if line.strip()]


def settings_update(
    base: dict[str, Any], form: Mapping[str, Any], logo: str | None, remove_logo: bool
) -> tuple[dict[str, Any], FormErrors]:
    """The instellingen form on top of ``base`` (a config dump); errors of the form itself."""
    data = dict(base)
    errors: FormErrors = {}
    data["name"] = _text(form, "name")
    data["phone"] = _text(form, "phone") or None
    data["reminders_enabled"] = _text(form, "reminders_enabled") == "on"
    policy = _text(form, "send_policy") or "hours_before"
    if policy == "day_before_at":
        data["send"] = {"policy": "day_before_at", "time": _text(form, "send_time") or "18:00"}
    else:
        hours_text = _text(form, "send_hours").replace(",", ".") or "24"
        try:
            hours = float(hours_text)
        except ValueError:
            errors.setdefault("send_hours", []).append("not_a_number")
            hours = 24.0
        data["send"] = {"policy": "hours_before", "hours": hours}
    if _text(form, "quiet_enabled") == "on":
        data["quiet_hours"] = {
            "start": _text(form, "quiet_start") or "21:00",
            "end": _text(form, "quiet_end") or "08:00",
        }
    else:
        data["quiet_hours"] = None
    data["channels"] = [c for c in ("email", "push") if _text(form, f"channel_{c}") == "on"]
    sender_email = _text(form, "sender_email")
    sender_name = _text(form, "sender_name")
    if sender_email or sender_name:
        data["sender"] = {"email": sender_email, "name": sender_name}
    else:
        data["sender"] = None
    branding = dict(base.get("branding") or {})
    branding["accent_color"] = _text(form, "accent_color") or "#1a6e5c"
    if remove_logo:
        branding["logo"] = None
    elif logo is not None:
        branding["logo"] = logo
    data["branding"] = branding
    return data, errors


def texts_update(base: dict[str, Any], form: Mapping[str, Any], code: str) -> dict[str, Any]:
    """The teksten form for one appointment type on top of ``base``."""
    data = dict(base)
    types = dict(data.get("appointment_types") or {})
    types[code] = {
        "label": _text(form, "label"),
        "with_whom": _text(form, "with_whom"),
        "instructions": _text(form, "instructions"),
    }
    data["appointment_types"] = types
    templates = {k: dict(v) for k, v in (data.get("templates") or {}).items()}
    own: dict[str, dict[str, str]] = {}
    for language in LANGUAGES:
        parts = {}
        for part in TEMPLATE_PARTS:
            value = form.get(f"tpl_{language}_{part}")
            if isinstance(value, str) and value.strip():
                parts[part] = value.replace("\r\n", "\n")
        if parts:
            own[language] = parts
    if own:
        templates[code] = own
    else:
        templates.pop(code, None)
    data["templates"] = templates
    return data


def meeting_rules_update(base: dict[str, Any], form: Mapping[str, Any]) -> dict[str, Any]:
    data = dict(base)
    data["meeting_rules"] = {
        "agenda_ids": lines(_text(form, "agenda_ids")),
        "appointment_type_codes": lines(_text(form, "appointment_type_codes")),
        "keywords": lines(_text(form, "keywords")),
    }
    return data


_IGNORED = {"version"}


def changed_fields(old: PracticeConfig | None, new: PracticeConfig) -> list[str]:
    """Dotted names of what changed, two levels deep (``appointment_types.C10``)."""
    before: dict[str, Any] = old.model_dump(mode="json") if old is not None else {}
    after: dict[str, Any] = new.model_dump(mode="json")
    changed: list[str] = []
    for key in after:
        if key in _IGNORED or before.get(key) == after[key]:
            continue
        a, b = before.get(key), after[key]
        if isinstance(a, dict) and isinstance(b, dict):
            subs = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            changed.extend(f"{key}.{k}" for k in subs)
        else:
            changed.append(key)
    return changed


_HEX = re.compile(r"^#[0-9a-fA-F]{6}$")
