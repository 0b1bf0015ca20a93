"""Composing a reminder e-mail as MIME: a pure rule (no SMTP, no clock but the one given).

Header values are built from plain text by the e-mail package and checked; a value that
could inject a header, hide the urgent line or not be written back raises
:class:`~services.domain.errors.PermanentSendError` with a reason, never a crash.
"""

from __future__ import annotations

import email.utils
import hashlib
import re
import secrets
from datetime import UTC, datetime
from email.headerregistry import Address, BaseHeader, HeaderRegistry, UnstructuredHeader
from email.message import EmailMessage
from email.policy import default as _default_policy
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from schemas.models import unsafe_text_problem
from services.domain.errors import PermanentSendError

__all__ = ["ADDRESS_LIKE", "compose_email", "message_id_for"]

# Characters that end a header line somewhere: CR, LF and NUL, plus the other characters
# that str.splitlines() treats as line breaks (the email package folds with it).
_LINE_BREAKS = frozenset("\r\n\0\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")
_DOMAIN_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_URL_UNSAFE = re.compile(r"[\s<>\"\\^`{|}]")
# Server replies often echo the mailbox ("<someone@example.org>: Recipient address
# rejected"); details end up in outcomes and logs, so addresses are cut out.
_ADDRESS_LIKE = re.compile(r"[^\s<>\"'@]*@[^\s<>\"']+")


class _VerbatimHeader(UnstructuredHeader, BaseHeader):
    """An ASCII header written on one line, never folded or RFC 2047-encoded.

    The stock folding turns a long URL into encoded words, which breaks
    List-Unsubscribe; a line may be up to 998 characters, and the URL is capped below.
    """

    def fold(self, *, policy: Any) -> str:
        return f"{self.name}: {self}{policy.linesep}"


class _FoldOnceHeader(BaseHeader):
    """Keeps what ``fold`` wrote, per line length, line separator and UTF-8 setting
    (all that folding reads of the policy): a message is flattened twice (DKIM signs
    the bytes, aiosmtplib writes them), and the headers every message shares (content
    types, encodings, the practice's From) are folded once, not twice per message."""

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
_registry.map_to_type("list-unsubscribe", _VerbatimHeader)
_registry.map_to_type("list-unsubscribe-post", _VerbatimHeader)
_POLICY = _default_policy.clone(header_factory=_registry)
_MAX_URL_LENGTH = 900


def message_id_for(reminder_id: str, domain: str) -> str:
    """Message-ID derived from the reminder id, so a resent duplicate is recognisable."""
    _check_line(domain, "message_id_domain")
    digest = hashlib.sha256(reminder_id.encode("utf-8")).hexdigest()[:40]
    return f"<{digest}@{_ascii_domain(domain, 'invalid_header')}>"


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
) -> EmailMessage:
    """Build the reminder e-mail: a text part with an HTML alternative, both UTF-8.

    Raises PermanentSendError: `invalid_header` for line breaks or NUL in any header
    value, `invalid_address` for a bad recipient, `invalid_sender` for a bad From.
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

    msg = EmailMessage(policy=_POLICY)
    # The e-mail package re-parses what it is given and raises assorted errors on what
    # it cannot read back: that is this message's failure, with a reason, not a crash.
    headers: tuple[tuple[str, Address | str, str], ...] = (
        ("From", sender, "invalid_sender"),
        ("To", recipient, "invalid_address"),
        ("Subject", subject, "invalid_header"),
    )
    for header, content, reason in headers:
        try:
            msg[header] = content
        except Exception as exc:
            raise PermanentSendError(
                reason, f"{header} cannot be written ({type(exc).__name__})"
            ) from None
    when = date if date is not None else datetime.now(UTC)
    msg["Date"] = email.utils.format_datetime(when)
    msg["Message-ID"] = message_id_for(reminder_id, message_id_domain)
    # RFC 3834: no out-of-office or other auto-replies to a machine-sent message.
    msg["Auto-Submitted"] = "auto-generated"
    msg["X-Auto-Response-Suppress"] = "All"
    if unsubscribe_url is not None:
        url = _check_unsubscribe_url(unsubscribe_url)
        msg["List-Unsubscribe"] = f"<{url}>"
        # RFC 8058 one-click needs an HTTPS URI; for a plain-http (local demo) URL the
        # link is still listed, but mail clients must not POST to it blindly.
        if url.lower().startswith("https://"):
            msg["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    # Quoted-printable keeps both parts 7-bit clean and within line limits whatever the
    # template produced, so any relay (8BITMIME or not) passes them unchanged.
    msg.set_content(text, subtype="plain", charset="utf-8", cte="quoted-printable")
    # "=_" never occurs in quoted-printable text, so this boundary cannot collide with
    # the parts. Setting it here also spares the generator its per-message boundary
    # search (a fresh regex compile each time), over half the cost of flattening.
    msg.make_alternative(boundary=f"=_reminder_{secrets.token_hex(12)}")
    msg.add_alternative(html, subtype="html", charset="utf-8", cte="quoted-printable")
    _check_headers_as_given(msg, from_name, subject)
    return msg


def _check_headers_as_given(msg: EmailMessage, from_name: str, subject: str) -> None:
    """The headers hold exactly the plain text given: one From with that name, that
    subject. Anything the e-mail package would have read differently is refused."""
    senders = msg.get_all("From") or []
    if len(senders) != 1 or len(msg.get_all("Subject") or []) != 1:
        raise PermanentSendError("invalid_header", "the message must have one From and Subject")
    addresses: tuple[Address, ...] = getattr(senders[0], "addresses", ())
    if len(addresses) != 1 or addresses[0].display_name != from_name.strip():
        raise PermanentSendError("invalid_header", "from_name does not survive as plain text")
    if str(msg["Subject"]) != subject:
        raise PermanentSendError("invalid_header", "subject does not survive as plain text")


def _check_line(value: str, name: str) -> None:
    if any(ch in _LINE_BREAKS for ch in value):
        raise PermanentSendError("invalid_header", f"{name} contains a line break or NUL")


def _ascii_domain(domain: str, reason: str) -> str:
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
    try:
        parsed = Address(addr_spec=value.strip())
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
