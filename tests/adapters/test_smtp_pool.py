"""SmtpPool against the local SmtpSink: TLS, AUTH, faults, reconnects, pooling limits."""

from __future__ import annotations

import asyncio
import mailbox
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import trustme

from devkit.sinks.smtp_sink import SmtpSink
from services.domain.errors import PermanentSendError, TransientSendError
from services.notifier.email import ComposedMail, SmtpOptions, SmtpPool, compose_email


@dataclass(frozen=True)
class TlsFiles:
    ca: str
    server: str  # key + certificate chain, PEM


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    folder = tmp_path_factory.mktemp("tls")
    ca.cert_pem.write_to_path(str(folder / "ca.pem"))
    cert.private_key_and_cert_chain_pem.write_to_path(str(folder / "server.pem"))
    return TlsFiles(ca=str(folder / "ca.pem"), server=str(folder / "server.pem"))


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with SmtpSink() as running:
        yield running


def _options(sink: SmtpSink, **overrides: object) -> SmtpOptions:
    base = SmtpOptions(
        host="127.0.0.1",
        port=sink.port,
        security="none",
        pool_size=2,
        timeout=5.0,
        local_hostname="notifier.test",
    )
    return replace(base, **overrides)  # type: ignore[arg-type]


@pytest.fixture
async def pool(sink: SmtpSink) -> AsyncIterator[SmtpPool]:
    async with SmtpPool(_options(sink)) as running:
        yield running


def _msg(n: int, to: str | None = None) -> ComposedMail:
    return compose_email(
        reminder_id=f"practice-1/appt-{n}/2026-12-01T08:30:00Z",
        from_address="noreply@praktijk.example",
        from_name="Huisartsenpraktijk Test",
        to=to or f"patient{n}@example.org",
        subject=f"Herinnering {n}",
        text=f"Afspraak {n}",
        html=f"<p>Afspraak {n}</p>",
        unsubscribe_url="https://portaal.example.org/prefs",
        message_id_domain="reminders.example.org",
    )


async def test_plain_send_reuses_one_connection(sink: SmtpSink, pool: SmtpPool) -> None:
    sent = [_msg(i) for i in range(3)]
    for msg in sent:
        await pool.send(msg)
    assert sink.message_ids() == [m.message_id for m in sent]
    received = sink.messages[0]
    assert received.rcpt_tos == ("patient0@example.org",)
    assert received.mail_from == "noreply@praktijk.example"
    assert received.message["Subject"] == "Herinnering 0"
    assert pool.messages_sent == 3
    assert pool.connections_opened == 1
    assert sink.connections_total == 1


async def test_starttls_with_a_private_ca(tls_files: TlsFiles) -> None:
    with SmtpSink(cert_file=tls_files.server) as tls_sink:
        opts = _options(tls_sink, security="starttls", ca_file=tls_files.ca)
        async with SmtpPool(opts) as pool:
            await pool.send(_msg(1))
        assert len(tls_sink.messages) == 1


async def test_starttls_refuses_an_untrusted_certificate(tls_files: TlsFiles) -> None:
    with SmtpSink(cert_file=tls_files.server) as tls_sink:
        async with SmtpPool(_options(tls_sink, security="starttls")) as pool:
            with pytest.raises(TransientSendError) as info:
                await pool.send(_msg(1))
        assert info.value.reason == "smtp_tls_failed"
        assert tls_sink.messages == []


async def test_implicit_tls(tls_files: TlsFiles) -> None:
    with SmtpSink(cert_file=tls_files.server, implicit_tls=True) as tls_sink:
        opts = _options(tls_sink, security="tls", ca_file=tls_files.ca)
        async with SmtpPool(opts) as pool:
            await pool.send(_msg(1))
        assert len(tls_sink.messages) == 1


async def test_auth_over_starttls(tls_files: TlsFiles) -> None:
    with SmtpSink(cert_file=tls_files.server, auth=("notifier", "s3cret")) as auth_sink:
        good = _options(
            auth_sink,
            security="starttls",
            ca_file=tls_files.ca,
            username="notifier",
            password="s3cret",
        )
        async with SmtpPool(good) as pool:
            await pool.send(_msg(1))
        assert len(auth_sink.messages) == 1

        async with SmtpPool(replace(good, password="wrong")) as pool:
            with pytest.raises(TransientSendError) as info:
                await pool.send(_msg(2))
        assert info.value.reason == "smtp_auth_failed"
        assert "wrong" not in str(info.value)
        assert len(auth_sink.messages) == 1


def test_auth_without_tls_is_refused_for_remote_hosts() -> None:
    with pytest.raises(ValueError):
        SmtpOptions(host="smtp.example.org", port=25, security="none", username="u", password="p")


async def test_reconnects_after_the_server_was_down(sink: SmtpSink, pool: SmtpPool) -> None:
    await pool.send(_msg(1))
    sink.set_down(True)
    for n in (2, 3):
        # First the pooled connection turns out dead, then connects are refused.
        with pytest.raises(TransientSendError) as info:
            await pool.send(_msg(n))
        assert info.value.reason == "smtp_unavailable"
    sink.set_down(False)
    await pool.send(_msg(4))
    assert len(sink.messages) == 2
    assert pool.connections_opened == 2


async def test_idle_connection_is_checked_with_noop(sink: SmtpSink) -> None:
    async with SmtpPool(_options(sink, idle_noop_seconds=0.0)) as pool:
        await pool.send(_msg(1))
        # Drop the connection behind the client's back; NOOP notices and we reconnect.
        sink.set_down(True)
        sink.set_down(False)
        await pool.send(_msg(2))
    assert len(sink.messages) == 2
    assert pool.connections_opened == 2


async def test_data_4xx_is_transient_and_keeps_the_connection(
    sink: SmtpSink, pool: SmtpPool
) -> None:
    sink.fail_next(1, code=451)
    with pytest.raises(TransientSendError) as info:
        await pool.send(_msg(1))
    assert info.value.reason == "smtp_4xx"
    assert "451" in info.value.detail
    await pool.send(_msg(1))
    assert len(sink.messages) == 1
    assert pool.connections_opened == 1


async def test_rcpt_4xx_is_transient(sink: SmtpSink, pool: SmtpPool) -> None:
    sink.fail_next(1, code=450, stage="rcpt")
    with pytest.raises(TransientSendError) as info:
        await pool.send(_msg(1))
    assert info.value.reason == "smtp_4xx"
    await pool.send(_msg(1))
    assert len(sink.messages) == 1


async def test_recipient_5xx_is_permanent_and_detail_has_no_address(
    sink: SmtpSink, pool: SmtpPool
) -> None:
    sink.reject_recipients({"gone.patient@example.org"})
    with pytest.raises(PermanentSendError) as info:
        await pool.send(_msg(1, to="gone.patient@example.org"))
    assert info.value.reason == "recipient_refused"
    assert "550" in info.value.detail
    assert "gone.patient" not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__
    await pool.send(_msg(2))  # the session survived the refusal
    assert [m.rcpt_tos for m in sink.messages] == [("patient2@example.org",)]
    assert pool.connections_opened == 1


async def test_data_5xx_is_permanent(sink: SmtpSink, pool: SmtpPool) -> None:
    sink.fail_next(1, code=554)
    with pytest.raises(PermanentSendError) as info:
        await pool.send(_msg(1))
    assert info.value.reason == "smtp_5xx"


async def test_connection_is_replaced_after_k_messages(sink: SmtpSink) -> None:
    async with SmtpPool(_options(sink, max_messages_per_connection=3)) as pool:
        for n in range(7):
            await pool.send(_msg(n))
        assert pool.connections_opened == 3
    assert len(sink.messages) == 7
    assert sink.connections_total == 3


async def test_concurrent_sends_use_at_most_pool_size_connections(sink: SmtpSink) -> None:
    async with SmtpPool(_options(sink, pool_size=3)) as pool:
        await asyncio.gather(*(pool.send(_msg(n)) for n in range(40)))
        assert pool.connections_opened == 3
        assert pool.messages_sent == 40
    assert sink.max_concurrent_connections <= 3
    assert len(set(sink.message_ids())) == 40


async def test_close_quits_connections_and_refuses_new_sends(sink: SmtpSink) -> None:
    pool = SmtpPool(_options(sink, pool_size=2))
    await pool.start()
    await asyncio.gather(pool.send(_msg(1)), pool.send(_msg(2)))
    await pool.close()
    assert pool.connections_closed == pool.connections_opened == 2
    with pytest.raises(RuntimeError):
        await pool.send(_msg(3))
    for _ in range(50):
        if sink.connection_count == 0:
            break
        await asyncio.sleep(0.02)
    assert sink.connection_count == 0


async def test_connection_refused_is_transient() -> None:
    with SmtpSink() as gone:
        port = gone.port
    async with SmtpPool(SmtpOptions("127.0.0.1", port, security="none", timeout=2)) as pool:
        with pytest.raises(TransientSendError) as info:
            await pool.send(_msg(1))
    assert info.value.reason == "smtp_unavailable"


async def test_silent_server_times_out() -> None:
    async def say_nothing(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # never greets; returns when the client hangs up
        writer.close()

    server = await asyncio.start_server(say_nothing, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        opts = SmtpOptions("127.0.0.1", port, security="none", timeout=0.3)
        async with SmtpPool(opts) as pool:
            with pytest.raises(TransientSendError) as info:
                await pool.send(_msg(1))
        assert info.value.reason == "timeout"
    finally:
        server.close()
        await server.wait_closed()


async def test_sink_writes_an_mbox(tmp_path: Path) -> None:
    path = tmp_path / "demo.mbox"
    with SmtpSink(mbox_path=str(path)) as mbox_sink:
        async with SmtpPool(_options(mbox_sink)) as pool:
            await pool.send(_msg(1))
            await pool.send(_msg(2))
    box = mailbox.mbox(str(path))
    try:
        assert [m["Subject"] for m in box] == ["Herinnering 1", "Herinnering 2"]
    finally:
        box.close()


async def test_a_non_ascii_address_goes_out_with_smtputf8(sink: SmtpSink, pool: SmtpPool) -> None:
    # compose_email refuses such addresses today; a mail with one still reaches a server
    # that offers SMTPUTF8, with its bytes as composed.
    to = "jösé@patient.example.org"
    data = (
        f"From: noreply@praktijk.example\r\nTo: {to}\r\nSubject: x\r\n"
        "Message-ID: <u@reminders.example.org>\r\n\r\nTot morgen.\r\n"
    ).encode()
    await pool.send(
        ComposedMail(
            sender="noreply@praktijk.example",
            recipient=to,
            message_id="<u@reminders.example.org>",
            data=data,
        )
    )
    [received] = sink.messages
    assert received.rcpt_tos == (to,)
    assert received.raw.endswith(b"Tot morgen.\r\n")


async def test_an_address_aiosmtplib_refuses_leaves_the_session_usable(
    sink: SmtpSink, pool: SmtpPool
) -> None:
    # aiosmtplib refuses a command-line control character after MAIL went out: the pool
    # resets the envelope, so the next mail on the same connection is not refused.
    bad = replace(_msg(1), recipient="patient1@example.org\x7f")
    with pytest.raises(PermanentSendError) as info:
        await pool.send(bad)
    assert info.value.reason == "invalid_address"
    await pool.send(_msg(2))
    assert [m.rcpt_tos for m in sink.messages] == [("patient2@example.org",)]
    assert pool.connections_opened == 1


async def test_mail_with_bare_line_feeds_still_goes_out_whole(
    sink: SmtpSink, pool: SmtpPool
) -> None:
    # The SIZE option counts what DATA transmits, also for bytes that are not CRLF.
    msg = _msg(1)
    await pool.send(replace(msg, data=msg.data.replace(b"\r\n", b"\n")))
    await pool.send(msg)
    assert len(sink.messages) == 2
    assert sink.messages[0].raw == sink.messages[1].raw


async def test_a_server_that_stops_answering_mid_mail_times_out() -> None:
    # Greets and answers EHLO, then says nothing to MAIL: the transaction's deadline
    # passes, the session is dropped (not reused) and the failure is transient.
    async def stall_at_mail(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 stall.test ESMTP\r\n")
        while line := await reader.readline():
            if line.upper().startswith((b"EHLO", b"HELO")):
                writer.write(b"250-stall.test\r\n250 SIZE 1000000\r\n")
            elif line.upper().startswith(b"QUIT"):
                writer.write(b"221 bye\r\n")
            # MAIL: no answer
        writer.close()

    server = await asyncio.start_server(stall_at_mail, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        opts = SmtpOptions("127.0.0.1", port, security="none", timeout=0.3, pool_size=1)
        async with SmtpPool(opts) as pool:
            for _ in range(2):
                with pytest.raises(TransientSendError) as info:
                    await pool.send(_msg(1))
                assert info.value.reason == "timeout"
            assert pool.connections_opened == 2  # the stalled session was not reused
    finally:
        server.close()
        await server.wait_closed()
