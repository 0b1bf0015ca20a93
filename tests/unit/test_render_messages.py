"""Reminder texts: built-in defaults, practice overrides, dates in words, minimal data."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from schemas.models import Appointment, AppointmentType, PracticeConfig
from services.domain.render import (
    RenderedReminder,
    TemplateRejected,
    check_templates,
    render_reminder,
    sample_appointment,
)

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)  # a Monday; the sample is Tuesday 1 December
URGENT_NL = "Heeft u een spoedeisende vraag? Bel dan de praktijk: 020-1234567."
URGENT_EN = "Urgent question? Call the practice: 020-1234567."


def config(**changes: Any) -> PracticeConfig:
    data: dict[str, Any] = {
        "practice_id": "01999001",
        "name": "Huisartsenpraktijk De Linde",
        "phone": "020-1234567",
        "reminders_enabled": True,
        "sender": {"email": "herinnering@delinde.example.org", "name": "De Linde"},
        "preferences_url": "https://portaal.example.org/01999001/voorkeuren",
        "appointment_types": {
            "C10": {
                "label": "Consult van 10 minuten",
                "with_whom": "de huisarts",
                "instructions": "Neem uw medicijnlijst mee.",
            },
            "OOR": {"label": "Oren uitspuiten", "with_whom": "de assistent"},
        },
    }
    data.update(changes)
    return PracticeConfig.model_validate(data)


def appointment(cfg: PracticeConfig, code: str = "C10", **changes: Any) -> Appointment:
    base = sample_appointment(cfg, code, NOW)
    return base.model_copy(update=changes) if changes else base


def everything(r: RenderedReminder) -> str:
    return "\n".join([r.email.subject, r.email.text, r.email.html, r.push.title, r.push.body])


def test_sample_is_the_next_working_day_at_half_past_nine() -> None:
    cfg = config()
    start = sample_appointment(cfg, "C10", NOW).start
    assert start.isoformat() == "2026-12-01T09:30:00+01:00"
    friday = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)
    assert sample_appointment(cfg, "C10", friday).start.isoformat() == "2026-12-07T09:30:00+01:00"


def test_dutch_default_has_the_date_in_words_and_the_practice_texts() -> None:
    cfg = config()
    r = render_reminder(cfg, appointment(cfg), "nl")
    assert r.email.subject == "Herinnering: afspraak op dinsdag 1 december 2026 om 09:30"
    assert "Wanneer: dinsdag 1 december 2026 om 09:30" in r.email.text
    assert "Wat: Consult van 10 minuten" in r.email.text
    assert "Bij: de huisarts (A. Voorbeeld)" in r.email.text
    assert "Neem uw medicijnlijst mee." in r.email.text
    assert r.push.title == "Herinnering afspraak Huisartsenpraktijk De Linde"
    assert r.push.body.startswith(
        "dinsdag 1 december 2026 om 09:30: Consult van 10 minuten bij de huisarts."
    )
    assert '<html lang="nl">' in r.email.html
    assert "dinsdag 1 december 2026 om 09:30" in r.email.html


def test_english_default_has_the_date_in_english_words() -> None:
    cfg = config()
    r = render_reminder(cfg, appointment(cfg), "en")
    assert r.email.subject == "Reminder: appointment on Tuesday 1 December 2026 at 09:30"
    assert "When: Tuesday 1 December 2026 at 09:30" in r.email.text
    assert r.push.body.startswith("Tuesday 1 December 2026 at 09:30: Consult van 10 minuten")
    assert '<html lang="en">' in r.email.html


def test_unknown_language_falls_back_to_dutch() -> None:
    cfg = config()
    r = render_reminder(cfg, appointment(cfg), "fr")
    assert URGENT_NL in r.email.text


@pytest.mark.parametrize(("language", "urgent"), [("nl", URGENT_NL), ("en", URGENT_EN)])
def test_urgent_line_is_in_text_html_and_push_but_not_the_subject(
    language: str, urgent: str
) -> None:
    cfg = config()
    r = render_reminder(cfg, appointment(cfg), language)
    assert urgent in r.email.text
    assert f"<p><strong>{urgent}</strong></p>" in r.email.html
    assert r.push.body.endswith(urgent)
    assert "020-1234567" not in r.email.subject


def test_urgent_line_stays_when_the_practice_writes_every_part() -> None:
    own = {
        "subject": "Afspraak",
        "text": "Tot morgen.",
        "html": "<p>Tot morgen.</p>",
        "push_title": "Afspraak",
        "push_body": "Tot morgen.",
    }
    cfg = config(templates={"default": {"nl": own, "en": own}})
    for language, urgent in (("nl", URGENT_NL), ("en", URGENT_EN)):
        r = render_reminder(cfg, appointment(cfg), language)
        assert r.email.text.startswith("Tot morgen.\n\n" + urgent)
        assert urgent in r.email.html
        assert r.push.body == f"Tot morgen.\n{urgent}"  # on a line of its own (issue 12)


def test_time_is_in_the_practice_time_zone_across_dst() -> None:
    cfg = config()
    summer = appointment(cfg, start=datetime(2026, 7, 14, 7, 15, tzinfo=UTC))
    r = render_reminder(cfg, summer, "nl")
    assert "dinsdag 14 juli 2026 om 09:15" in r.email.text
    other = config(timezone="America/Curacao")
    r = render_reminder(other, summer, "nl")
    assert "dinsdag 14 juli 2026 om 03:15" in r.email.text


def test_never_the_his_display_patient_id_or_bsn() -> None:
    cfg = config()
    appt = appointment(
        cfg,
        "X99",
        appointment_type=AppointmentType(code="X99", display="buikpijn sinds 3 dagen"),
    )
    r = render_reminder(cfg, appt, "nl")
    text = everything(r)
    assert "buikpijn" not in text
    assert "preview-patient" not in text
    assert "Wat: uw afspraak" in r.email.text  # the neutral label
    r = render_reminder(cfg, appt, "en")
    assert "What: your appointment" in r.email.text


def test_templates_cannot_name_the_patient() -> None:
    for name in ("patient", "patient_id", "bsn", "comment", "appointment", "email"):
        cfg = config(templates={"default": {"nl": {"text": "{{ " + name + " }}"}}})
        with pytest.raises(TemplateRejected, match=f"unknown name '{name}'"):
            check_templates(cfg)


def test_lookup_order_type_then_default_then_builtin() -> None:
    cfg = config(
        templates={
            "default": {"nl": {"subject": "Standaard {{ label }}", "push_title": "Praktijk"}},
            "OOR": {"nl": {"subject": "Oren: {{ date_text }}"}},
        }
    )
    oor = render_reminder(cfg, appointment(cfg, "OOR"), "nl")
    assert oor.email.subject == "Oren: dinsdag 1 december 2026"
    assert oor.push.title == "Praktijk"  # from default
    assert oor.email.text.startswith("Beste patiënt,")  # built-in
    c10 = render_reminder(cfg, appointment(cfg, "C10"), "nl")
    assert c10.email.subject == "Standaard Consult van 10 minuten"


def test_english_patient_never_gets_dutch_practice_text() -> None:
    cfg = config(templates={"default": {"nl": {"subject": "Eigen Nederlandse tekst"}}})
    r = render_reminder(cfg, appointment(cfg), "en")
    assert r.email.subject == "Reminder: appointment on Tuesday 1 December 2026 at 09:30"


def test_subject_and_push_are_single_lines() -> None:
    cfg = config(
        templates={
            "default": {
                "nl": {
                    "subject": "Afspraak\r\nBcc: iemand@example.org\n{{ label }}",
                    "push_title": "Een\ntwee",
                    "push_body": "regel 1\r\nregel 2",
                }
            }
        }
    )
    r = render_reminder(cfg, appointment(cfg), "nl")
    assert r.email.subject == "Afspraak Bcc: iemand@example.org Consult van 10 minuten"
    assert "\n" not in r.push.title and "\r" not in r.push.body
    assert r.push.body.startswith("regel 1 regel 2\n")  # the urgent line on its own line


def test_html_autoescapes_values_and_text_does_not() -> None:
    cfg = config(
        appointment_types={"C10": {"label": "Consult <b>kort</b> & snel", "with_whom": "de arts"}}
    )
    r = render_reminder(cfg, appointment(cfg), "nl")
    assert "Consult &lt;b&gt;kort&lt;/b&gt; &amp; snel" in r.email.html
    assert "<b>kort</b>" not in r.email.html
    assert "Wat: Consult <b>kort</b> & snel" in r.email.text


def test_preferences_link_is_added_when_configured() -> None:
    cfg = config()
    r = render_reminder(cfg, appointment(cfg), "nl")
    url = "https://portaal.example.org/01999001/voorkeuren"
    assert f"Wijzigen of uitzetten: {url}" in r.email.text
    assert f'<a href="{url}">{url}</a>' in r.email.html
    bare = config(preferences_url=None)
    assert "Wijzigen" not in render_reminder(bare, appointment(bare), "nl").email.text


def test_no_reminder_without_a_phone_number() -> None:
    cfg = config(reminders_enabled=False, phone=None)
    with pytest.raises(TemplateRejected, match="no phone number"):
        render_reminder(cfg, appointment(cfg), "nl")


def test_practice_variables_render() -> None:
    cfg = config(
        templates={
            "C10": {
                "nl": {
                    "text": (
                        "{{ practice.name }} {{ practice.phone }} {{ weekday }} {{ time_text }} "
                        "{{ location }} {{ practitioner }} {{ preferences_url }} "
                        "{{ label|upper }} {% if instructions %}{{ instructions }}{% endif %}"
                    )
                }
            }
        }
    )
    check_templates(cfg)
    r = render_reminder(cfg, appointment(cfg), "nl")
    assert r.email.text.startswith(
        "Huisartsenpraktijk De Linde 020-1234567 dinsdag 09:30 Huisartsenpraktijk De Linde "
        "A. Voorbeeld https://portaal.example.org/01999001/voorkeuren CONSULT VAN 10 MINUTEN "
        "Neem uw medicijnlijst mee."
    )


def test_every_builtin_default_checks_and_renders() -> None:
    cfg = config()
    # The built-in texts go through the same sandbox checks as a practice's.
    from services.domain.render import PARTS, _builtin_source, _compiled

    for language in ("nl", "en"):
        for part in PARTS:
            assert not isinstance(_compiled(_builtin_source(part, language), part == "html"), str)
        r = render_reminder(cfg, appointment(cfg, "NONE"), language)
        assert r.email.text and r.push.body
