"""A local SMTP server (aiosmtpd) that keeps what it receives: for the demo and the tests.

It runs its own event loop in a thread, so it can be driven from synchronous code and
never competes with the caller's loop. Fault controls let tests make it refuse
connections, answer 4xx or reject recipients.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import hmac
import logging
import mailbox
import ssl
import threading
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass
from email.message import EmailMessage
from types import TracebackType
from typing import Any, Literal, TypeVar, cast

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

__all__ = ["ReceivedMessage", "SmtpSink"]

T = TypeVar("T")


@dataclass(frozen=True)
class ReceivedMessage:
    """One accepted message: envelope and the parsed content."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage
    raw: bytes


class _Handler:
    """aiosmtpd hooks; they run on the sink's loop and consult the sink's fault state."""

    def __init__(self, sink: SmtpSink) -> None:
        self._sink = sink

    async def handle_MAIL(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        mail_options: list[str],
    ) -> str:
        if self._sink.auth is not None and not session.authenticated:
            return "530 5.7.0 Authentication required"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        refusal = self._sink._verdict("rcpt", address)
        if refusal is not None:
            return refusal
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        refusal = self._sink._verdict("data", None)
        if refusal is not None:
            return refusal
        self._sink._store(envelope)
        return "250 2.0.0 OK: queued"


class _SinkSMTP(SMTP):
    """aiosmtpd's protocol, plus bookkeeping of live connections (to drop them at will)."""

    def __init__(self, sink: SmtpSink, **kwargs: Any) -> None:
        super().__init__(_Handler(sink), **kwargs)
        self._sink = sink

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        first = self.transport is None
        super().connection_made(transport)
        if first:  # STARTTLS calls this a second time for the same connection
            self._sink._connected(self)

    def connection_lost(self, error: Exception | None) -> None:
        super().connection_lost(error)
        self._sink._disconnected(self)

    def abort(self) -> None:
        transport = self.transport
        if transport is not None:
            cast(asyncio.Transport, transport).abort()

    @property
    def handler_task(self) -> asyncio.Task[None] | None:
        return self._handler_coroutine


class SmtpSink:
    """SMTP server on loopback that stores every message (and optionally an mbox file).

    `port=0` picks a free port; after `set_down(True)` / `set_down(False)` the sink
    listens on the same port again. STARTTLS (or implicit TLS) needs a cert and key
    file; AUTH (PLAIN/LOGIN) is only offered over TLS, as a real server would.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        cert_file: str | None = None,
        key_file: str | None = None,
        implicit_tls: bool = False,
        auth: tuple[str, str] | None = None,
        mbox_path: str | None = None,
        keep_messages: bool = True,
        server_hostname: str = "smtp-sink.localhost",
    ) -> None:
        if implicit_tls and cert_file is None:
            raise ValueError("implicit_tls needs cert_file")
        if auth is not None and cert_file is None:
            raise ValueError("AUTH is only offered over TLS: give cert_file")
        self.host = host
        self._port = port
        self.auth = auth
        self._cert_file = cert_file
        self._key_file = key_file
        self._implicit_tls = implicit_tls
        self._mbox_path = mbox_path
        self._keep = keep_messages
        self._server_hostname = server_hostname
        self._tls: ssl.SSLContext | None = None

        self._lock = threading.Lock()
        self._messages: list[ReceivedMessage] = []
        self._fail_stage: Literal["rcpt", "data"] = "data"
        self._fail_left = 0
        self._fail_code = 451
        self._rejected: dict[str, int] = {}
        self.received_count = 0
        self.connections_total = 0
        self.max_concurrent_connections = 0

        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._conns: set[_SinkSMTP] = set()
        self._mbox: mailbox.mbox | None = None

    # ----------------------------------------------------------------- lifecycle

    @property
    def port(self) -> int:
        return self._port

    def __enter__(self) -> SmtpSink:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start the server thread and listen; returns once connections are accepted."""
        if self._thread is not None:
            raise RuntimeError("SmtpSink already started")
        # aiosmtpd logs every envelope address at INFO; the rule is no addresses in logs.
        aiosmtpd_log = logging.getLogger("mail.log")
        if aiosmtpd_log.level == logging.NOTSET:
            aiosmtpd_log.setLevel(logging.WARNING)
        if self._cert_file is not None:
            self._tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self._tls.load_cert_chain(self._cert_file, self._key_file)
        if self._mbox_path is not None:
            self._mbox = mailbox.mbox(self._mbox_path)
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="smtp-sink", daemon=True)
        self._thread.start()
        try:
            self._call(self._listen())
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Drop all connections, stop listening and end the thread."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        try:
            if loop.is_running():
                self._call(self._shutdown())
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            loop.close()
            self._loop = None
            self._thread = None
            if self._mbox is not None:
                self._mbox.close()
                self._mbox = None

    def set_down(self, down: bool) -> None:
        """down=True: drop every connection and refuse new ones; False: listen again."""
        self._call(self._shutdown() if down else self._listen())

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        if self._loop is None:
            coro.close()
            raise RuntimeError("SmtpSink is not running")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    async def _listen(self) -> None:
        if self._server is not None:
            return
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._new_protocol,
            host=self.host,
            port=self._port,
            ssl=self._tls if self._implicit_tls else None,
            reuse_address=True,
        )
        # With port 0 the OS chose a free port; keep it for restarts after set_down().
        self._port = self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        conns = list(self._conns)
        for conn in conns:
            conn.abort()
        tasks = [t for c in conns if (t := c.handler_task) is not None and not t.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        if server is not None:
            await server.wait_closed()

    def _new_protocol(self) -> _SinkSMTP:
        tls_for_starttls = None if self._implicit_tls else self._tls
        return _SinkSMTP(
            self,
            hostname=self._server_hostname,
            tls_context=tls_for_starttls,
            require_starttls=tls_for_starttls is not None,
            authenticator=self._authenticate if self.auth is not None else None,
            auth_required=False,  # enforced at MAIL, which also covers implicit TLS
            auth_require_tls=not self._implicit_tls,
            enable_SMTPUTF8=True,
            loop=asyncio.get_running_loop(),
        )

    def _connected(self, conn: _SinkSMTP) -> None:
        self._conns.add(conn)
        with self._lock:
            self.connections_total += 1
            self.max_concurrent_connections = max(self.max_concurrent_connections, len(self._conns))

    def _disconnected(self, conn: _SinkSMTP) -> None:
        self._conns.discard(conn)

    def _authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        if self.auth is None or not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user, password = (s.encode("utf-8") for s in self.auth)
        ok = hmac.compare_digest(data.login, user) & hmac.compare_digest(data.password, password)
        return AuthResult(success=bool(ok), handled=False)

    # ----------------------------------------------------------------- faults

    @property
    def connection_count(self) -> int:
        """Connections open right now."""
        return len(self._conns)

    def fail_next(
        self, n: int, code: int = 451, *, stage: Literal["rcpt", "data"] = "data"
    ) -> None:
        """Answer the next `n` DATA (or RCPT) commands with `code` instead of accepting."""
        with self._lock:
            self._fail_left, self._fail_code, self._fail_stage = n, code, stage

    def reject_recipients(self, addresses: Iterable[str], code: int = 550) -> None:
        """Refuse these recipients at RCPT with `code` (a 5xx by default), from now on."""
        with self._lock:
            self._rejected = {a.lower(): code for a in addresses}

    def _verdict(self, stage: Literal["rcpt", "data"], address: str | None) -> str | None:
        with self._lock:
            if address is not None and address.lower() in self._rejected:
                return f"{self._rejected[address.lower()]} 5.1.1 Recipient address rejected"
            if self._fail_left > 0 and self._fail_stage == stage:
                self._fail_left -= 1
                return f"{self._fail_code} 4.3.0 Temporary failure, try again later"
        return None

    # ----------------------------------------------------------------- mailbox

    def _store(self, envelope: Envelope) -> None:
        raw = envelope.original_content or b""
        if isinstance(raw, str):  # pragma: no cover - decode_data is off
            raw = raw.encode("utf-8", "surrogateescape")
        with self._lock:
            self.received_count += 1
            if self._keep:
                parsed = email.message_from_bytes(raw, policy=email.policy.default)
                self._messages.append(
                    ReceivedMessage(
                        mail_from=envelope.mail_from or "",
                        rcpt_tos=tuple(envelope.rcpt_tos),
                        message=parsed,
                        raw=raw,
                    )
                )
            if self._mbox is not None:
                self._mbox.add(raw)
                self._mbox.flush()

    @property
    def messages(self) -> list[ReceivedMessage]:
        """A snapshot of the messages received so far."""
        with self._lock:
            return list(self._messages)

    def message_ids(self) -> list[str]:
        return [str(m.message["Message-ID"]) for m in self.messages]

    def clear(self) -> None:
        with self._lock:
            self._messages.clear()
            self.received_count = 0
