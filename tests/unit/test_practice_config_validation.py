"""Practice configs: every kind of invalid config is refused with a reason an admin can act on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from aiokafka import ConsumerRecord

from schemas.models import PracticeConfig
from services.common.practice_config import (
    ConfigRejected,
    practice_config_table,
    validate_for_table,
    validate_practice_config,
)
from services.common.settings import KafkaSettings
from services.domain.codec import DecodeError, encode

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples"


def valid(**changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "practice_id": "01999001",
        "name": "Huisartsenpraktijk De Linde",
        "phone": "020-1234567",
        "reminders_enabled": True,
        "timezone": "Europe/Amsterdam",
        "send": {"policy": "hours_before", "hours": 24},
        "quiet_hours": {"start": "21:00", "end": "08:00"},
        "channels": ["email", "push"],
        "sender": {"email": "herinnering@delinde.example.org", "name": "De Linde"},
        "preferences_url": "https://portaal.example.org/voorkeuren",
        "appointment_types": {
            "C10": {"label": "Consult van 10 minuten", "with_whom": "de huisarts"},
            "OOR": {"label": "Oren uitspuiten", "with_whom": "de assistent"},
        },
        "meeting_rules": {"agenda_ids": ["AG-OVERLEG"], "appointment_type_codes": ["MDO"]},
        "templates": {"default": {"nl": {"subject": "Afspraak {{ date_text }}"}}},
        "version": 3,
    }
    data.update(changes)
    return data


def rejected(data: Any) -> str:
    with pytest.raises(ConfigRejected) as caught:
        validate_practice_config(data)
    reason = caught.value.reason
    assert "\n" not in reason  # one line
    return reason


def test_a_valid_config_passes_as_dict_bytes_and_model() -> None:
    config = validate_practice_config(valid())
    assert config.version == 3
    assert validate_practice_config(encode(config)) == config
    assert validate_practice_config(config) == config


# Each kind of invalid config, with the words the administrator gets.
INVALID: list[tuple[str, dict[str, Any], str]] = [
    (
        "phone missing while reminders are on",
        valid(phone=None),
        "phone is required when reminders are on: every reminder tells the patient to phone "
        "the practice for urgent matters",
    ),
    (
        "phone that is not a number",
        valid(phone="bel ons"),
        "phone must be a telephone number such as 020-1234567",
    ),
    (
        "unknown time zone",
        valid(timezone="Europe/Amsterdm"),
        "unknown time zone 'Europe/Amsterdm'; use an IANA name such as Europe/Amsterdam",
    ),
    (
        "unknown send policy",
        valid(send={"policy": "day_before", "time": "18:00"}),
        "send.policy must be one of 'hours_before', 'day_before_at' (found 'day_before')",
    ),
    (
        "impossible time",
        valid(send={"policy": "day_before_at", "time": "25:00"}),
        'send.time must be a time such as "18:00"',
    ),
    (
        "time as a number (unquoted 18:00 in YAML 1.1)",
        valid(send={"policy": "day_before_at", "time": 1080}),
        'send.time: write the time as text "HH:MM", such as "18:00"',
    ),
    (
        "zero hours before",
        valid(send={"policy": "hours_before", "hours": 0}),
        "send.hours: Input should be greater than 0",
    ),
    (
        "send without policy",
        valid(send={"hours": 12}),
        "send needs a policy: 'hours_before' or 'day_before_at'",
    ),
    (
        "empty quiet hours",
        valid(quiet_hours={"start": "21:00", "end": "21:00"}),
        "quiet_hours start and end are equal; use null for no quiet hours",
    ),
    (
        "unknown channel",
        valid(channels=["email", "sms"]),
        "channels.1: value must be 'email' or 'push'",
    ),
    ("channel twice", valid(channels=["email", "email"]), "channels lists a channel twice"),
    (
        "no channel while reminders are on",
        valid(channels=[]),
        "channels is empty while reminders are on",
    ),
    (
        "invalid sender e-mail",
        valid(sender={"email": "praktijk@", "name": "De Linde"}),
        "sender.email: value is not a valid email address",
    ),
    (
        "no sender for e-mail reminders",
        valid(sender=None),
        "sender (email, name) is required when e-mail reminders are on",
    ),
    (
        "preferences link without scheme",
        valid(preferences_url="portaal.example.org"),
        "preferences_url must be a web address starting with https://",
    ),
    (
        "unknown top-level field",
        valid(reminder_enabled=True),
        "unknown field 'reminder_enabled' (check the spelling); allowed here: practice_id, name",
    ),
    (
        "unknown template part",
        valid(templates={"default": {"nl": {"footer": "x"}}}),
        "unknown field 'templates.default.nl.footer' (check the spelling); allowed here: "
        "subject, text, html, push_title, push_body",
    ),
    (
        "unknown language",
        valid(templates={"default": {"fr": {"text": "x"}}}),
        "templates.default.fr: key must be 'nl' or 'en'",
    ),
    (
        "template that does not compile",
        valid(templates={"default": {"nl": {"subject": "{{ date_text"}}}),
        "templates.default.nl.subject: line 1: unexpected end of template",
    ),
    (
        "template with an unknown name",
        valid(templates={"C10": {"en": {"text": "Dear {{ patient_name }}"}}}),
        "templates.C10.en.text: line 1: unknown name 'patient_name'",
    ),
    (
        "template reaching outside its context",
        valid(templates={"C10": {"nl": {"html": "{{ label.__class__ }}"}}}),
        "templates.C10.nl.html: line 1: '__class__' reaches outside the template's context",
    ),
    (
        "template for an unknown type",
        valid(templates={"C11": {"nl": {"text": "x"}}}),
        "templates has texts for type 'C11', which is not in appointment_types",
    ),
    (
        "appointment type without label",
        valid(appointment_types={"C10": {"with_whom": "de huisarts"}}),
        "appointment_types.C10.label is required",
    ),
    (
        "type code 'default'",
        valid(appointment_types={"default": {"label": "x"}}),
        "appointment_types: 'default' is reserved",
    ),
    (
        "meeting rules as a string",
        valid(meeting_rules={"keywords": "MDO"}),
        "meeting_rules.keywords must be a list",
    ),
    (
        "one-letter meeting keyword",
        valid(meeting_rules={"keywords": ["a"]}),
        "meeting_rules.keywords.0: String should have at least 2 characters",
    ),
    (
        "unknown meeting rule",
        valid(meeting_rules={"agendas": ["AG-1"]}),
        "unknown field 'meeting_rules.agendas' (check the spelling); allowed here: agenda_ids, "
        "appointment_type_codes, keywords",
    ),
    (
        "remind-only type that is a meeting",
        valid(remind_only_types=["C10", "MDO"]),
        "type 'MDO' is both in remind_only_types and in meeting_rules.appointment_type_codes",
    ),
    (
        "remind-only type without text",
        valid(remind_only_types=["C10", "C01"]),
        "remind_only_types lists 'C01', which has no entry in appointment_types",
    ),
    (
        "empty remind-only list while on",
        valid(remind_only_types=[]),
        "remind_only_types is empty, so no appointment would ever be reminded",
    ),
    (
        "practice id with a space",
        valid(practice_id="0199 9001"),
        "practice_id must be 1-64 letters, digits",
    ),
    (
        "practice id as a number",
        valid(practice_id=1999001),
        'practice_id must be text (put quotes around numbers such as "01999001")',
    ),
    ("name missing", {"practice_id": "01999001"}, "name is required"),
    (
        "switch that is not a boolean",
        valid(reminders_enabled="misschien"),
        "reminders_enabled must be true or false",
    ),
    ("name on two lines", valid(name="De\nLinde"), "name must be a single line of text"),
    (
        "template that divides by zero",
        valid(templates={"default": {"nl": {"subject": "{{ 1 is divisibleby 0 }}"}}}),
        "templates.default.nl.subject: fails to render: integer modulo by zero",
    ),
]


@pytest.mark.parametrize(("kind", "data", "reason"), INVALID, ids=[k for k, _, _ in INVALID])
def test_each_kind_of_invalid_config_is_rejected_with_its_reason(
    kind: str, data: dict[str, Any], reason: str
) -> None:
    assert reason in rejected(data)


def test_reasons_never_echo_values() -> None:
    reason = rejected(valid(phone="06 bel mij niet", sender={"email": "x@", "name": "n"}))
    assert "bel mij" not in reason
    assert "x@" not in reason.replace("sender.email", "")


def test_several_problems_are_reported_together() -> None:
    reason = rejected(valid(timezone="Mars/Base", channels=["fax"]))
    assert "unknown time zone" in reason and "channels.0" in reason


def test_not_json_and_not_a_mapping() -> None:
    assert rejected(b"{not json").startswith("the config is not valid JSON")
    assert "a practice config is a mapping of fields" in rejected(["a", "b"])


def test_switched_off_config_needs_no_phone_or_sender() -> None:
    config = validate_practice_config(
        {"practice_id": "01999003", "name": "Huisartsenpraktijk Zeezicht"}
    )
    assert config.reminders_enabled is False


def test_model_copy_is_validated_again() -> None:
    config = validate_practice_config(valid(reminders_enabled=False, phone=None))
    switched = config.model_copy(update={"reminders_enabled": True})
    assert "phone is required" in rejected(switched)


def test_table_hook_raises_decode_error_with_the_reason() -> None:
    config = PracticeConfig.model_validate(valid(reminders_enabled=False))
    assert validate_for_table(config) == config
    # as the table's decoder builds it: the model's own checks pass, a cross-check fails
    broken = PracticeConfig.model_validate(
        valid(reminders_enabled=False, templates={"C99": {"nl": {"text": "x"}}})
    )
    with pytest.raises(DecodeError) as caught:
        validate_for_table(broken)
    assert caught.value.reason == "invalid_config"
    assert "templates has texts for type 'C99'" in caught.value.detail


def test_table_hook_refuses_a_template_that_divides_by_zero() -> None:
    # The config tables of every service run this hook on each record they read.
    broken = PracticeConfig.model_validate(
        valid(templates={"C10": {"en": {"push_body": "{{ 7 is divisibleby 0 }}"}}})
    )
    with pytest.raises(DecodeError) as caught:
        validate_for_table(broken)
    assert caught.value.reason == "invalid_config"
    assert "templates.C10.en.push_body: fails to render" in caught.value.detail


async def test_table_rewords_model_errors_for_the_dlq() -> None:
    seen: list[DecodeError] = []

    async def downstream(record: Any, error: DecodeError) -> None:
        seen.append(error)

    table = practice_config_table(KafkaSettings(), on_invalid=downstream)
    value = json.dumps(valid(timezone="Europe/Amsterdm")).encode()
    record: ConsumerRecord[bytes, bytes] = ConsumerRecord(
        topic="practice.config.v1",
        partition=0,
        offset=7,
        timestamp=0,
        timestamp_type=0,
        key=b"01999001",
        value=value,
        checksum=None,
        serialized_key_size=8,
        serialized_value_size=len(value),
        headers=(),
    )
    on_invalid = table.follower._on_invalid
    assert on_invalid is not None
    await on_invalid(record, DecodeError("invalid", "timezone: Value error, ..."))
    assert seen[0].reason == "invalid_config"
    assert "unknown time zone 'Europe/Amsterdm'" in seen[0].detail


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("practice-*.yaml")), ids=lambda p: p.name)
def test_example_configs_are_valid(path: Path) -> None:
    from services.cli.config_cmd import load_document

    config = validate_practice_config(load_document(str(path)))
    assert config.practice_id.isdigit() and len(config.practice_id) == 8
    assert config.practice_id in path.name


def test_example_with_an_mdo_as_a_meeting_and_the_practice_texts() -> None:
    from services.cli.config_cmd import load_document

    config = validate_practice_config(
        load_document(str(EXAMPLES / "practice-01054321-de-linde.yaml"))
    )
    assert "MDO" in config.meeting_rules.appointment_type_codes
    withs = {t.with_whom for t in config.appointment_types.values()}
    assert {"de huisarts", "de assistent", "de praktijkondersteuner (POH)"} <= withs
    labels = " ".join(t.label for t in config.appointment_types.values()).lower()
    assert "10 minuten" in labels and "dubbel consult" in labels
    assert "oren uitspuiten" in labels and "bloeddruk" in labels
