"""DKIM signing of reminder mail (RFC 6376, dkimpy): rsa-sha256 and ed25519-sha256.

On when ``REMINDERS_SMTP__DKIM_DOMAIN``, ``__DKIM_SELECTOR`` and
``__DKIM_PRIVATE_KEY_FILE`` are set (all three or none). Gmail, Yahoo and Outlook want
bulk senders to sign with a ``d=`` aligned with the From domain, and want
``List-Unsubscribe`` and ``List-Unsubscribe-Post`` under the signature.

How the signature stays valid on the wire: a composed reminder is its bytes
(``ComposedMail.data``), the SMTP pool sends those bytes as they are, and the signature
dkimpy writes over them goes on top unchanged.
Canonicalization is relaxed/relaxed, so a relay that refolds headers or trims trailing
space does not break it either. The signed headers are listed twice where a second copy
added later must break the signature (over-signing, RFC 6376 section 8.15).

:func:`load_dkim_key` is the one place a key is read and checked; ``reminders check``
calls it to report a key that does not load.
"""

from __future__ import annotations

import base64
import binascii
import logging
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import dkim
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa, utils

from services.common.settings import Settings, SmtpSettings
from services.domain.mime import ComposedMail
from services.notifier.delivery import EmailTransport

__all__ = [
    "SIGNED_HEADERS",
    "DkimKey",
    "DkimKeyError",
    "DkimSigner",
    "DkimSigningTransport",
    "dkim_check",
    "dns_record",
    "load_dkim_key",
]

log = logging.getLogger(__name__)

Algorithm = Literal["rsa-sha256", "ed25519-sha256"]

# From first; each header that a later copy could change the meaning of is over-signed.
SIGNED_HEADERS: tuple[str, ...] = (
    "From",
    "From",
    "To",
    "To",
    "Subject",
    "Subject",
    "Date",
    "Date",
    "Message-ID",
    "Message-ID",
    "List-Unsubscribe",
    "List-Unsubscribe",
    "List-Unsubscribe-Post",
    "List-Unsubscribe-Post",
    "Auto-Submitted",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
)
_MIN_RSA_BITS = 1024


class DkimKeyError(ValueError):
    """The DKIM settings or key cannot be used; the message says what to fix."""


@dataclass(frozen=True)
class DkimKey:
    domain: str
    selector: str
    algorithm: Algorithm
    # What dkimpy takes: PKCS#1 PEM for RSA, the base64 seed for ed25519.
    private_key: bytes = field(repr=False)
    # The public key as it goes in the DNS record's p= tag.
    public_key_b64: str


def _settings(settings: Settings | SmtpSettings) -> SmtpSettings:
    return settings.smtp if isinstance(settings, Settings) else settings


def _parse_key(data: bytes, where: str) -> tuple[Algorithm, bytes, str]:
    text = data.strip()
    if b"-----BEGIN" in text:
        try:
            key = serialization.load_pem_private_key(text, password=None)
        except (ValueError, TypeError) as exc:
            raise DkimKeyError(
                f"{where}: not a readable unencrypted PEM private key ({exc})"
            ) from None
        if isinstance(key, rsa.RSAPrivateKey):
            if key.key_size < _MIN_RSA_BITS:
                raise DkimKeyError(
                    f"{where}: RSA key of {key.key_size} bits; receivers ignore DKIM keys "
                    f"under {_MIN_RSA_BITS} bits (use 2048)"
                )
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
            public = key.public_key().public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            return "rsa-sha256", pem, base64.b64encode(public).decode("ascii")
        if isinstance(key, ed25519.Ed25519PrivateKey):
            seed = key.private_bytes(
                serialization.Encoding.Raw,
                serialization.PrivateFormat.Raw,
                serialization.NoEncryption(),
            )
            return "ed25519-sha256", base64.b64encode(seed), _ed25519_public(key)
        raise DkimKeyError(f"{where}: DKIM needs an RSA or ed25519 key, not {type(key).__name__}")
    # dknewkey --ktype ed25519 writes the 32-byte seed in base64.
    try:
        seed = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        seed = b""
    if len(seed) != 32:
        raise DkimKeyError(
            f"{where}: neither a PEM private key (RSA or ed25519) nor an ed25519 seed in base64"
        )
    private = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
    return "ed25519-sha256", base64.b64encode(seed), _ed25519_public(private)


def _ed25519_public(key: ed25519.Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def load_dkim_key(settings: Settings | SmtpSettings) -> DkimKey | None:
    """The configured key, None when DKIM is off; raises DkimKeyError when it cannot work.

    Checks that all three settings are there, that the file reads and holds an RSA
    (at least 1024 bits) or ed25519 key, and that a test message signs.
    """
    smtp = _settings(settings)
    values = {
        "REMINDERS_SMTP__DKIM_DOMAIN": smtp.dkim_domain,
        "REMINDERS_SMTP__DKIM_SELECTOR": smtp.dkim_selector,
        "REMINDERS_SMTP__DKIM_PRIVATE_KEY_FILE": smtp.dkim_private_key_file,
    }
    given = {name: value for name, value in values.items() if value}
    if not given:
        return None
    missing = sorted(set(values) - set(given))
    if missing:
        raise DkimKeyError(f"DKIM signing needs all three settings; {', '.join(missing)} not set")
    assert smtp.dkim_domain and smtp.dkim_selector and smtp.dkim_private_key_file
    domain = smtp.dkim_domain.strip().rstrip(".").lower()
    selector = smtp.dkim_selector.strip()
    if not domain.isascii() or "." not in domain or any(c in domain for c in " ;=\r\n"):
        raise DkimKeyError(f"REMINDERS_SMTP__DKIM_DOMAIN {domain!r} is not a domain name")
    if not selector.isascii() or any(c in selector for c in " ;=@\r\n"):
        raise DkimKeyError(f"REMINDERS_SMTP__DKIM_SELECTOR {selector!r} is not a selector")
    path = Path(smtp.dkim_private_key_file)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DkimKeyError(
            f"REMINDERS_SMTP__DKIM_PRIVATE_KEY_FILE {path}: {exc.strerror or exc}"
        ) from None
    algorithm, private, public = _parse_key(data, f"DKIM key {path}")
    key = DkimKey(
        domain=domain,
        selector=selector,
        algorithm=algorithm,
        private_key=private,
        public_key_b64=public,
    )
    probe = b"From: a@" + domain.encode() + b"\r\nSubject: probe\r\n\r\nprobe\r\n"
    try:
        _sign_bytes(key, probe)
    except dkim.DKIMException as exc:
        raise DkimKeyError(f"DKIM key {path} does not sign: {exc}") from None
    return key


def dkim_check(settings: Settings | SmtpSettings) -> tuple[Literal["ok", "FAIL", "skip"], str]:
    """One line for ``reminders check``: (status, text); never prints the key."""
    try:
        key = load_dkim_key(settings)
    except DkimKeyError as exc:
        return "FAIL", str(exc)
    if key is None:
        return "skip", "no REMINDERS_SMTP__DKIM_*: reminder mail is not DKIM-signed"
    name, _ = dns_record(key)
    return "ok", f"{key.algorithm} key loads and signs; d={key.domain} s={key.selector} ({name})"


def dns_record(key: DkimKey) -> tuple[str, str]:
    """The TXT record to publish: (name, value)."""
    kind = "rsa" if key.algorithm == "rsa-sha256" else "ed25519"
    return (
        f"{key.selector}._domainkey.{key.domain}",
        f"v=DKIM1; k={kind}; p={key.public_key_b64}",
    )


@dataclass(frozen=True)
class _Signature:
    signature: bytes


@dataclass(frozen=True)
class _PrehashedRsa:
    """RSASSA-PKCS1-v1_5 over a SHA-256 digest, by OpenSSL (through cryptography)."""

    key: rsa.RSAPrivateKey

    def sign(self, digest: bytes) -> _Signature:
        return _Signature(
            self.key.sign(digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
        )


class _OpenSslRsaDKIM(dkim.DKIM):  # type: ignore[misc]
    """dkimpy's signer with the RSA operation done by OpenSSL.

    dkimpy computes RSA in Python (about 13 ms of CPU per 2048-bit signature on the
    project's machines against under 1 ms in OpenSSL, see docs/patient-mail.md).
    Everything else stays dkimpy's: canonicalization, the hashes, the tags, folding.
    ``gen_header`` takes the branch that calls ``pk.sign(digest)`` (its ed25519 branch;
    both algorithms hash with SHA-256 and the tags were written by ``sign`` already) and
    gets an object that signs with RSA. The tests verify every signature with dkimpy's
    own RSA code, so a dkimpy release that changes this shape fails them.
    """

    openssl_key: rsa.RSAPrivateKey
    signature_algorithm: bytes  # set by dkimpy

    def gen_header(
        self,
        fields: Any,
        include_headers: Any,
        canon_policy: Any,
        header_name: Any,
        pk: Any,
        standardize: bool = False,
    ) -> Any:
        if self.signature_algorithm != b"rsa-sha256":
            return super().gen_header(
                fields, include_headers, canon_policy, header_name, pk, standardize
            )
        self.signature_algorithm = b"ed25519-sha256"
        try:
            return super().gen_header(
                fields,
                include_headers,
                canon_policy,
                header_name,
                _PrehashedRsa(self.openssl_key),
                standardize,
            )
        finally:
            self.signature_algorithm = b"rsa-sha256"


def _sign_bytes(key: DkimKey, message: bytes) -> bytes:
    algorithm = key.algorithm.encode("ascii")
    signer: dkim.DKIM
    if key.algorithm == "rsa-sha256":
        signer = _OpenSslRsaDKIM(message, signature_algorithm=algorithm)
        signer.openssl_key = _rsa_key(key.private_key)
    else:
        signer = dkim.DKIM(message, signature_algorithm=algorithm)
    signature: bytes = signer.sign(
        key.selector.encode("ascii"),
        key.domain.encode("ascii"),
        key.private_key,
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=[h.encode("ascii") for h in SIGNED_HEADERS],
    )
    return signature


@lru_cache(maxsize=8)
def _rsa_key(pem: bytes) -> rsa.RSAPrivateKey:
    key = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


def _aligned(from_domain: str, dkim_domain: str) -> bool:
    """DMARC relaxed alignment, approximated: one domain is the other or below it."""
    a, b = from_domain.lower().rstrip("."), dkim_domain.lower()
    return a == b or a.endswith("." + b) or b.endswith("." + a)


class DkimSigner:
    def __init__(self, key: DkimKey) -> None:
        self.key = key
        self._warned: set[str] = set()

    def _check_alignment(self, msg: ComposedMail) -> None:
        domain = msg.sender.rpartition("@")[2]
        if domain and not _aligned(domain, self.key.domain) and domain not in self._warned:
            self._warned.add(domain)
            log.warning(
                "DKIM d= does not align with the sender's domain: DMARC will not pass",
                extra={"sender_domain": domain, "dkim_domain": self.key.domain},
            )

    def sign(self, msg: ComposedMail) -> ComposedMail:
        """``msg`` with this signer's DKIM-Signature on top (RFC 6376 5.6), over exactly
        the bytes that are sent."""
        self._check_alignment(msg)
        signature = _sign_bytes(self.key, msg.data)
        if not signature.endswith(b"\r\n"):
            signature += b"\r\n"
        return msg.with_prefix(signature)


class DkimSigningTransport:
    """Signs every message, then hands it to the wrapped transport (the SMTP pool)."""

    def __init__(self, inner: EmailTransport, signer: DkimSigner) -> None:
        self.inner = inner
        self.signer = signer

    async def send(self, msg: ComposedMail) -> None:
        # A retry sends the message given again, signed afresh.
        await self.inner.send(self.signer.sign(msg))
