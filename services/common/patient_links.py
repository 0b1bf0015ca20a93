"""Signed patient links: the token in ``{public_url}/u/{token}`` (one-click unsubscribe).

A token names one patient of one practice and when it was issued, nothing else: no
e-mail address, no name, no appointment. Its form is ``1.<payload>.<mac>``:

- ``1`` is the format version (a new format gets a new number; old links keep working
  for as long as the verifier accepts their version);
- ``payload`` is base64url of ``{practice_id} {patient_id} {issued_at}`` (epoch seconds;
  the ids have no spaces, see ``schemas.models.Identifier``); the patient id is the
  portal's pseudonymous id;
- ``mac`` is base64url of HMAC-SHA256 over ``1.<payload>`` with a key derived from
  ``REMINDERS_ADMIN__SECRET_KEY`` for this purpose only (so a CSRF or session value signed
  with the same secret can never pass as a patient link).

Verification compares in constant time and answers one :class:`InvalidPatientLink`
whatever is wrong, so a caller cannot tell a forged token from an altered or expired
one (and neither can whoever sent it). Tokens must never be logged: they are
capabilities.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

__all__ = [
    "InvalidPatientLink",
    "PatientLink",
    "PatientLinkSigner",
    "unsubscribe_url",
]

_VERSION = "1"
_PURPOSE = b"e-afspraken patient link v1"
_MAX_TOKEN_LENGTH = 400
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
_B64URL = re.compile(r"^[A-Za-z0-9_-]+$")
# A link in a mail from last year still unsubscribes; older ones are refused, so a
# leaked mailbox archive does not hold capabilities forever.
DEFAULT_MAX_AGE = timedelta(days=400)
# Clocks of the notifier and practice-admin may differ a little.
_CLOCK_SKEW = timedelta(minutes=10)


class InvalidPatientLink(ValueError):
    """The token is not one of ours (forged, altered, foreign, expired or malformed).

    ``reason`` is for tests and metrics only; answers to the visitor never show it.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class PatientLink:
    practice_id: str
    patient_id: str
    issued_at: datetime

    @property
    def key(self) -> str:
        """The key of the patient's record on ``patient.preferences.v1``."""
        return f"{self.practice_id}/{self.patient_id}"


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    if not _B64URL.match(text):
        raise InvalidPatientLink("malformed")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise InvalidPatientLink("malformed") from None
    # The decoder ignores the unused low bits of the last character: only the one
    # encoding we issue is accepted, so a token has exactly one spelling.
    if _b64encode(data) != text:
        raise InvalidPatientLink("malformed")
    return data


def _derive(secret: bytes) -> bytes:
    if not secret:
        raise ValueError("the patient link secret is empty")
    return hmac.new(secret, _PURPOSE, hashlib.sha256).digest()


class PatientLinkSigner:
    """Issues and checks patient-link tokens with the practice-admin secret.

    ``previous_secrets`` are accepted for verification only, so the secret can be
    rotated without breaking the links in mails already sent.
    """

    def __init__(
        self,
        secret: bytes | str,
        *,
        previous_secrets: Sequence[bytes | str] = (),
        max_age: timedelta = DEFAULT_MAX_AGE,
    ) -> None:
        def as_bytes(value: bytes | str) -> bytes:
            return value.encode("utf-8") if isinstance(value, str) else value

        self._key = _derive(as_bytes(secret))
        self._verify_keys = [self._key, *(_derive(as_bytes(s)) for s in previous_secrets)]
        self._max_age = max_age

    def _mac(self, key: bytes, signed: str) -> bytes:
        return hmac.new(key, signed.encode("ascii"), hashlib.sha256).digest()

    def issue(self, practice_id: str, patient_id: str, issued_at: datetime) -> str:
        """The token for this patient; raises ValueError for ids outside the id alphabet."""
        for name, value in (("practice_id", practice_id), ("patient_id", patient_id)):
            if not _ID.match(value):
                raise ValueError(f"{name} is not a valid identifier")
        seconds = int(issued_at.timestamp())
        payload = _b64encode(f"{practice_id} {patient_id} {seconds}".encode("ascii"))
        signed = f"{_VERSION}.{payload}"
        return f"{signed}.{_b64encode(self._mac(self._key, signed))}"

    def verify(self, token: str, now: datetime) -> PatientLink:
        """The link the token names; raises InvalidPatientLink for anything not ours."""
        if len(token) > _MAX_TOKEN_LENGTH or not token.isascii():
            raise InvalidPatientLink("malformed")
        parts = token.split(".")
        if len(parts) != 3:
            raise InvalidPatientLink("malformed")
        version, payload, mac_text = parts
        if version != _VERSION:
            raise InvalidPatientLink("unknown_version")
        given = _b64decode(mac_text)
        signed = f"{version}.{payload}"
        # Every key is tried, so the time taken does not say which one matched.
        matched = False
        for key in self._verify_keys:
            matched |= hmac.compare_digest(self._mac(key, signed), given)
        if not matched:
            raise InvalidPatientLink("bad_signature")
        # Signed by us: from here on a failure is our own format drifting, not forgery.
        try:
            practice_id, patient_id, seconds = _b64decode(payload).decode("ascii").split(" ")
            issued_at = datetime.fromtimestamp(int(seconds), UTC)
        except (UnicodeDecodeError, ValueError, OverflowError, OSError):
            raise InvalidPatientLink("malformed") from None
        if not (_ID.match(practice_id) and _ID.match(patient_id)):
            raise InvalidPatientLink("malformed")
        if issued_at > now + _CLOCK_SKEW:
            raise InvalidPatientLink("from_the_future")
        if now - issued_at > self._max_age:
            raise InvalidPatientLink("expired")
        return PatientLink(practice_id=practice_id, patient_id=patient_id, issued_at=issued_at)


def unsubscribe_url(public_url: str, token: str) -> str:
    """``{public_url}/u/{token}``: the one-click link practice-admin serves."""
    return f"{public_url.rstrip('/')}/u/{token}"
