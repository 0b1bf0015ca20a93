"""SMTP security (auto by default) and saying why no mail can go out (issue 14, points 1-2).

The SMTP servers are the loopback SmtpSink; "a host that is not loopback" is the pure
policy plus one sink treated as remote (SmtpOptions.loopback=False).
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import trustme
from prometheus_client import REGISTRY

from devkit.sinks.smtp_sink import SmtpSink
from services.common.settings import Settings, SmtpSettings
from services.domain.errors import TransientSendError
from services.notifier.app import NotifierService, smtp_options
from services.notifier.email import (
    ComposedMail,
    SmtpOptions,
    SmtpPool,
    TlsPlan,
    compose_email,
    tls_plan,
)
from services.notifier.mail_health import PROBLEM_REASONS

PASSWORD = "Sup3r-Secret-Passw0rd"


@dataclass(frozen=True)
class Tls:
    ca: str
    server: str


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Tls:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    folder = tmp_path_factory.mktemp("smtp-tls")
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    cert.private_key_and_cert_chain_pem.write_to_path(str(folder / "server.pem"))
    return Tls(ca=str(folder / "ca.pem"), server=str(folder / "server.pem"))


@pytest.fixture
def plain_relay() -> Iterator[SmtpSink]:
    with SmtpSink() as sink:
        yield sink


def _opts(port: int, **overrides: object) -> SmtpOptions:
    base = SmtpOptions(host="127.0.0.1", port=port, timeout=5.0, local_hostname="notifier.test")
    return replace(base, **overrides)  # type: ignore[arg-type]


def _msg() -> ComposedMail:
    return compose_email(
        reminder_id="01054321/appt-1/2026-12-02T08:30:00Z",
        from_address="noreply@praktijk.example",
        from_name="Praktijk",
        to="patient@example.org",
        subject="Herinnering",
        text="Afspraak",
        html="<p>Afspraak</p>",
        unsubscribe_url=None,
        message_id_domain="reminders.example.org",
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _gauge(reason: str) -> float | None:
    return REGISTRY.get_sample_value("reminders_notifier_mail_blocked", {"reason": reason})


# ------------------------------------------------------------------ policy (pure)


def test_auto_is_the_default_setting() -> None:
    assert SmtpSettings().security == "auto"
    assert smtp_options(SmtpSettings()).security == "auto"


def test_auto_requires_a_checked_starttls_for_any_host_but_loopback() -> None:
    required = TlsPlan(implicit_tls=False, start_tls=True, verify=True)
    for host in ("smtp.example.org", "10.0.0.5", "192.168.1.10", "::ffff:10.0.0.1"):
        assert tls_plan(host, "auto") == required
    opportunistic = TlsPlan(implicit_tls=False, start_tls=None, verify=False)
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.53"):
        assert tls_plan(host, "auto") == opportunistic
    assert tls_plan("127.0.0.1", "auto", loopback=False) == required


def test_none_starttls_and_tls_keep_their_meaning() -> None:
    assert tls_plan("smtp.example.org", "none") == TlsPlan(False, False, False)
    assert tls_plan("127.0.0.1", "starttls") == TlsPlan(False, True, True)
    assert tls_plan("127.0.0.1", "tls") == TlsPlan(True, False, True)


# ------------------------------------------------------------------ against a relay


async def test_auto_delivers_to_a_plain_loopback_relay(plain_relay: SmtpSink) -> None:
    # The issue: only REMINDERS_SMTP__HOST and __PORT set, a relay without STARTTLS.
    settings = SmtpSettings(host="127.0.0.1", port=plain_relay.port)
    async with SmtpPool(replace(smtp_options(settings), local_hostname="n.test")) as pool:
        await pool.send(_msg())
        problem, text = await pool.probe()
    assert len(plain_relay.messages) == 1
    assert problem is None
    assert "no TLS (none offered)" in text


async def test_auto_uses_starttls_when_a_loopback_relay_offers_it(tls: Tls) -> None:
    # Self-signed for us (no CA given): the hop stays on the machine, so it is not checked.
    with SmtpSink(cert_file=tls.server) as relay:
        async with SmtpPool(_opts(relay.port)) as pool:
            problem, text = await pool.probe()
            await pool.send(_msg())
    assert problem is None
    assert "STARTTLS, certificate not checked" in text
    assert len(relay.messages) == 1


async def test_auto_refuses_a_remote_relay_without_starttls(
    plain_relay: SmtpSink, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="services.notifier.mail")
    async with SmtpPool(_opts(plain_relay.port, loopback=False)) as pool:
        with pytest.raises(TransientSendError) as info:
            await pool.send(_msg())
        problem = pool.problem
        assert problem is not None and problem.reason == "starttls_not_offered"
        assert _gauge("starttls_not_offered") == 1.0
    assert plain_relay.messages == []
    assert info.value.reason == "smtp_tls_failed"  # an outage, not a failed reminder
    assert "does not offer STARTTLS" in problem.message
    assert "REMINDERS_SMTP__SECURITY" in problem.message
    lines = [r for r in caplog.records if r.name == "services.notifier.mail"]
    assert len(lines) == 1 and lines[0].getMessage().startswith("no mail can be sent:")
    assert lines[0].__dict__["smtp_problem"] == "starttls_not_offered"


async def test_auto_checks_the_certificate_of_a_remote_host(tls: Tls) -> None:
    with SmtpSink(cert_file=tls.server) as relay:
        async with SmtpPool(_opts(relay.port, loopback=False)) as pool:
            problem, text = await pool.probe()
        assert problem is not None and problem.reason == "certificate_rejected"
        assert "REMINDERS_SMTP__CA_FILE" in text
        async with SmtpPool(_opts(relay.port, loopback=False, ca_file=tls.ca)) as pool:
            problem, text = await pool.probe()
        assert problem is None
        assert "STARTTLS, certificate checked" in text


async def test_wrong_port_says_connection_refused_at_host_and_port() -> None:
    port = _free_port()
    async with SmtpPool(_opts(port)) as pool:
        problem, text = await pool.probe()
    assert problem is not None and problem.reason == "connection_refused"
    assert f"connection refused at 127.0.0.1:{port}" in text
    assert "REMINDERS_SMTP__PORT" in text


async def test_wrong_password_says_auth_rejected_and_never_the_password(tls: Tls) -> None:
    with SmtpSink(cert_file=tls.server, auth=("notifier", PASSWORD)) as relay:
        good = _opts(
            relay.port, security="starttls", ca_file=tls.ca, username="notifier", password=PASSWORD
        )
        async with SmtpPool(good) as pool:
            problem, text = await pool.probe()
        assert problem is None and "AUTH accepted" in text
        async with SmtpPool(replace(good, password="wrong-" + PASSWORD)) as pool:
            problem, text = await pool.probe()
            with pytest.raises(TransientSendError) as info:
                await pool.send(_msg())
    assert problem is not None and problem.reason == "auth_rejected"
    assert "REMINDERS_SMTP__USERNAME and REMINDERS_SMTP__PASSWORD" in text
    assert PASSWORD not in text + str(info.value) + repr(problem)
    assert "notifier" not in text  # the user name may be a person's address


async def test_recovery_clears_the_reason_and_the_gauge(plain_relay: SmtpSink) -> None:
    async with SmtpPool(_opts(plain_relay.port)) as pool:
        plain_relay.set_down(True)
        assert await pool.check() is not None
        assert _gauge("connection_refused") == 1.0
        plain_relay.set_down(False)
        assert await pool.check() is None
        assert pool.problem is None
    assert all(_gauge(r) == 0.0 for r in PROBLEM_REASONS)


async def test_watch_finds_the_problem_before_any_mail_is_due() -> None:
    async with SmtpPool(_opts(_free_port(), recheck_seconds=0.05)) as pool:
        pool.watch()
        for _ in range(100):
            if pool.problem is not None:
                break
            await _sleep(0.02)
        assert pool.problem is not None and pool.problem.reason == "connection_refused"


async def _sleep(seconds: float) -> None:
    import asyncio

    await asyncio.sleep(seconds)


async def test_notifier_is_not_ready_while_no_mail_can_go_out() -> None:
    settings = Settings(smtp=SmtpSettings(host="127.0.0.1", port=_free_port()))
    service = NotifierService(settings)
    pool = SmtpPool(smtp_options(settings.smtp))
    await pool.start()
    try:
        await pool.check()
        service._pool = pool  # what _start() sets up, without Kafka
        ready, details = service.readiness()
    finally:
        await pool.close()
    assert ready is False
    assert details["mail"] == {"problem": "connection_refused"}
    reason = str(details["reason"])
    assert reason.startswith("no mail can be sent: connection refused at 127.0.0.1:")
    json.dumps(details)  # what /readyz serves


def test_the_alert_rule_and_runbook_name_the_metric() -> None:
    root = Path(__file__).resolve().parents[2]
    alerts = (root / "deploy/prometheus/alerts.yml").read_text(encoding="utf-8")
    runbook = (root / "docs/operations.md").read_text(encoding="utf-8")
    assert "reminders_notifier_mail_blocked" in alerts
    assert "RemindersMailCannotBeSent" in alerts and "RemindersMailCannotBeSent" in runbook
