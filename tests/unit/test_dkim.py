"""DKIM: key loading with clear errors, and signatures dkimpy verifies on the wire bytes."""

from __future__ import annotations

import base64
import email.policy
import random
from collections.abc import Callable
from pathlib import Path

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from devkit.sinks.smtp_sink import SmtpSink
from services.common.patient_links import PatientLinkSigner
from services.common.settings import Settings, SmtpSettings
from services.domain.mime import ComposedMail
from services.notifier.delivery import EmailTransport
from services.notifier.dkim import (
    DkimKey,
    DkimKeyError,
    DkimSigner,
    DkimSigningTransport,
    dkim_check,
    dns_record,
    load_dkim_key,
)
from services.notifier.email import SmtpOptions, SmtpPool
from services.notifier.patient_mail import PatientMail
from services.notifier.samples import sample_config
from tests.support.mail import CapturingMail, send_reminder

D = "delinde.example.org"
SELECTOR = "rem2026"

_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
_ED = ed25519.Ed25519PrivateKey.generate()


def _pem(key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey, pkcs1: bool = False) -> bytes:
    fmt = serialization.PrivateFormat.PKCS8
    if pkcs1:
        fmt = serialization.PrivateFormat.TraditionalOpenSSL
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())


def _settings(path: Path | None, **overrides: str | None) -> SmtpSettings:
    fields: dict[str, str | None] = {
        "dkim_domain": D,
        "dkim_selector": SELECTOR,
        "dkim_private_key_file": str(path) if path is not None else None,
    }
    fields.update(overrides)
    return SmtpSettings(**fields)  # type: ignore[arg-type]


def _key_file(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "dkim.key"
    path.write_bytes(data)
    return path


def _dns(key: DkimKey) -> Callable[..., bytes]:
    name, value = dns_record(key)

    def lookup(query: bytes, timeout: int = 5) -> bytes:
        assert query.decode().rstrip(".") == name
        return value.encode()

    return lookup


# --------------------------------------------------------------------------- loading


def test_off_when_nothing_is_set() -> None:
    assert load_dkim_key(SmtpSettings()) is None
    assert load_dkim_key(Settings()) is None


def test_partial_settings_name_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(DkimKeyError, match="REMINDERS_SMTP__DKIM_SELECTOR"):
        load_dkim_key(_settings(_key_file(tmp_path, _pem(_RSA)), dkim_selector=None))


def test_missing_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(DkimKeyError, match=r"REMINDERS_SMTP__DKIM_PRIVATE_KEY_FILE .*nope"):
        load_dkim_key(_settings(tmp_path / "nope.pem"))


@pytest.mark.parametrize(
    "data",
    [
        b"-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
        b"just some text",
        base64.b64encode(b"x" * 31),
    ],
)
def test_unreadable_key_is_reported(tmp_path: Path, data: bytes) -> None:
    with pytest.raises(DkimKeyError, match="DKIM key"):
        load_dkim_key(_settings(_key_file(tmp_path, data)))


def _probable_prime(bits: int, rng: random.Random) -> int:
    while True:
        n = rng.getrandbits(bits) | (1 << (bits - 1)) | 1
        if all(pow(a, n - 1, n) == 1 for a in (2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37)):
            return n


def _small_rsa_key() -> rsa.RSAPrivateKey:
    rng = random.Random(512)
    e = 65537
    while True:
        p, q = _probable_prime(256, rng), _probable_prime(256, rng)
        phi = (p - 1) * (q - 1)
        if p != q and phi % e:
            break
    d = pow(e, -1, phi)
    numbers = rsa.RSAPrivateNumbers(
        p=p,
        q=q,
        d=d,
        dmp1=d % (p - 1),
        dmq1=d % (q - 1),
        iqmp=pow(q, -1, p),
        public_numbers=rsa.RSAPublicNumbers(e, p * q),
    )
    return numbers.private_key(unsafe_skip_rsa_key_validation=True)


def test_weak_rsa_key_is_refused(tmp_path: Path) -> None:
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    assert load_dkim_key(_settings(_key_file(tmp_path, _pem(weak)))) is not None
    small_pem = _pem(_small_rsa_key())  # cryptography generates no such key any more
    with pytest.raises(DkimKeyError, match="512 bits"):
        load_dkim_key(_settings(_key_file(tmp_path, small_pem)))


@pytest.mark.parametrize(
    ("data", "algorithm"),
    [
        (_pem(_RSA), "rsa-sha256"),
        (_pem(_RSA, pkcs1=True), "rsa-sha256"),
        (_pem(_ED), "ed25519-sha256"),
        (
            base64.b64encode(
                _ED.private_bytes(
                    serialization.Encoding.Raw,
                    serialization.PrivateFormat.Raw,
                    serialization.NoEncryption(),
                )
            ),
            "ed25519-sha256",
        ),
    ],
    ids=["rsa-pkcs8", "rsa-pkcs1", "ed25519-pem", "ed25519-dknewkey"],
)
def test_key_formats_load(tmp_path: Path, data: bytes, algorithm: str) -> None:
    key = load_dkim_key(_settings(_key_file(tmp_path, data)))
    assert key is not None
    assert key.algorithm == algorithm
    name, value = dns_record(key)
    assert name == f"{SELECTOR}._domainkey.{D}"
    assert value.startswith("v=DKIM1; k=")
    assert "private_key" not in repr(key) or "BEGIN" not in repr(key)


# --------------------------------------------------------------------------- signing


_CONFIG = sample_config(
    name="Huisartsenpraktijk De Linde, Lindelaan, een naam die lang genoeg is om te vouwen"
)
_PATIENT_MAIL = PatientMail(
    public_url="https://beheer.example.org",
    signer=PatientLinkSigner("s"),
    uid_domain="reminders.example.org",
)


async def _reminder_through(transport: EmailTransport) -> None:
    await send_reminder(transport, _PATIENT_MAIL, config=_CONFIG)


@pytest.fixture(params=["rsa", "ed25519"])
def key(request: pytest.FixtureRequest, tmp_path: Path) -> DkimKey:
    data = _pem(_RSA) if request.param == "rsa" else _pem(_ED)
    loaded = load_dkim_key(_settings(_key_file(tmp_path, data)))
    assert loaded is not None
    return loaded


async def test_reminder_verifies_on_the_bytes_the_smtp_client_sends(key: DkimKey) -> None:
    capture = CapturingMail()
    await _reminder_through(DkimSigningTransport(capture, DkimSigner(key)))
    [msg] = capture.sent
    wire = msg.data  # the pool hands these bytes to aiosmtplib's sendmail as they are
    assert wire.startswith(b"DKIM-Signature: v=1; a=" + key.algorithm.encode())
    assert dkim.verify(wire, dnsfunc=_dns(key))
    parsed = email.message_from_bytes(wire, policy=email.policy.compat32)
    unfolded = "".join(str(parsed["DKIM-Signature"]).split())
    signature = dict(dkim.util.parse_tag_value(unfolded.encode()))
    headers = {h.strip().lower() for h in signature[b"h"].split(b":")}
    for name in (
        b"from",
        b"to",
        b"subject",
        b"date",
        b"message-id",
        b"list-unsubscribe",
        b"list-unsubscribe-post",
        b"mime-version",
        b"content-type",
    ):
        assert name in headers
    assert signature[b"d"] == D.encode() and signature[b"s"] == SELECTOR.encode()
    assert signature[b"c"] == b"relaxed/relaxed"


async def test_tampering_breaks_the_signature(key: DkimKey) -> None:
    capture = CapturingMail()
    await _reminder_through(DkimSigningTransport(capture, DkimSigner(key)))
    wire = capture.sent[0].data
    assert dkim.verify(wire, dnsfunc=_dns(key))
    for before, after in (
        (b"Subject: Herinnering", b"Subject: Herinnerin9"),
        (b"List-Unsubscribe: <https://beheer", b"List-Unsubscribe: <https://evil"),
    ):
        assert before in wire
        assert not dkim.verify(wire.replace(before, after, 1), dnsfunc=_dns(key))
    # A second List-Unsubscribe added by someone else does not pass either (over-signed).
    head, _, body = wire.partition(b"\r\n\r\n")
    added = head + b"\r\nList-Unsubscribe: <https://evil.example/x>\r\n\r\n" + body
    assert not dkim.verify(added, dnsfunc=_dns(key))


async def test_a_retry_is_signed_once(key: DkimKey) -> None:
    unsigned = CapturingMail()
    await _reminder_through(unsigned)
    [msg] = unsigned.sent
    capture = CapturingMail()
    transport = DkimSigningTransport(capture, DkimSigner(key))
    await transport.send(msg)
    await transport.send(msg)  # what the retry loop does after a transient failure
    for sent in capture.sent:
        assert sent.data.count(b"DKIM-Signature:") == 1
        assert dkim.verify(sent.data, dnsfunc=_dns(key))
    assert b"DKIM-Signature:" not in msg.data


def test_non_ascii_address_is_signed_as_sent_with_smtputf8(key: DkimKey) -> None:
    # compose_email refuses such addresses today; a mail with one is still signed over
    # the bytes that are sent, and goes out with SMTPUTF8.
    to = "jösé@patient.example.org"
    data = (
        f"From: noreply@{D}\r\nTo: {to}\r\nSubject: Herinnering: uw afspraak op dinsdag\r\n"
        "MIME-Version: 1.0\r\n\r\nTot morgen.\r\n"
    ).encode()
    msg = ComposedMail(sender=f"noreply@{D}", recipient=to, message_id="<x@y.example>", data=data)
    signed = DkimSigner(key).sign(msg)
    assert signed.needs_smtputf8
    assert signed.data.endswith(data)
    assert dkim.verify(signed.data, dnsfunc=_dns(key))


async def test_signature_survives_the_real_smtp_hop(key: DkimKey) -> None:
    with SmtpSink() as sink:
        options = SmtpOptions(
            host="127.0.0.1", port=sink.port, security="none", local_hostname="notifier.test"
        )
        async with SmtpPool(options) as pool:
            await _reminder_through(DkimSigningTransport(pool, DkimSigner(key)))
        [received] = sink.messages
    assert dkim.verify(received.raw, dnsfunc=_dns(key))
    parsed = email.message_from_bytes(received.raw, policy=email.policy.default)
    assert parsed["List-Unsubscribe"].startswith("<https://beheer.example.org/u/")


def test_openssl_rsa_signature_is_dkimpys_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PKCS#1 v1.5 is deterministic: the fast path must give dkimpy's very bytes."""
    from services.notifier.dkim import SIGNED_HEADERS, _sign_bytes

    key = load_dkim_key(_settings(_key_file(tmp_path, _pem(_RSA))))
    assert key is not None
    monkeypatch.setattr(dkim.time, "time", lambda: 1_800_000_000)
    message = f"From: a@{D}\r\nTo: b@example.org\r\nSubject: x\r\n\r\nbody\r\n".encode()
    pure = dkim.sign(
        message,
        SELECTOR.encode(),
        D.encode(),
        key.private_key,
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=[h.encode() for h in SIGNED_HEADERS],
    )
    assert _sign_bytes(key, message) == pure


def test_check_line_for_reminders_check(tmp_path: Path) -> None:
    assert dkim_check(SmtpSettings())[0] == "skip"
    status, text = dkim_check(_settings(_key_file(tmp_path, _pem(_RSA))))
    assert status == "ok" and f"d={D} s={SELECTOR}" in text and "BEGIN" not in text
    status, text = dkim_check(_settings(_key_file(tmp_path, b"garbage")))
    assert status == "FAIL" and "DKIM key" in text


async def test_unaligned_sender_domain_is_warned_once(
    key: DkimKey, caplog: pytest.LogCaptureFixture
) -> None:
    signer = DkimSigner(key)
    capture = CapturingMail()
    other = sample_config(sender={"email": "noreply@elders.example.net", "name": "Elders"})
    for _ in range(2):
        await send_reminder(DkimSigningTransport(capture, signer), None, config=other)
    warnings = [r for r in caplog.records if "does not align" in r.getMessage()]
    assert len(warnings) == 1
    caplog.clear()
    await send_reminder(DkimSigningTransport(capture, signer), None, config=_CONFIG)
    assert not [r for r in caplog.records if "does not align" in r.getMessage()]
