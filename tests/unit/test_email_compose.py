"""compose_email: headers, deterministic Message-ID, both parts, no header injection."""

from __future__ import annotations

import email
import email.header
import email.policy
import hashlib
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import pytest

from services.domain.errors import PermanentSendError
from services.notifier.email import ComposedMail, compose_email, message_id_for

REMINDER_ID = "01234567/appt-42/2026-12-01T08:30:00Z"


def _compose(**overrides: Any) -> ComposedMail:
    args: dict[str, Any] = {
        "reminder_id": REMINDER_ID,
        "from_address": "noreply@praktijk-delinde.example",
        "from_name": "Huisartsenpraktijk De Linde",
        "to": "patient.test@example.org",
        "subject": "Herinnering: uw afspraak op dinsdag 1 december 2026 om 09:30",
        "text": "Beste patiënt,\nU heeft morgen een afspraak.\n",
        "html": "<p>Beste patiënt,</p><p>U heeft morgen een afspraak.</p>",
        "unsubscribe_url": "https://portaal.example.org/voorkeuren/afmelden?t=abc123",
        "message_id_domain": "reminders.example.org",
    }
    args.update(overrides)
    return compose_email(**args)


def _roundtrip(msg: ComposedMail) -> EmailMessage:
    """What a mail server would see: the SMTP wire form, parsed again."""
    raw = msg.data
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def test_headers_present_and_correct() -> None:
    msg = _roundtrip(_compose(date=datetime(2026, 11, 30, 17, 0, tzinfo=UTC)))
    assert msg["From"].addresses[0].addr_spec == "noreply@praktijk-delinde.example"
    assert msg["From"].addresses[0].display_name == "Huisartsenpraktijk De Linde"
    assert msg["To"].addresses[0].addr_spec == "patient.test@example.org"
    assert msg["Subject"] == "Herinnering: uw afspraak op dinsdag 1 december 2026 om 09:30"
    assert msg["Date"].datetime == datetime(2026, 11, 30, 17, 0, tzinfo=UTC)
    assert msg["Auto-Submitted"] == "auto-generated"
    assert msg["List-Unsubscribe"] == "<https://portaal.example.org/voorkeuren/afmelden?t=abc123>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["MIME-Version"] == "1.0"


def test_date_defaults_to_now() -> None:
    msg = _roundtrip(_compose())
    assert abs((msg["Date"].datetime - datetime.now(UTC)).total_seconds()) < 60


def test_message_id_is_derived_from_the_reminder_id() -> None:
    expected_hash = hashlib.sha256(REMINDER_ID.encode()).hexdigest()[:40]
    first = _compose()
    second = _compose(subject="Other subject", text="other", html="<p>other</p>")
    assert first.message_id == f"<{expected_hash}@reminders.example.org>"
    assert first.message_id == second.message_id
    assert _roundtrip(first)["Message-ID"] == first.message_id
    assert message_id_for(REMINDER_ID, "reminders.example.org") == first.message_id
    assert _compose(reminder_id=REMINDER_ID + "x").message_id != first.message_id


def test_text_and_html_alternatives_in_utf8() -> None:
    msg = _roundtrip(_compose())
    assert msg.get_content_type() == "multipart/alternative"
    plain = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert plain is not None and html is not None
    assert plain.get_content_charset() == "utf-8"
    assert html.get_content_charset() == "utf-8"
    # The wire form has CRLF line ends; quoted-printable decoding keeps them.
    text = plain.get_content().replace("\r\n", "\n")
    assert text == "Beste patiënt,\nU heeft morgen een afspraak.\n"
    assert "<p>Beste patiënt,</p>" in html.get_content()
    # 7-bit clean on the wire, whatever the server supports.
    assert all(b < 128 for b in _compose().data)


def test_unicode_display_name_is_encoded_and_survives() -> None:
    name = "Huisartsenpraktijk ‘t Gooi, Zuid — Dr. Özdemir & Ĳsselmeer"
    msg = _compose(from_name=name, subject="Uw afspraak — café ☕")
    wire = msg.data
    from_line = next(line for line in wire.split(b"\r\n") if line.startswith(b"From:"))
    assert b"=?utf-8?" in from_line  # RFC 2047 encoded, not raw 8-bit
    # A long name spans several encoded words, split mid-word; RFC 2047 section 6.2 says
    # the whitespace between adjacent encoded words is dropped (email.header does that).
    legacy = email.message_from_bytes(wire, policy=email.policy.compat32)
    decoded = str(email.header.make_header(email.header.decode_header(legacy["From"])))
    assert decoded == f"{name} <noreply@praktijk-delinde.example>"
    back = _roundtrip(msg)
    assert back["From"].addresses[0].addr_spec == "noreply@praktijk-delinde.example"
    assert back["Subject"] == "Uw afspraak — café ☕"


def test_short_unicode_display_name_roundtrips() -> None:
    back = _roundtrip(_compose(from_name="Praktijk Dr. Özdemir & Ĳsselmeer"))
    assert back["From"].addresses[0].display_name == "Praktijk Dr. Özdemir & Ĳsselmeer"


def test_long_unsubscribe_url_is_not_mangled() -> None:
    url = "https://portaal.example.org/voorkeuren/afmelden?token=" + "A1b2" * 60
    wire = _compose(unsubscribe_url=url).data
    assert f"List-Unsubscribe: <{url}>\r\n".encode() in wire


def test_no_unsubscribe_headers_without_url() -> None:
    msg = _roundtrip(_compose(unsubscribe_url=None))
    assert msg["List-Unsubscribe"] is None
    assert msg["List-Unsubscribe-Post"] is None


def test_plain_http_url_listed_without_one_click() -> None:
    msg = _roundtrip(_compose(unsubscribe_url="http://localhost:8080/prefs"))
    assert msg["List-Unsubscribe"] == "<http://localhost:8080/prefs>"
    assert msg["List-Unsubscribe-Post"] is None


@pytest.mark.parametrize(
    "field",
    ["subject", "from_name", "from_address", "to", "unsubscribe_url", "message_id_domain"],
)
@pytest.mark.parametrize("evil", ["\r\nBcc: x@evil.example", "\nX-Evil: 1", "a\rb", "a\0b"])
def test_header_injection_is_rejected(field: str, evil: str) -> None:
    base = {
        "subject": "Herinnering",
        "from_name": "Praktijk",
        "from_address": "noreply@praktijk.example",
        "to": "patient@example.org",
        "unsubscribe_url": "https://portaal.example.org/prefs",
        "message_id_domain": "reminders.example.org",
    }
    with pytest.raises(PermanentSendError) as info:
        _compose(**{field: base[field] + evil})
    assert info.value.reason == "invalid_header"


@pytest.mark.parametrize("sep", ["\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\u2029"])
def test_other_line_separators_are_rejected(sep: str) -> None:
    # str.splitlines() breaks on these; the email package folds with it.
    with pytest.raises(PermanentSendError) as info:
        _compose(subject=f"Herinnering{sep}Bcc: x@evil.example")
    assert info.value.reason == "invalid_header"


@pytest.mark.parametrize(
    "address",
    [
        "",
        "not-an-address",
        "@example.org",
        "someone@",
        "two@at@example.org",
        "spa ce@example.org",
        "someone@localhost",
        "someone@-bad-.example",
        "someone@[192.0.2.1]",
        "Name <someone@example.org>",
        "someone@example..org",
        "ünïcode@example.org",
        "x" * 65 + "@example.org",
    ],
)
def test_invalid_recipient_address(address: str) -> None:
    with pytest.raises(PermanentSendError) as info:
        _compose(to=address)
    assert info.value.reason == "invalid_address"
    assert address not in info.value.detail or not address  # no personal data in detail


def test_invalid_sender_address_has_its_own_reason() -> None:
    with pytest.raises(PermanentSendError) as info:
        _compose(from_address="no-domain")
    assert info.value.reason == "invalid_sender"


def test_idn_domain_is_converted_to_punycode() -> None:
    msg = _roundtrip(_compose(to="patient@bücher.example"))
    assert msg["To"].addresses[0].addr_spec == "patient@xn--bcher-kva.example"


@pytest.mark.parametrize(
    "url", ["javascript:alert(1)", "https://x.example/a b", "ftp://x.example/"]
)
def test_bad_unsubscribe_url(url: str) -> None:
    with pytest.raises(PermanentSendError) as info:
        _compose(unsubscribe_url=url)
    assert info.value.reason == "invalid_header"
