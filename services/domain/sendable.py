"""Can a practice config be sent? Every template, every type, every language, composed.

A config that validates must be sendable: otherwise every reminder of the practice (or
of one type) fails at 18:00 with ``invalid_header`` or ``payload_too_large``. So the
check at apply renders every template for every appointment type (and for a type
without an entry) in every language against a sample appointment, composes the real
MIME message and the real push payload, and refuses what would fail, naming the type,
the language and the part, in words a practice administrator can act on (practice-admin
shows the same text).
"""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from schemas.models import PracticeConfig
from services.domain.errors import SendError
from services.domain.mime import compose_email
from services.domain.push_message import MAX_PAYLOAD_BYTES, push_payload
from services.domain.render import (
    LANGUAGES,
    TemplateRejected,
    render_reminder,
    sample_appointment,
)

__all__ = ["check_sendable"]

_SAMPLE_NOW = datetime(2026, 11, 30, 12, 0, tzinfo=ZoneInfo("UTC"))
_UNLISTED = "__unlisted__"  # a type the HIS sends that has no entry in appointment_types
_SAMPLE_SENDER = "herinnering@praktijk.example.org"
_SAMPLE_PATIENT = "patient@example.org"
_SAMPLE_PHONE = "020-1234567"
_REASONS = {
    "invalid_header": "would not fit in an e-mail header",
    "invalid_sender": "has a sender address that cannot be used",
    "invalid_address": "has an address that cannot be used",
}


def _representatives(config: PracticeConfig) -> list[str]:
    """The types whose reminders differ in what could fail: every type with templates of
    its own, the type with the longest texts among those on the default templates (the
    rendered size grows with the texts put in; the texts are plain single lines by the
    model's rules), and a type the practice did not list. Checking every type would cost
    a composed message per type and language in every service that loads the config."""
    own = [code for code in config.appointment_types if code in config.templates]
    shared = [code for code in config.appointment_types if code not in config.templates]
    chosen = list(own)
    if shared:

        def size(code: str) -> int:
            text = config.appointment_types[code]
            return sum(
                len(t.encode("utf-8")) for t in (text.label, text.with_whom, text.instructions)
            )

        chosen.append(max(shared, key=size))
    chosen.append(_UNLISTED)
    return chosen


def check_sendable(config: PracticeConfig) -> None:
    """Raise TemplateRejected if a reminder of this practice could not be composed."""
    if not config.phone:
        # The texts are checked as they will be once a phone number is set (reminders
        # cannot be switched on without one).
        config = config.model_copy(update={"phone": _SAMPLE_PHONE})
    sender = config.sender
    for code in _representatives(config):
        appointment = sample_appointment(config, code, _SAMPLE_NOW)
        what = f"type '{code}'" if code != _UNLISTED else "a type not in appointment_types"
        for language in LANGUAGES:
            rendered = render_reminder(config, appointment, language)
            try:
                compose_email(
                    reminder_id=f"{config.practice_id}/preview/2026-12-01T08:30:00Z",
                    from_address=str(sender.email) if sender is not None else _SAMPLE_SENDER,
                    from_name=sender.name if sender is not None else config.name,
                    to=_SAMPLE_PATIENT,
                    subject=rendered.email.subject,
                    text=rendered.email.text,
                    html=rendered.email.html,
                    unsubscribe_url=config.preferences_url,
                    message_id_domain="praktijk.example.org",
                    date=_SAMPLE_NOW,
                )
            except SendError as exc:
                explained = _REASONS.get(exc.reason, f"cannot be sent ({exc.reason})")
                raise TemplateRejected(
                    f"the e-mail for {what} in {language} {explained}: {exc.detail}"
                ) from exc
            payload = push_payload(rendered.push.title, rendered.push.body, language)
            if len(payload) > MAX_PAYLOAD_BYTES:
                raise TemplateRejected(
                    f"the push message for {what} in {language} is {len(payload)} bytes; "
                    f"Web Push carries at most {MAX_PAYLOAD_BYTES}: shorten push_title or "
                    "push_body (or the type's label)"
                )
