"""A loopback Web Push service that checks what a real one checks, and decrypts payloads.

It plays both the push service (RFC 8030 + VAPID, RFC 8292) and the browser (it holds the
subscription's private key and auth secret, RFC 8291), so tests and the demo can see the
plaintext a phone would show. Runs on the caller's event loop.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import http_ece
from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from services.notifier.push import PushSubscription

__all__ = ["PushRecord", "PushSink", "Rejection"]

_TOPIC = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_URGENCIES = frozenset({"very-low", "low", "normal", "high"})
_MAX_BODY = 4096
_MAX_JWT_LIFETIME = 24 * 3600
_CLOCK_SKEW = 60


@dataclass(frozen=True)
class PushRecord:
    """One accepted push message, decrypted."""

    sub_id: str
    message_id: str
    ttl: int
    topic: str | None
    urgency: str
    payload: bytes
    received_at: float


@dataclass(frozen=True)
class Rejection:
    """A request the sink refused, and why (for test diagnostics)."""

    sub_id: str
    status: int
    reason: str


@dataclass
class _Client:
    private_key: ec.EllipticCurvePrivateKey
    auth: bytes
    application_server_key: str | None


class _Refuse(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def _b64d(text: str) -> bytes:
    data = text.strip().encode("ascii")
    return base64.urlsafe_b64decode(data + b"=" * (-len(data) % 4))


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class PushSink:
    """Loopback push service: `POST /push/{sub_id}`, answers 201 like the real ones.

    `log` keeps every accepted message; `mailbox(sub_id)` is what an offline device
    would still receive (a message with the same Topic replaces the earlier one).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.host = host
        self.port = port
        self._clock = clock
        self._runner: web.AppRunner | None = None
        self._clients: dict[str, _Client] = {}
        self._gone: set[str] = set()
        self._scripts: dict[str | None, deque[int]] = {}
        self._retry_after: str | None = "1"
        self._mailboxes: dict[str, list[PushRecord]] = {}
        self.log: list[PushRecord] = []
        self.rejections: list[Rejection] = []
        self.requests_seen = 0

    # ----------------------------------------------------------------- lifecycle

    @property
    def origin(self) -> str:
        """scheme://host:port, the `aud` a VAPID token for this service must carry."""
        return f"http://{self.host}:{self.port}"

    async def __aenter__(self) -> PushSink:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        if self._runner is not None:
            return
        app = web.Application(client_max_size=64 * 1024)
        app.router.add_post("/push/{sub_id}", self._handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        self._runner = runner
        self.port = int(runner.addresses[0][1])

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    # ----------------------------------------------------------------- subscriptions

    def new_subscription(self, application_server_key: str | None = None) -> PushSubscription:
        """Subscribe a fresh "browser": a P-256 key pair and a 16-byte auth secret.

        With `application_server_key`, only messages signed with that VAPID key are
        accepted (403 otherwise), as real push services bind subscriptions.
        """
        sub_id = secrets.token_urlsafe(16)
        key = ec.generate_private_key(ec.SECP256R1())
        auth = secrets.token_bytes(16)
        bound = _b64e(_b64d(application_server_key)) if application_server_key else None
        self._clients[sub_id] = _Client(key, auth, bound)
        public = key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        return PushSubscription(
            endpoint=f"{self.origin}/push/{sub_id}", p256dh=_b64e(public), auth=_b64e(auth)
        )

    @staticmethod
    def sub_id_of(sub: PushSubscription) -> str:
        return sub.endpoint.rstrip("/").rsplit("/", 1)[-1]

    # ----------------------------------------------------------------- faults

    def script(
        self, sub_id: str | None, statuses: Iterable[int], *, retry_after: str | None = "1"
    ) -> None:
        """Answer the next requests (for one subscription, or any when None) with these
        statuses, in order, then 201 again. 429/503 carry `Retry-After`."""
        self._scripts.setdefault(sub_id, deque()).extend(statuses)
        self._retry_after = retry_after

    def gone(self, sub_id: str) -> None:
        """The subscription expired or was revoked: 410 from now on."""
        self._gone.add(sub_id)

    # ----------------------------------------------------------------- views

    def mailbox(self, sub_id: str) -> list[PushRecord]:
        """Messages waiting for the (offline) device, newest last."""
        return list(self._mailboxes.get(sub_id, []))

    def deliver(self, sub_id: str) -> list[PushRecord]:
        """The device comes online: hand over and clear its waiting messages."""
        return self._mailboxes.pop(sub_id, [])

    def received(self, sub_id: str) -> list[PushRecord]:
        return [r for r in self.log if r.sub_id == sub_id]

    # ----------------------------------------------------------------- the service

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        sub_id = request.match_info["sub_id"]
        self.requests_seen += 1
        try:
            return await self._accept(sub_id, request)
        except _Refuse as refusal:
            self.rejections.append(Rejection(sub_id, refusal.status, refusal.reason))
            headers = {}
            if refusal.status in (429, 503) and self._retry_after is not None:
                headers["Retry-After"] = self._retry_after
            return web.Response(status=refusal.status, text=refusal.reason, headers=headers)

    async def _accept(self, sub_id: str, request: web.Request) -> web.StreamResponse:
        client = self._clients.get(sub_id)
        if client is None:
            raise _Refuse(404, "no such subscription")
        if sub_id in self._gone:
            raise _Refuse(410, "subscription gone")
        key = self._verify_vapid(request.headers.get("Authorization"))
        if client.application_server_key is not None and key != client.application_server_key:
            raise _Refuse(403, "VAPID key does not match the subscription")
        scripted = self._next_scripted(sub_id)
        if scripted is not None and not 200 <= scripted < 300:
            raise _Refuse(scripted, "scripted")

        ttl_text = request.headers.get("TTL")
        if ttl_text is None or not ttl_text.strip().isdigit():
            raise _Refuse(400, "TTL header missing or not a number")
        topic = request.headers.get("Topic")
        if topic is not None and not _TOPIC.match(topic):
            raise _Refuse(400, "Topic must be at most 32 URL-safe base64 characters")
        urgency = request.headers.get("Urgency", "normal")
        if urgency not in _URGENCIES:
            raise _Refuse(400, "bad Urgency")
        if request.headers.get("Content-Encoding", "").lower() != "aes128gcm":
            raise _Refuse(415, "Content-Encoding must be aes128gcm")
        body = await request.read()
        if len(body) > _MAX_BODY:
            raise _Refuse(413, "payload too large")
        try:
            payload = http_ece.decrypt(
                body, private_key=client.private_key, auth_secret=client.auth, version="aes128gcm"
            )
        except Exception as exc:  # http_ece raises several types for bad input
            raise _Refuse(400, f"cannot decrypt ({type(exc).__name__})") from None

        record = PushRecord(
            sub_id=sub_id,
            message_id=secrets.token_urlsafe(12),
            ttl=int(ttl_text),
            topic=topic,
            urgency=urgency,
            payload=bytes(payload),
            received_at=self._clock(),
        )
        self.log.append(record)
        box = self._mailboxes.setdefault(sub_id, [])
        if topic is not None:
            # RFC 8030 section 5.4: a message with the same topic replaces the pending one.
            box[:] = [r for r in box if r.topic != topic]
        box.append(record)
        return web.Response(
            status=scripted if scripted is not None else 201,
            headers={"Location": f"{self.origin}/message/{record.message_id}"},
        )

    def _next_scripted(self, sub_id: str) -> int | None:
        for key in (sub_id, None):
            queue = self._scripts.get(key)
            if queue:
                return queue.popleft()
        return None

    def _verify_vapid(self, header: str | None) -> str:
        """Check `vapid t=<jwt>, k=<key>`; return the key. 401 if absent, 403 if invalid."""
        if not header:
            raise _Refuse(401, "Authorization missing")
        scheme, _, rest = header.strip().partition(" ")
        if scheme.lower() != "vapid":
            raise _Refuse(401, "Authorization scheme must be vapid")
        params: dict[str, str] = {}
        for part in rest.split(","):
            name, sep, value = part.strip().partition("=")
            if sep:
                params[name.strip().lower()] = value.strip()
        token, key_text = params.get("t"), params.get("k")
        if not token or not key_text:
            raise _Refuse(401, "vapid needs t= and k=")
        try:
            raw_key = _b64d(key_text)
            public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw_key)
            head_b64, claims_b64, sig_b64 = token.split(".")
            head: Any = json.loads(_b64d(head_b64))
            claims: Any = json.loads(_b64d(claims_b64))
            signature = _b64d(sig_b64)
        except (ValueError, binascii.Error, UnicodeError):
            raise _Refuse(403, "malformed VAPID token or key") from None
        if not isinstance(head, dict) or head.get("alg") != "ES256":
            raise _Refuse(403, "JWT alg must be ES256")
        if len(signature) != 64:
            raise _Refuse(403, "ES256 signature must be 64 bytes")
        der = encode_dss_signature(
            int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")
        )
        try:
            public.verify(der, f"{head_b64}.{claims_b64}".encode(), ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise _Refuse(403, "VAPID signature does not verify") from None
        if not isinstance(claims, dict):
            raise _Refuse(403, "JWT claims must be an object")
        if claims.get("aud") != self.origin:
            raise _Refuse(403, "JWT aud is not this push service")
        exp, now = claims.get("exp"), self._clock()
        if not isinstance(exp, int) or isinstance(exp, bool):
            raise _Refuse(403, "JWT exp missing")
        if exp <= now:
            raise _Refuse(403, "JWT expired")
        if exp > now + _MAX_JWT_LIFETIME + _CLOCK_SKEW:
            raise _Refuse(403, "JWT exp more than 24 hours ahead")
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub.startswith(("mailto:", "https:")):
            raise _Refuse(403, "JWT sub must be a mailto: or https: URL")
        return _b64e(raw_key)
