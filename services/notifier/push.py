"""Web Push (RFC 8030) with aes128gcm payload encryption (RFC 8291) and VAPID (RFC 8292).

pywebpush does the encryption (`WebPusher.encode`) and py_vapid signs the VAPID JWT; the
HTTP request is ours, on one shared aiohttp session. pywebpush 2.x has an async path
(`webpush_async`), but it re-parses the VAPID key and re-signs on every call, mutates the
claims dict it is given, passes a bare float as the aiohttp timeout, has no Topic/Urgency
parameters and reports failures as one exception type whose status we would have to dig
out again. Doing the request here gives exact status mapping, Retry-After, bounded reads
and a VAPID token cached per push service.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, cast
from urllib.parse import urlsplit

import aiohttp
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02
from pywebpush import WebPusher

from services.domain.errors import PermanentSendError, SubscriptionGone, TransientSendError
from services.domain.push_message import MAX_PAYLOAD_BYTES, push_payload, push_topic

__all__ = [
    "KNOWN_PUSH_SERVICES",
    "MAX_PAYLOAD_BYTES",
    "MAX_TTL_SECONDS",
    "PushSubscription",
    "VapidOptions",
    "WebPushSender",
    "generate_vapid_keys",
    "push_payload",
    "push_topic",
]

log = logging.getLogger(__name__)

MAX_TTL_SECONDS = 28 * 24 * 3600
URGENCIES = frozenset({"very-low", "low", "normal", "high"})
_TOPIC = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_VAPID_LIFETIME = 12 * 3600  # RFC 8292 allows at most 24 h
_VAPID_REFRESH_MARGIN = 3600
_MAX_CACHED_AUDIENCES = 256
_LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost"})
_MAX_RESPONSE_READ = 64 * 1024

# Push services of the major browsers; pass as `allowed_host_suffixes` so that a forged
# subscription cannot make the notifier POST to arbitrary hosts.
KNOWN_PUSH_SERVICES = (
    "fcm.googleapis.com",  # Chrome, Edge (Chromium), Opera, Samsung Internet, Android
    "push.services.mozilla.com",  # Firefox
    "notify.windows.com",  # legacy Edge / Windows
    "push.apple.com",  # Safari (web.push.apple.com)
)


@dataclass(frozen=True)
class VapidOptions:
    """The application server's VAPID identity."""

    private_key: str = field(repr=False)  # PEM text, or base64url raw/DER key (py_vapid)
    subject: str  # "mailto:..." or an https URL where the push service can reach us


@dataclass(frozen=True)
class PushSubscription:
    """A browser's PushSubscription: endpoint URL and the client's keys (base64url)."""

    endpoint: str
    p256dh: str
    auth: str


def generate_vapid_keys() -> tuple[str, str]:
    """A new VAPID key pair: (private key PEM, public applicationServerKey base64url)."""
    key = ec.generate_private_key(ec.SECP256R1())
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")
    return private_pem, _public_key_b64(key)


def _public_key_b64(key: ec.EllipticCurvePrivateKey) -> str:
    raw = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return _b64url(raw)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    data = text.strip().encode("ascii")
    return base64.urlsafe_b64decode(data + b"=" * (-len(data) % 4))


def _load_vapid(private_key: str) -> Vapid02:
    text = private_key.strip()
    if text.startswith("-----BEGIN"):
        # py_vapid's from_string only takes base64 DER or raw keys, not PEM text.
        key = serialization.load_pem_private_key(text.encode("ascii"), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise ValueError("VAPID key must be a P-256 EC private key")
        return Vapid02(private_key=key)
    try:
        return cast(Vapid02, Vapid02.from_string(private_key=text))
    except Exception as exc:  # py_vapid raises assorted decoding errors
        raise ValueError("VAPID private key is neither PEM nor a base64url P-256 key") from exc


class _VapidSigner:
    """Signs VAPID JWTs, reusing one per push service (audience) until it nears expiry."""

    def __init__(self, options: VapidOptions) -> None:
        if not options.subject.startswith(("mailto:", "https://")):
            raise ValueError("VAPID subject must be a mailto: or https: URL")
        self._vapid = _load_vapid(options.private_key)
        self._subject = options.subject
        self._cache: dict[str, tuple[str, int]] = {}
        self.public_key = _public_key_b64(cast(ec.EllipticCurvePrivateKey, self._vapid.private_key))
        try:  # py_vapid is stricter about `sub` than the check above: fail at start-up
            self._sign("https://push.example.org", int(time.time()) + 60)
        except Exception as exc:
            raise ValueError(f"VAPID settings rejected by py_vapid: {exc}") from exc

    def _sign(self, audience: str, expires: int) -> str:
        claims = {"aud": audience, "exp": expires, "sub": self._subject}
        return cast(dict[str, str], self._vapid.sign(claims))["Authorization"]

    def authorization(self, audience: str) -> str:
        now = int(time.time())
        cached = self._cache.get(audience)
        if cached is not None and cached[1] - now > _VAPID_REFRESH_MARGIN:
            return cached[0]
        expires = now + _VAPID_LIFETIME
        try:
            header = self._sign(audience, expires)
        except Exception:  # py_vapid refuses origins it cannot express (e.g. IPv6 hosts)
            raise PermanentSendError(
                "invalid_subscription", "endpoint origin not usable as VAPID audience"
            ) from None
        if len(self._cache) >= _MAX_CACHED_AUDIENCES:
            self._cache.clear()
        self._cache[audience] = (header, expires)
        return header


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class WebPushSender:
    """Sends encrypted Web Push messages over one reused aiohttp session."""

    def __init__(
        self,
        vapid: VapidOptions,
        *,
        timeout: float = 10.0,
        allow_insecure_loopback: bool = False,
        allowed_host_suffixes: Iterable[str] | None = None,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self._signer = _VapidSigner(vapid)
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._allow_insecure_loopback = allow_insecure_loopback
        self._allowed = (
            tuple(s.lower().lstrip(".") for s in allowed_host_suffixes)
            if allowed_host_suffixes is not None
            else None
        )
        self._session = session
        self._owns_session = session is None
        self.messages_sent = 0

    @property
    def application_server_key(self) -> str:
        """The VAPID public key (base64url) that browsers subscribe with."""
        return self._signer.public_key

    async def __aenter__(self) -> WebPushSender:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None and self._owns_session:
            await self._session.close()
        self._session = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
            self._owns_session = True
        return self._session

    async def send(
        self,
        sub: PushSubscription,
        payload: bytes,
        *,
        ttl: int,
        topic: str,
        urgency: str = "normal",
    ) -> None:
        """Encrypt and post one message; returns when the push service accepted it.

        `ttl` is how long (seconds) the service keeps it for an offline device: the time
        until the appointment starts, capped at 28 days. Raises SubscriptionGone,
        TransientSendError or PermanentSendError.
        """
        if urgency not in URGENCIES:
            raise ValueError(f"urgency must be one of {sorted(URGENCIES)}")
        if not _TOPIC.match(topic):
            raise ValueError("topic must be 1-32 characters of the URL-safe base64 alphabet")
        if not payload:
            raise ValueError("payload must not be empty")
        if ttl <= 0:
            # TTL 0 means "deliver now or drop": useless for a reminder, and a reminder
            # whose appointment has begun has nothing left to say.
            raise PermanentSendError("ttl_expired", "no time left before the appointment")
        if len(payload) > MAX_PAYLOAD_BYTES:
            raise PermanentSendError("payload_too_large", f"{len(payload)} bytes")
        endpoint, audience, host = self._check_endpoint(sub.endpoint)
        body = self._encrypt(sub, payload)
        headers = {
            "TTL": str(min(ttl, MAX_TTL_SECONDS)),
            "Topic": topic,
            "Urgency": urgency,
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
            "Authorization": self._signer.authorization(audience),
        }
        session = self._get_session()
        try:
            async with session.post(
                endpoint,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=self._timeout,
            ) as resp:
                status = resp.status
                retry_after = _parse_retry_after(resp.headers.get("Retry-After"))
                # Drain a small body so the connection can be reused; never trust its size.
                await resp.content.read(_MAX_RESPONSE_READ)
        except TimeoutError:
            raise TransientSendError("timeout", f"push service {host} did not answer") from None
        except aiohttp.ClientError as exc:
            # aiohttp's messages carry the full endpoint URL (a per-subscriber capability):
            # keep only the exception type and the service's host name.
            raise TransientSendError(
                "push_unavailable", f"{type(exc).__name__} talking to {host}"
            ) from None
        self._raise_for_status(status, retry_after, host)
        self.messages_sent += 1

    def _check_endpoint(self, endpoint: str) -> tuple[str, str, str]:
        """(endpoint, VAPID audience, host) or PermanentSendError for an unusable endpoint."""
        try:
            parts = urlsplit(endpoint.strip())
            host = (parts.hostname or "").lower()
            parts.port  # noqa: B018 - raises ValueError on a malformed port
        except ValueError:
            raise PermanentSendError("invalid_subscription", "endpoint is not a URL") from None
        scheme = parts.scheme.lower()
        if not host or parts.username is not None or parts.password is not None:
            raise PermanentSendError("invalid_subscription", "endpoint is not a usable URL")
        if scheme == "http":
            if not (self._allow_insecure_loopback and host in _LOOPBACK_HOSTS):
                raise PermanentSendError("invalid_subscription", "endpoint must use https")
        elif scheme != "https":
            raise PermanentSendError("invalid_subscription", "endpoint must use https")
        if self._allowed is not None and not any(
            host == s or host.endswith("." + s) for s in self._allowed
        ):
            raise PermanentSendError("invalid_subscription", f"{host} is not a known push service")
        return endpoint.strip(), f"{scheme}://{parts.netloc}", host

    @staticmethod
    def _encrypt(sub: PushSubscription, payload: bytes) -> bytes:
        try:
            receiver = _b64url_decode(sub.p256dh)
            secret = _b64url_decode(sub.auth)
            # pywebpush's own key check is lax; a bad point would fail deep in the ECDH.
            ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), receiver)
        except (ValueError, binascii.Error, UnicodeEncodeError):
            raise PermanentSendError("invalid_subscription", "p256dh is not a P-256 key") from None
        if len(secret) != 16:
            raise PermanentSendError("invalid_subscription", "auth secret must be 16 bytes")
        info: dict[str, Any] = {
            "endpoint": sub.endpoint,
            "keys": {"p256dh": sub.p256dh, "auth": sub.auth},
        }
        encoded = WebPusher(info).encode(payload, content_encoding="aes128gcm")
        return cast(bytes, encoded["body"])

    @staticmethod
    def _raise_for_status(status: int, retry_after: float | None, host: str) -> None:
        if 200 <= status < 300:
            return
        detail = f"push service {host} answered {status}"
        if status in (404, 410):
            raise SubscriptionGone("subscription_gone", detail)
        if status == 429:
            raise TransientSendError("push_rate_limited", detail, retry_after=retry_after)
        if status >= 500:
            raise TransientSendError("push_5xx", detail, retry_after=retry_after)
        if status in (401, 403):
            # VAPID refused, or the subscription was made for another application key.
            raise PermanentSendError("push_unauthorized", detail)
        if status == 413:
            raise PermanentSendError("payload_too_large", detail)
        raise PermanentSendError("push_4xx" if status >= 400 else "push_unexpected", detail)
