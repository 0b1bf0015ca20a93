"""Composing a reminder e-mail as MIME: a pure rule (no SMTP, no clock but the one given).

Header values are built from plain text by the e-mail package and checked; a value that
could inject a header, hide the urgent line or not be written back raises
:class:`~services.domain.errors.PermanentSendError` with a reason, never a crash.
"""

from __future__ import annotations

import binascii
import email
import email.utils
import hashlib
import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from email.headerregistry import Address, BaseHeader, HeaderRegistry
from email.message import EmailMessage
from email.policy import default as _default_policy
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from schemas.models import unsafe_text_problem
from services.domain.branding import LOGO_CID, Logo
from services.domain.errors import PermanentSendError

__all__ = ["ADDRESS_LIKE", "CALENDAR_FILENAME", "ComposedMail", "compose_email", "message_id_for"]

CALENDAR_FILENAME = "afspraak.ics"

# Characters that end a header line somewhere: CR, LF and NUL, plus the other characters
# that str.splitlines() treats as line breaks (the email package folds with it).
_LINE_BREAKS = frozenset("\r\n\0\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")
_LINE_BREAK = re.compile("[" + re.escape("".join(sorted(_LINE_BREAKS))) + "]")
# A plain dot-atom address (RFC 5322 atext): read without the e-mail package's parser,
# which gives the same local part and domain for these (tests/unit/test_mime_bytes.py).
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_SIMPLE_ADDRESS = re.compile(rf"({_ATEXT}(?:\.{_ATEXT})*)@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)")
_DOMAIN_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_URL_UNSAFE = re.compile(r"[\s<>\"\\^`{|}]")
# Server replies often echo the mailbox ("<someone@example.org>: Recipient address
# rejected"); details end up in outcomes and logs, so addresses are cut out.
_ADDRESS_LIKE = re.compile(r"[^\s<>\"'@]*@[^\s<>\"']+")


class _FoldOnceHeader(BaseHeader):
    """Keeps what ``fold`` wrote, per line length, line separator and UTF-8 setting
    (all that folding reads of the policy): the headers many messages share (the
    practice's From, a slot's Subject) are folded once, not once per message."""

    def fold(self, *, policy: Any) -> str:
        key = (policy.max_line_length, policy.linesep, policy.utf8)
        folds: dict[tuple[Any, ...], str] | None = self.__dict__.get("_folds")
        if folds is None:
            folds = self.__dict__["_folds"] = {}
        text = folds.get(key)
        if text is None:
            text = folds[key] = super().fold(policy=policy)
        return text


class _CachingHeaderRegistry(HeaderRegistry):
    """The stock registry builds a new header class on every lookup (about 35 per
    message) and parses every value anew; this one builds each class once and keeps
    the parsed header of a value it has seen (the content types, encodings and fixed
    headers that every message repeats, a practice's From, a slot's Subject). Header
    objects are never changed once made, so messages can share them."""

    _MAX_VALUES = 4096

    def __init__(self) -> None:
        super().__init__(base_class=_FoldOnceHeader)
        self._classes: dict[str, type[BaseHeader]] = {}
        self._values: dict[tuple[str, Any], BaseHeader] = {}

    def map_to_type(self, name: str, cls: type[BaseHeader]) -> None:
        super().map_to_type(name, cls)
        self._classes.pop(name.lower(), None)
        self._values.clear()

    def __getitem__(self, name: str) -> type[BaseHeader]:
        key = name.lower()
        cls = self._classes.get(key)
        if cls is None:
            cls = self._classes[key] = super().__getitem__(name)
        return cls

    def __call__(self, name: str, value: Any) -> BaseHeader:
        if type(value) is str:
            key: tuple[str, Any] = (name, value)
        elif type(value) is Address:
            key = (name, ("address", value.display_name, value.username, value.domain))
        else:
            return self[name](name, value)
        header = self._values.get(key)
        if header is None:
            header = self[name](name, value)
            if len(self._values) >= self._MAX_VALUES:
                self._values.clear()
            self._values[key] = header
        return header


_registry = _CachingHeaderRegistry()
_POLICY = _default_policy.clone(header_factory=_registry)
# What aiosmtplib flattened a message with for 7-bit addresses (email.policy.SMTP).
_WIRE_POLICY = _POLICY.clone(linesep="\r\n")
_MAX_LINE = 78  # the policy's max_line_length: a shorter line is never folded
_MAX_URL_LENGTH = 900


def message_id_for(reminder_id: str, domain: str) -> str:
    """Message-ID derived from the reminder id, so a resent duplicate is recognisable."""
    _check_line(domain, "message_id_domain")
    digest = hashlib.sha256(reminder_id.encode("utf-8")).hexdigest()[:40]
    return f"<{digest}@{_ascii_domain(domain, 'invalid_header')}>"


@dataclass(frozen=True)
class ComposedMail:
    """A reminder e-mail ready for the wire: the envelope and the exact bytes (CRLF lines,
    7-bit) that are sent and, when DKIM is on, signed."""

    sender: str
    recipient: str
    message_id: str
    data: bytes

    @property
    def needs_smtputf8(self) -> bool:
        return not (self.sender.isascii() and self.recipient.isascii())

    def with_prefix(self, header: bytes) -> ComposedMail:
        """The same mail with ``header`` (complete lines, CRLF) on top (DKIM-Signature)."""
        return replace(self, data=header + self.data)

    def parsed(self) -> EmailMessage:
        """The bytes read back by the e-mail package, as a receiving client would."""
        msg = email.message_from_bytes(self.data, policy=_default_policy)
        assert isinstance(msg, EmailMessage)
        return msg


# Fixed boundaries: "=_" never occurs in quoted-printable or base64 text, nor at the start
# of a header line, so no part can contain one.
_MIXED = b"=_reminder_mixed"
_ALTERNATIVE = b"=_reminder_alternative"
_RELATED = b"=_reminder_related"
_CRLF = b"\r\n"
_TEXT_HEADERS = (
    b'Content-Type: text/%s; charset="utf-8"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n'
)


def compose_email(
    *,
    reminder_id: str,
    from_address: str,
    from_name: str,
    to: str,
    subject: str,
    text: str,
    html: str,
    unsubscribe_url: str | None,
    message_id_domain: str,
    date: datetime | None = None,
    calendar: bytes | None = None,
    logo: Logo | None = None,
) -> ComposedMail:
    """Build the reminder e-mail: a text part with an HTML alternative, both UTF-8, and
    with ``logo`` the HTML as ``multipart/related`` [HTML, the logo as ``cid:`` image],
    with ``calendar`` all that as ``multipart/mixed`` beside an ``afspraak.ics``.

    The bytes are written here in the one shape a reminder has; the header values are
    folded by the e-mail package's header objects (RFC 2047 encoded words for non-ASCII),
    kept per value. Raises PermanentSendError: `invalid_header` for line breaks or NUL in
    any header value, `invalid_address` for a bad recipient, `invalid_sender` for a bad
    From.
    """
    for name, value in (
        ("subject", subject),
        ("from_name", from_name),
        ("from_address", from_address),
        ("to", to),
        ("message_id_domain", message_id_domain),
    ):
        _check_line(value, name)
    if unsubscribe_url is not None:
        _check_line(unsubscribe_url, "unsubscribe_url")
    for name, value in (("subject", subject), ("from_name", from_name)):
        # Plain text only: an encoded word (=?utf-8?q?...=0D=0A...?=) would be decoded by
        # the e-mail package into the header, and a direction character could hide text.
        problem = unsafe_text_problem(value)
        if problem is not None:
            raise PermanentSendError("invalid_header", f"{name} {problem}")

    sender = _sender_address(from_address, from_name)
    recipient = _parse_address(to, "invalid_address")
    from_line = _folded("From", sender, "invalid_sender")
    to_line = _address_line(recipient)
    subject_line = _folded("Subject", subject, "invalid_header")
    _check_headers_as_given(from_line[1], subject_line[1], from_name, subject)

    when = date if date is not None else datetime.now(UTC)
    message_id = message_id_for(reminder_id, message_id_domain)
    head = [
        from_line[0],
        to_line,
        subject_line[0],
        _date_line(when),
        _plain_line("Message-ID", message_id),
        # RFC 3834: no out-of-office or other auto-replies to a machine-sent message.
        b"Auto-Submitted: auto-generated\r\nX-Auto-Response-Suppress: All\r\n",
    ]
    if unsubscribe_url is not None:
        url = _check_unsubscribe_url(unsubscribe_url)
        # One line, never folded or encoded (a folded URL breaks List-Unsubscribe); a
        # line may be up to 998 characters and the URL is capped below that.
        head.append(b"List-Unsubscribe: <" + url.encode("ascii") + b">\r\n")
        # RFC 8058 one-click needs an HTTPS URI; for a plain-http (local demo) URL the
        # link is still listed, but mail clients must not POST to it blindly.
        if url.lower().startswith("https://"):
            head.append(b"List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n")
    head.append(b"MIME-Version: 1.0\r\n")

    # Quoted-printable keeps both parts 7-bit clean and within line limits whatever the
    # template produced, so any relay (8BITMIME or not) passes them unchanged.
    html_part = _TEXT_HEADERS % b"html" + _quoted_printable(html)
    if logo is not None:
        html_part = _multipart(b"related", _RELATED, [html_part, _logo_part(logo)])
    text_part = _TEXT_HEADERS % b"plain" + _quoted_printable(text)
    body = _multipart(b"alternative", _ALTERNATIVE, [text_part, html_part])
    if calendar is not None:
        body = _multipart(b"mixed", _MIXED, [body, _calendar_part(calendar)])
    head.append(body)
    return ComposedMail(
        sender=sender.addr_spec,
        recipient=recipient.addr_spec,
        message_id=message_id,
        data=b"".join(head),
    )


def _multipart(subtype: bytes, boundary: bytes, parts: list[bytes]) -> bytes:
    """A multipart entity: its Content-Type header, a blank line and the parts."""
    delimiter = b"\r\n--" + boundary + b"\r\n"
    return b"".join(
        (
            b"Content-Type: multipart/",
            subtype,
            b'; boundary="',
            boundary,
            b'"\r\n\r\n--',
            boundary,
            b"\r\n",
            delimiter.join(parts),
            b"\r\n--",
            boundary,
            b"--\r\n",
        )
    )


def _quoted_printable(value: str) -> bytes:
    """The text as UTF-8 quoted-printable with CRLF line ends (binascii, in C)."""
    lines = value.encode("utf-8").splitlines()
    return binascii.b2a_qp(b"\r\n".join(lines) + b"\r\n", istext=True)


def _base64_lines(data: bytes) -> bytes:
    """What ``base64.encodebytes`` gives (lines of 76 characters), with CRLF line ends:
    encoded in one call, then cut into lines."""
    if not data:
        return b""
    encoded = binascii.b2a_base64(data, newline=False)
    return b"".join(encoded[i : i + 76] + b"\r\n" for i in range(0, len(encoded), 76))


def _calendar_part(ics: bytes) -> bytes:
    return (
        b'Content-Type: text/calendar; method="PUBLISH"; charset="utf-8"\r\n'
        b"Content-Transfer-Encoding: base64\r\n"
        b'Content-Disposition: attachment; filename="' + CALENDAR_FILENAME.encode() + b'"\r\n'
        b"\r\n" + _base64_lines(ics)
    )


@lru_cache(maxsize=64)
def _logo_part(logo: Logo) -> bytes:
    # A practice's logo is the same on every reminder: encoded once per logo.
    extension = b"png" if logo.subtype == "png" else b"jpg"
    return (
        b"Content-Type: image/" + logo.subtype.encode("ascii") + b"\r\n"
        b"Content-Transfer-Encoding: base64\r\n"
        b"Content-ID: <" + LOGO_CID.encode("ascii") + b">\r\n"
        b'Content-Disposition: inline; filename="logo.' + extension + b'"\r\n'
        b"\r\n" + _base64_lines(logo.data)
    )


def _folded(name: str, value: Address | str, reason: str) -> tuple[bytes, BaseHeader]:
    """The header as the e-mail package writes it on the SMTP wire (folded, RFC 2047
    encoded words for non-ASCII), with the parsed header object; folded once per value.

    The package re-parses what it is given and raises assorted errors on what it cannot
    read back: that is this message's failure, with a reason, not a crash."""
    try:
        header = _registry(name, value)
        return _fold(header), header
    except PermanentSendError:
        raise
    except Exception as exc:
        detail = f"{name} cannot be written ({type(exc).__name__})"
        raise PermanentSendError(reason, detail) from None


def _fold(header: BaseHeader) -> bytes:
    folded: bytes | None = header.__dict__.get("_wire")
    if folded is None:
        folded = header.__dict__["_wire"] = header.fold(policy=_WIRE_POLICY).encode("ascii")
    return folded


def _address_line(recipient: Address) -> bytes:
    """``To:`` with the bare address: the one header that differs on every message."""
    line = "To: " + recipient.addr_spec
    if len(line) <= _MAX_LINE and line.isascii():
        return line.encode("ascii") + _CRLF
    return _folded("To", recipient, "invalid_address")[0]


def _plain_line(name: str, value: str) -> bytes:
    line = f"{name}: {value}"
    if len(line) <= _MAX_LINE:
        return line.encode("ascii") + _CRLF
    return _folded(name, value, "invalid_header")[0]


@lru_cache(maxsize=256)
def _date_line(when: datetime) -> bytes:
    # One clock reading serves a whole batch.
    return _plain_line("Date", email.utils.format_datetime(when))


def _check_headers_as_given(
    sender: BaseHeader, subject: BaseHeader, from_name: str, subject_text: str
) -> None:
    """The headers hold exactly the plain text given: one From with that name, that
    subject. Anything the e-mail package would have read differently is refused."""
    addresses: tuple[Address, ...] = getattr(sender, "addresses", ())
    if len(addresses) != 1 or addresses[0].display_name != from_name.strip():
        raise PermanentSendError("invalid_header", "from_name does not survive as plain text")
    if str(subject) != subject_text:
        raise PermanentSendError("invalid_header", "subject does not survive as plain text")


def _check_line(value: str, name: str) -> None:
    if _LINE_BREAK.search(value) is not None:
        raise PermanentSendError("invalid_header", f"{name} contains a line break or NUL")


@lru_cache(maxsize=4096)
def _ascii_domain(domain: str, reason: str) -> str:
    # Patients' domains repeat (a handful of providers): checked once per domain; a
    # refused one raises every time (lru_cache keeps no exceptions).
    domain = domain.strip().rstrip(".")
    try:
        ascii_domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        raise PermanentSendError(reason, "domain is not a valid host name") from None
    labels = ascii_domain.split(".")
    if len(labels) < 2 or len(ascii_domain) > 253:
        raise PermanentSendError(reason, "domain is not a fully qualified host name")
    if not all(_DOMAIN_LABEL.match(label) for label in labels):
        raise PermanentSendError(reason, "domain is not a valid host name")
    return ascii_domain


@lru_cache(maxsize=1024)
def _sender_address(from_address: str, from_name: str) -> Address:
    # A practice's sender is the same on all its reminders: parsed once (an Address is
    # immutable); a refused one raises every time (lru_cache keeps no exceptions).
    return _parse_address(from_address, "invalid_sender", display_name=from_name)


def _parse_address(value: str, reason: str, display_name: str = "") -> Address:
    value = value.strip()
    simple = _SIMPLE_ADDRESS.fullmatch(value)
    if simple is not None:
        local, domain = simple.groups()
        if len(local) > 64 or len(value) > 254:
            raise PermanentSendError(reason, "not a valid e-mail address")
        ascii_domain = _ascii_domain(domain, reason)
        return Address(display_name=display_name, username=local, domain=ascii_domain)
    return _parse_address_fully(value, reason, display_name)


def _parse_address_fully(value: str, reason: str, display_name: str = "") -> Address:
    try:
        parsed = Address(addr_spec=value)
    except Exception:  # the parser raises assorted defect, parse and index errors
        raise PermanentSendError(reason, "not a valid e-mail address") from None
    local, domain = parsed.username, parsed.domain
    if not local or not domain or len(local) > 64 or len(parsed.addr_spec) > 254:
        raise PermanentSendError(reason, "not a valid e-mail address")
    if domain.startswith("["):
        raise PermanentSendError(reason, "address literals are not accepted")
    try:
        ascii_domain = _ascii_domain(domain, reason)
        return Address(display_name=display_name, username=local, domain=ascii_domain)
    except PermanentSendError:
        raise
    except Exception:
        raise PermanentSendError(reason, "not a valid e-mail address") from None


def _check_unsubscribe_url(url: str) -> str:
    url = url.strip()
    if len(url) > _MAX_URL_LENGTH or not url.isascii() or _URL_UNSAFE.search(url):
        raise PermanentSendError("invalid_header", "unsubscribe url is not a plain ASCII URL")
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("https", "http") or not parts.hostname:
        raise PermanentSendError("invalid_header", "unsubscribe url must be an http(s) URL")
    return url


ADDRESS_LIKE = _ADDRESS_LIKE
