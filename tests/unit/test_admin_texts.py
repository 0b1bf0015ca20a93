"""practice-admin's words: every text in both languages, every outcome reason explained."""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

from schemas.models import OutcomeReason
from services.practice_admin import forms
from services.practice_admin.i18n import REASONS, TEXTS

TEMPLATES = Path(__file__).resolve().parents[2] / "services" / "practice_admin" / "templates"


def test_dutch_and_english_have_the_same_texts() -> None:
    assert set(TEXTS["nl"]) == set(TEXTS["en"])
    assert set(REASONS["nl"]) == set(REASONS["en"])


def test_every_outcome_reason_has_plain_words() -> None:
    assert set(get_args(OutcomeReason)) <= set(REASONS["nl"])
    assert REASONS["nl"]["no_consent"] == "geen toestemming van de patiënt"
    assert REASONS["nl"]["patient_discussion"] == "overleg over de patiënt: niet verstuurd"


def test_every_literal_text_key_in_the_templates_exists() -> None:
    used: set[str] = set()
    for template in TEMPLATES.glob("*.html"):
        used |= set(re.findall(r"\bt\('([a-z0-9_-]+)'\)", template.read_text(encoding="utf-8")))
    assert used and used <= set(TEXTS["nl"]), sorted(used - set(TEXTS["nl"]))


def test_reasons_land_beside_the_field_they_name() -> None:
    reason = (
        "phone is required when reminders are on: every reminder tells the patient to phone "
        "the practice for urgent matters; sender.email: value is not a valid email address"
    )
    errors = forms.errors_by_field(reason)
    assert list(errors) == ["phone", "sender_email"]
    assert forms.errors_by_field("something else entirely") == {
        "general": ["something else entirely"]
    }


def test_changed_fields_names_what_changed_two_levels_deep() -> None:
    from tests.web.admin_support import practice

    old = practice()
    new = practice(
        reminders_enabled=False,
        appointment_types={"C10": {"label": "Anders"}},
        version=4,
    )
    assert forms.changed_fields(old, new) == ["reminders_enabled", "appointment_types.C10"]
