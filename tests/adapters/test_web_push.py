"""WebPushSender against the loopback PushSink: encryption, VAPID, headers, status mapping."""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from devkit.sinks.push_sink import PushSink
from services.domain.errors import (
    PermanentSendError,
    SubscriptionGone,
    TransientSendError,
)
from services.notifier.push import (
    MAX_TTL_SECONDS,
    PushSubscription,
    VapidOptions,
    WebPushSender,
    generate_vapid_keys,
    push_topic,
)

SUBJECT = "mailto:ops@reminders.example.org"
PAYLOAD = json.dumps(
    {"title": "Herinnering", "body": "Morgen 09:30 bij de huisarts. Spoed? Bel de praktijk."}
).encode()
TOPIC = push_topic("01234567", "appt-42")


@pytest.fixture(scope="module")
def vapid_keys() -> tuple[str, str]:
    return generate_vapid_keys()


@pytest.fixture
async def sink() -> AsyncIterator[PushSink]:
    async with PushSink() as running:
        yield running


@pytest.fixture
async def sender(vapid_keys: tuple[str, str]) -> AsyncIterator[WebPushSender]:
    vapid = VapidOptions(private_key=vapid_keys[0], subject=SUBJECT)
    async with WebPushSender(vapid, allow_insecure_loopback=True) as running:
        yield running


@pytest.fixture
def sub(sink: PushSink, sender: WebPushSender) -> PushSubscription:
    return sink.new_subscription(application_server_key=sender.application_server_key)


# ------------------------------------------------------------------ happy path


async def test_payload_arrives_decrypted_with_ttl_topic_and_urgency(
    sink: PushSink, sender: WebPushSender, sub: PushSubscription
) -> None:
    await sender.send(sub, PAYLOAD, ttl=20 * 3600, topic=TOPIC, urgency="high")
    [record] = sink.log
    assert record.sub_id == sink.sub_id_of(sub)
    assert record.payload == PAYLOAD
    assert record.ttl == 20 * 3600
    assert record.topic == TOPIC
    assert record.urgency == "high"
    assert sender.messages_sent == 1


async def test_ttl_is_capped_at_28_days(
    sink: PushSink, sender: WebPushSender, sub: PushSubscription
) -> None:
    await sender.send(sub, PAYLOAD, ttl=90 * 24 * 3600, topic=TOPIC)
    assert sink.log[0].ttl == MAX_TTL_SECONDS == 28 * 24 * 3600


@pytest.mark.parametrize("ttl", [0, -5])
async def test_no_time_left_is_permanent_and_sends_nothing(
    sink: PushSink, sender: WebPushSender, sub: PushSubscription, ttl: int
) -> None:
    with pytest.raises(PermanentSendError) as info:
        await sender.send(sub, PAYLOAD, ttl=ttl, topic=TOPIC)
    assert info.value.reason == "ttl_expired"
    assert sink.requests_seen == 0


async def test_same_topic_replaces_the_pending_message(
    sink: PushSink, sender: WebPushSender, sub: PushSubscription
) -> None:
    other_topic = push_topic("01234567", "appt-43")
    await sender.send(sub, b"first", ttl=3600, topic=TOPIC)
    await sender.send(sub, b"other appointment", ttl=3600, topic=other_topic)
    await sender.send(sub, b"moved: new time", ttl=3600, topic=TOPIC)
    sub_id = sink.sub_id_of(sub)
    assert [r.payload for r in sink.received(sub_id)] == [
        b"first",
        b"other appointment",
        b"moved: new time",
    ]
    assert [r.payload for r in sink.mailbox(sub_id)] == [b"other appointment", b"moved: new time"]
    assert len(sink.deliver(sub_id)) == 2
    assert sink.mailbox(sub_id) == []


def test_push_topic_shape() -> None:
    topic = push_topic("01234567", "appt-42")
    assert re.fullmatch(r"[A-Za-z0-9_-]{32}", topic)
    assert topic == push_topic("01234567", "appt-42")
    assert topic != push_topic("01234567", "appt-43")
    assert topic != push_topic("01234568", "appt-42")


async def test_raw_private_key_form_is_accepted(sink: PushSink) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    raw = key.private_numbers().private_value.to_bytes(32, "big")
    vapid = VapidOptions(
        private_key=base64.urlsafe_b64encode(raw).rstrip(b"=").decode(), subject=SUBJECT
    )
    async with WebPushSender(vapid, allow_insecure_loopback=True) as raw_sender:
        sub = sink.new_subscription(application_server_key=raw_sender.application_server_key)
        await raw_sender.send(sub, PAYLOAD, ttl=60, topic=TOPIC)
    assert sink.log[0].payload == PAYLOAD


def test_generated_public_key_matches_the_sender(vapid_keys: tuple[str, str]) -> None:
    sender = WebPushSender(VapidOptions(private_key=vapid_keys[0], subject=SUBJECT))
    assert sender.application_server_key == vapid_keys[1]
    assert len(base64.urlsafe_b64decode(vapid_keys[1] + "=")) == 65


# ------------------------------------------------------------------ status mapping


async def test_gone_subscription(
    sink: PushSink, sender: WebPushSender, sub: PushSubscription
) -> None:
    sink.gone(sink.sub_id_of(sub))
    with pytest.raises(SubscriptionGone) as info:
        await sender.send(sub, PAYLOAD, ttl=3600, topic=TOPIC)
    assert info.value.reason == "subscription_gone"
    assert isinstance(info.value, PermanentSendError)


async def test_unknown_subscription_is_gone(sink: PushSink, sender: WebPushSender) -> None:
    real = sink.new_subscription()
    unknown = PushSubscription(f"{sink.origin}/push/never-made", real.p256dh, real.auth)
    with pytest.raises(SubscriptionGone):
        await sender.send(unknown, PAYLOAD, ttl=3600, topic=TOPIC)


async def test_rate_limit_and_server_errors_are_transient(
    sink: PushSink, sender: WebPushSender, sub: PushSubscription
) -> None:
    sink.script(sink.sub_id_of(sub), [429, 500, 503], retry_after="7")
    expected = [("push_rate_limited", 7.0), ("push_5xx", None), ("push_5xx", 7.0)]
    for reason, retry_after in expected:
        with pytest.raises(TransientSendError) as info:
            await sender.send(sub, PAYLOAD, ttl=3600, topic=TOPIC)
        assert info.value.reason == reason
        assert info.value.retry_after == retry_after
    await sender.send(sub, PAYLOAD, ttl=3600, topic=TOPIC)  # script used up: 201 again
    assert [r.payload for r in sink.log] == [PAYLOAD]


async def test_retry_after_as_http_date(
    sink: PushSink, sender: WebPushSender, sub: PushSubscription
) -> None:
    sink.script(None, [429], retry_after="Wed, 21 Oct 2015 07:28:00 GMT")
    with pytest.raises(TransientSendError) as info:
        await sender.send(sub, PAYLOAD, ttl=3600, topic=TOPIC)
    assert info.value.retry_after == 0.0  # a date in the past: no extra wait


async def test_other_4xx_is_permanent(
    sink: PushSink, sender: WebPushSender, sub: PushSubscription
) -> None:
    sink.script(None, [400])
    with pytest.raises(PermanentSendError) as info:
        await sender.send(sub, PAYLOAD, ttl=3600, topic=TOPIC)
    assert info.value.reason == "push_4xx"
    assert not isinstance(info.value, SubscriptionGone)


async def test_unreachable_service_is_transient(sender: WebPushSender) -> None:
    async with PushSink() as short_lived:
        sub = short_lived.new_subscription()
    with pytest.raises(TransientSendError) as info:
        await sender.send(sub, PAYLOAD, ttl=3600, topic=TOPIC)
    assert info.value.reason == "push_unavailable"
    assert "/push/" not in info.value.detail  # the endpoint path is a per-user secret


# ------------------------------------------------------------------ input checks


@pytest.mark.parametrize(
    ("endpoint", "allow_loopback"),
    [
        ("http://push.example.org/push/x", True),
        ("http://127.0.0.1:1/push/x", False),
        ("ftp://push.example.org/x", True),
        ("https://user:pw@push.example.org/x", True),
        ("not a url", True),
    ],
)
async def test_unusable_endpoints_are_refused(
    vapid_keys: tuple[str, str], sink: PushSink, endpoint: str, allow_loopback: bool
) -> None:
    real = sink.new_subscription()
    vapid = VapidOptions(private_key=vapid_keys[0], subject=SUBJECT)
    async with WebPushSender(vapid, allow_insecure_loopback=allow_loopback) as strict:
        with pytest.raises(PermanentSendError) as info:
            await strict.send(
                PushSubscription(endpoint, real.p256dh, real.auth), PAYLOAD, ttl=60, topic=TOPIC
            )
    assert info.value.reason == "invalid_subscription"
    assert sink.requests_seen == 0


async def test_host_allow_list(vapid_keys: tuple[str, str], sink: PushSink) -> None:
    vapid = VapidOptions(private_key=vapid_keys[0], subject=SUBJECT)
    async with WebPushSender(vapid, allowed_host_suffixes=["fcm.googleapis.com"]) as strict:
        real = sink.new_subscription()
        evil = PushSubscription("https://internal.example.org/admin", real.p256dh, real.auth)
        with pytest.raises(PermanentSendError) as info:
            await strict.send(evil, PAYLOAD, ttl=60, topic=TOPIC)
    assert info.value.reason == "invalid_subscription"


@pytest.mark.parametrize(
    ("p256dh", "auth"),
    [("AAAA", None), ("!!!not-base64!!!", None), (None, "c2hvcnQ")],
)
async def test_bad_subscription_keys(
    sink: PushSink, sender: WebPushSender, p256dh: str | None, auth: str | None
) -> None:
    real = sink.new_subscription()
    broken = PushSubscription(real.endpoint, p256dh or real.p256dh, auth or real.auth)
    with pytest.raises(PermanentSendError) as info:
        await sender.send(broken, PAYLOAD, ttl=60, topic=TOPIC)
    assert info.value.reason == "invalid_subscription"


async def test_payload_too_large(sender: WebPushSender, sub: PushSubscription) -> None:
    with pytest.raises(PermanentSendError) as info:
        await sender.send(sub, b"x" * 4000, ttl=60, topic=TOPIC)
    assert info.value.reason == "payload_too_large"


async def test_largest_payload_fits_one_record(
    sink: PushSink, sender: WebPushSender, sub: PushSubscription
) -> None:
    await sender.send(sub, b"y" * 3993, ttl=60, topic=TOPIC)
    assert sink.log[0].payload == b"y" * 3993


@pytest.mark.parametrize(
    ("topic", "urgency"),
    [("x" * 33, "normal"), ("has space", "normal"), ("a+b/c=", "normal"), (TOPIC, "urgent")],
)
async def test_bad_topic_or_urgency_is_a_programming_error(
    sender: WebPushSender, sub: PushSubscription, topic: str, urgency: str
) -> None:
    with pytest.raises(ValueError):
        await sender.send(sub, PAYLOAD, ttl=60, topic=topic, urgency=urgency)


# ------------------------------------------------------------------ VAPID checks by the sink


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _public(key: ec.EllipticCurvePrivateKey) -> str:
    return _b64(
        key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
    )


def _jwt(key: ec.EllipticCurvePrivateKey, claims: dict[str, Any], alg: str = "ES256") -> str:
    head = _b64(json.dumps({"typ": "JWT", "alg": alg}).encode())
    body = _b64(json.dumps(claims).encode())
    der = key.sign(f"{head}.{body}".encode(), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    return f"{head}.{body}.{_b64(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


async def _post(
    sink: PushSink,
    sub: PushSubscription,
    authorization: str | None,
    headers: dict[str, str] | None = None,
) -> int:
    if headers is None:
        headers = {"TTL": "60", "Content-Encoding": "aes128gcm"}
    if authorization is not None:
        headers["Authorization"] = authorization
    async with (
        aiohttp.ClientSession() as session,
        session.post(sub.endpoint, data=b"\0" * 100, headers=headers) as resp,
    ):
        await resp.read()
        return resp.status


async def test_sink_refuses_forged_or_invalid_vapid(sink: PushSink) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    other = ec.generate_private_key(ec.SECP256R1())
    sub = sink.new_subscription()
    now = int(time.time())
    good = {"aud": sink.origin, "exp": now + 3600, "sub": SUBJECT}
    elsewhere = {**good, "aud": "https://push.example.org"}

    def vapid(token: str, k: str) -> str:
        return f"vapid t={token}, k={k}"

    valid = _jwt(key, good)
    head, body, sig = valid.split(".")
    tampered_claims = _b64(json.dumps({**good, "sub": "mailto:evil@example.org"}).encode())
    cases = {
        "signed by another key": vapid(_jwt(other, good), _public(key)),
        "claims changed after signing": vapid(f"{head}.{tampered_claims}.{sig}", _public(key)),
        "signature bytes flipped": vapid(f"{head}.{body}.{sig[:-4]}AAAA", _public(key)),
        "expired": vapid(_jwt(key, {**good, "exp": now - 10}), _public(key)),
        "exp beyond 24h": vapid(_jwt(key, {**good, "exp": now + 48 * 3600}), _public(key)),
        "wrong audience": vapid(_jwt(key, elsewhere), _public(key)),
        "no sub": vapid(_jwt(key, {"aud": sink.origin, "exp": now + 60}), _public(key)),
        "alg none": vapid(_jwt(key, good, alg="none"), _public(key)),
        "garbage token": vapid("not.a.jwt", _public(key)),
    }
    for case, header in cases.items():
        assert await _post(sink, sub, header) == 403, case
    assert await _post(sink, sub, None) == 401
    assert await _post(sink, sub, f"WebPush {valid}") == 401
    assert sink.log == []
    # The same token, untouched, passes the VAPID check (and fails only at decryption).
    assert await _post(sink, sub, vapid(valid, _public(key))) == 400
    assert sink.rejections[-1].reason.startswith("cannot decrypt")


async def test_subscription_bound_to_another_key_is_refused(
    sink: PushSink, sender: WebPushSender
) -> None:
    _, someone_elses_key = generate_vapid_keys()
    sub = sink.new_subscription(application_server_key=someone_elses_key)
    with pytest.raises(PermanentSendError) as info:
        await sender.send(sub, PAYLOAD, ttl=60, topic=TOPIC)
    assert info.value.reason == "push_unauthorized"
    assert sink.rejections[-1].status == 403
    assert sink.log == []


async def test_sink_requires_ttl_and_aes128gcm(sink: PushSink) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    sub = sink.new_subscription()
    claims = {"aud": sink.origin, "exp": int(time.time()) + 3600, "sub": SUBJECT}
    auth = f"vapid t={_jwt(key, claims)}, k={_public(key)}"
    assert await _post(sink, sub, auth, {"Content-Encoding": "aes128gcm"}) == 400
    assert await _post(sink, sub, auth, {"TTL": "soon", "Content-Encoding": "aes128gcm"}) == 400
    assert await _post(sink, sub, auth, {"TTL": "60", "Content-Encoding": "aesgcm"}) == 415
    assert [r.status for r in sink.rejections] == [400, 400, 415]


def test_vapid_subject_is_checked_at_construction(vapid_keys: tuple[str, str]) -> None:
    for subject in ("ops@example.org", "mailto:nobody", "http://example.org"):
        with pytest.raises(ValueError):
            WebPushSender(VapidOptions(private_key=vapid_keys[0], subject=subject))


def test_garbage_vapid_key_is_refused() -> None:
    with pytest.raises(ValueError):
        WebPushSender(VapidOptions(private_key="not a key", subject=SUBJECT))
