"""The reminder e-mail written as bytes reads back as what was given, for any text.

compose_email writes the message itself (no EmailMessage, no generator); these check
that a receiving client (the e-mail package's parser) sees the same headers, parts and
bodies as the old composition gave, and that the wire form stays 7-bit within the line
limit. The fast paths (plain addresses, calendar UID/SEQUENCE lines) are checked
against the slow ones they stand in for.
"""

from __future__ import annotations

import base64
import email.policy
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from schemas.models import unsafe_text_problem
from services.domain.branding import LOGO_CID, Logo
from services.domain.errors import PermanentSendError
from services.domain.mime import (
    _SIMPLE_ADDRESS,
    ComposedMail,
    _base64_lines,
    _parse_address,
    _parse_address_fully,
    compose_email,
)
from services.notifier.calendar import _property_line, _uid_line

_PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
_WHEN = datetime(2026, 11, 30, 17, 0, tzinfo=UTC)
# Wide unicode: every plane Python can encode as UTF-8 (no lone surrogates).
_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=400)
# Header text as render_reminder hands it over: one line, runs of white space as one space
# (the e-mail package unfolds a header that way when it reads one back).
_LINE = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), max_size=120).map(
    lambda value: " ".join(value.split())
)


def _compose(
    subject: str, from_name: str, text: str, html: str, ics: bytes, logo: Logo | None
) -> ComposedMail:
    return compose_email(
        reminder_id="01234567/appt-1/2026-12-01T08:30:00Z",
        from_address="noreply@praktijk.example.org",
        from_name=from_name,
        to="patient.test@example.org",
        subject=subject,
        text=text,
        html=html,
        unsubscribe_url="https://beheer.example.org/u/abc",
        message_id_domain="reminders.example.org",
        date=_WHEN,
        calendar=ics,
        logo=logo,
    )


def _lines_as_sent(value: str) -> str:
    """What a text body reads back as: line ends unified, one at the end."""
    return "\n".join(v.decode("utf-8") for v in value.encode("utf-8").splitlines()) + "\n"


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    subject=_LINE,
    from_name=_LINE,
    text=_TEXT,
    html=_TEXT,
    ics=st.binary(max_size=2000),
    with_logo=st.booleans(),
)
def test_composed_bytes_read_back_as_given(
    subject: str, from_name: str, text: str, html: str, ics: bytes, with_logo: bool
) -> None:
    assume(unsafe_text_problem(subject) is None and unsafe_text_problem(from_name) is None)
    logo = Logo(_PNG, "png") if with_logo else None
    try:
        mail = _compose(subject, from_name, text, html, ics, logo)
    except PermanentSendError as exc:
        # Only a header the e-mail package would read differently is refused.
        assert exc.reason == "invalid_header"
        assume(False)
        return
    wire = mail.data
    assert wire.isascii()
    assert all(len(line) <= 998 for line in wire.split(b"\r\n"))
    assert b"\n" not in wire.replace(b"\r\n", b"")  # CRLF only
    msg = mail.parsed()
    assert len(msg.get_all("From") or []) == 1 and len(msg.get_all("Subject") or []) == 1
    assert msg["Subject"] == subject
    # The From line is the e-mail package's own (as the old EmailMessage wrote it), and
    # reads back as the name given (a long non-ASCII name is split into encoded words
    # mid-word, where the reader may see a space: RFC 2047 6.2 says to drop it).
    old = EmailMessage()
    old["From"] = Address(from_name, "noreply", "praktijk.example.org")
    old_from = old.as_bytes(policy=email.policy.SMTP).split(b"\r\n\r\n")[0]
    assert wire.startswith(old_from + b"\r\nTo: ")
    display_name = msg["From"].addresses[0].display_name
    assert "".join(display_name.split()) == "".join(from_name.split())
    assert msg["From"].addresses[0].addr_spec == "noreply@praktijk.example.org"
    assert msg["To"].addresses[0].addr_spec == "patient.test@example.org"
    assert msg["Message-ID"] == mail.message_id
    assert msg["List-Unsubscribe"] == "<https://beheer.example.org/u/abc>"
    assert msg["Date"].datetime == _WHEN
    related = ["multipart/related", "text/html", "image/png"] if with_logo else ["text/html"]
    assert [p.get_content_type() for p in msg.walk()] == [
        "multipart/mixed",
        "multipart/alternative",
        "text/plain",
        *related,
        "text/calendar",
    ]
    assert not msg.defects and not any(p.defects for p in msg.walk())
    plain, rich = msg.get_body(("plain",)), msg.get_body(("html",))
    assert plain is not None and rich is not None
    assert plain.get_content().replace("\r\n", "\n") == _lines_as_sent(text)
    assert rich.get_content().replace("\r\n", "\n") == _lines_as_sent(html)
    [calendar] = [p for p in msg.walk() if p.get_content_type() == "text/calendar"]
    assert calendar.get_payload(decode=True) == ics
    assert calendar.get_filename() == "afspraak.ics"
    assert calendar.get_param("method") == "PUBLISH"
    if with_logo:
        [image] = [p for p in msg.walk() if p.get_content_type() == "image/png"]
        assert image.get_payload(decode=True) == _PNG
        assert image["Content-ID"] == f"<{LOGO_CID}>"
        assert image.get_content_disposition() == "inline"


def test_the_logo_part_is_standard_base64() -> None:
    mail = _compose("Uw afspraak", "De Linde", "x", "<p>x</p>", b"ics", Logo(_PNG, "png"))
    [image] = [p for p in mail.parsed().walk() if p.get_content_type() == "image/png"]
    body = image.get_payload()
    assert isinstance(body, str)
    assert base64.b64decode(body) == _PNG
    assert all(len(line) <= 76 for line in body.splitlines())


def test_without_calendar_or_logo_the_message_is_multipart_alternative() -> None:
    mail = compose_email(
        reminder_id="r",
        from_address="noreply@praktijk.example.org",
        from_name="De Linde",
        to="patient@example.org",
        subject="Uw afspraak",
        text="Tot morgen.",
        html="<p>Tot morgen.</p>",
        unsubscribe_url=None,
        message_id_domain="reminders.example.org",
    )
    msg = email.message_from_bytes(mail.data, policy=email.policy.default)
    assert [p.get_content_type() for p in msg.walk()] == [
        "multipart/alternative",
        "text/plain",
        "text/html",
    ]
    assert (mail.sender, mail.recipient) == ("noreply@praktijk.example.org", "patient@example.org")


def _outcome(value: str, *, full: bool) -> tuple[str, str, str] | str:
    parse = _parse_address_fully if full else _parse_address
    try:
        address = parse(value, "invalid_address")
    except PermanentSendError as exc:
        return exc.reason
    return (address.username, address.domain, address.addr_spec)


@settings(max_examples=100, deadline=None)
@given(st.from_regex(_SIMPLE_ADDRESS, fullmatch=True))
def test_plain_addresses_read_the_same_without_the_parser(value: str) -> None:
    assert _outcome(value, full=False) == _outcome(value, full=True)


@pytest.mark.parametrize(
    "value",
    [
        "patient@example.org",
        "a.b+c@sub.example.org",
        "o'brien@example.ie",
        "x" * 65 + "@example.org",
        "someone@-bad-.example",
        "someone@localhost",
        "patient@EXAMPLE.org",
    ],
)
def test_plain_addresses_examples(value: str) -> None:
    # The fast path (when it matches) and the full parser agree.
    assert _outcome(value, full=False) == _outcome(value, full=True)


@pytest.mark.parametrize(
    "uid",
    ["0123456789abcdef0123456789abcdef@reminders.example.org", "a@b", "x" * 70, "x" * 71],
)
def test_uid_line_is_what_icalendar_writes(uid: str) -> None:
    assert _uid_line(uid) == _property_line("uid", uid)


@pytest.mark.parametrize("sequence", [0, 7, 2**31 - 1])
def test_sequence_line_is_what_icalendar_writes(sequence: int) -> None:
    assert b"SEQUENCE:%d\r\n" % sequence == _property_line("sequence", sequence)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_base64_parts_are_what_the_standard_library_writes(data: bytes) -> None:
    # The calendar and logo parts: lines of 76 characters, CRLF.
    assert _base64_lines(data) == base64.encodebytes(data).replace(b"\n", b"\r\n")
