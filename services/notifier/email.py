"""E-mail: composing a reminder message and sending it through a pool of SMTP connections.

The pool classifies failures (TransientSendError / PermanentSendError) and never retries:
the notifier owns retries and backoff (services.notifier.retry).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from dataclasses import dataclass, field
from types import TracebackType

import aiosmtplib
from aiosmtplib.protocol import normalize_message_line_endings

from services.common.settings import is_loopback_host
from services.common.smtp_tls import SmtpSecurity, TlsPlan, tls_plan
from services.domain.errors import PermanentSendError, SendError, TransientSendError
from services.domain.mime import ADDRESS_LIKE as _ADDRESS_LIKE
from services.domain.mime import ComposedMail, compose_email, message_id_for
from services.notifier.mail_health import MailHealth, SmtpProblem, diagnose, outcome_reason

__all__ = [
    "ComposedMail",
    "SmtpOptions",
    "SmtpPool",
    "SmtpSecurity",
    "TlsPlan",
    "compose_email",
    "message_id_for",
    "tls_plan",
]

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- SMTP pool


@dataclass(frozen=True)
class SmtpOptions:
    """Where and how to talk SMTP (see `tls_plan`); `ca_file` adds a CA to trust."""

    host: str
    port: int
    security: SmtpSecurity = "auto"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    ca_file: str | None = None
    pool_size: int = 4
    max_messages_per_connection: int = 100
    idle_noop_seconds: float = 30.0
    # Seconds for each reply while connecting, for a whole MAIL/RCPT/DATA while sending.
    timeout: float = 15.0
    # EHLO name; None asks the OS for the FQDN once, at start().
    local_hostname: str | None = None
    # None: decided from the host name. False makes a loopback test server count as remote.
    loopback: bool | None = None
    # While no mail can go out, how often watch() tries to connect again.
    recheck_seconds: float = 30.0

    def __post_init__(self) -> None:
        if self.pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        if self.max_messages_per_connection < 1:
            raise ValueError("max_messages_per_connection must be at least 1")
        if self.security not in ("auto", "none", "starttls", "tls"):
            raise ValueError("security must be auto, none, starttls or tls")
        if self.username is not None and self.security == "none" and not self.is_loopback:
            # AUTH over a clear connection would hand the password to anyone on the path.
            raise ValueError("SMTP AUTH needs security=auto, starttls or tls (except on loopback)")

    @property
    def is_loopback(self) -> bool:
        return is_loopback_host(self.host) if self.loopback is None else self.loopback

    @property
    def plan(self) -> TlsPlan:
        return tls_plan(self.host, self.security, loopback=self.loopback)


@dataclass(eq=False)
class _Connection:
    client: aiosmtplib.SMTP
    sent: int = 0
    last_used: float = field(default_factory=time.monotonic)


def _redact(text: str) -> str:
    return _ADDRESS_LIKE.sub("<address>", " ".join(text.split()))[:200]


def _connect_error(problem: SmtpProblem) -> TransientSendError:
    """Anything that goes wrong before a message is on the wire is the server's or the
    configuration's fault, not the message's: always worth a retry."""
    return TransientSendError(outcome_reason(problem), problem.message)


def _classify_send(exc: Exception) -> SendError:
    """Map an aiosmtplib failure during a transaction to a send error."""
    name = type(exc).__name__
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused | aiosmtplib.SMTPRecipientRefused):
        refused = exc.recipients if isinstance(exc, aiosmtplib.SMTPRecipientsRefused) else [exc]
        code = max((r.code for r in refused), default=0)
        text = _redact(refused[0].message) if refused else ""
        if code >= 500:
            return PermanentSendError("recipient_refused", f"RCPT {code}: {text}")
        return TransientSendError("smtp_4xx", f"RCPT {code}: {text}")
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        stage = {
            aiosmtplib.SMTPSenderRefused: "MAIL",
            aiosmtplib.SMTPDataError: "DATA",
        }.get(type(exc), "reply")
        detail = f"{stage} {exc.code}: {_redact(exc.message)}"
        if 400 <= exc.code < 500:
            return TransientSendError("smtp_4xx", detail)
        if exc.code >= 500:
            return PermanentSendError("smtp_5xx", detail)
        return TransientSendError("smtp_protocol", detail)
    if isinstance(exc, TimeoutError):
        return TransientSendError("timeout", f"no answer in time ({name})")
    if isinstance(exc, aiosmtplib.SMTPNotSupported):
        return PermanentSendError("invalid_address", "address needs SMTPUTF8, server lacks it")
    if isinstance(exc, ValueError):
        return PermanentSendError("invalid_address", "address cannot be sent over SMTP")
    if isinstance(exc, aiosmtplib.SMTPServerDisconnected | OSError):
        return TransientSendError("smtp_unavailable", f"connection lost ({name})")
    if isinstance(exc, aiosmtplib.SMTPException):
        return TransientSendError("smtp_unavailable", f"{name}: {_redact(str(exc))}")
    raise exc


def _size_of(data: bytes) -> int:
    """The octets DATA transmits (RFC 1870 SIZE): the composed bytes as they are when they
    are CRLF throughout and end with CRLF (what compose_email writes), else what aiosmtplib
    turns them into."""
    crlf = data.count(b"\r\n")
    if data.endswith(b"\r\n") and data.count(b"\n") == crlf and data.count(b"\r") == crlf:
        return len(data)
    return len(normalize_message_line_endings(data))


async def _transaction(client: aiosmtplib.SMTP, msg: ComposedMail, timeout: float) -> None:
    """One mail transaction: what ``SMTP.sendmail`` does for one recipient, without its
    second pass over the addresses and the message (the SIZE option is counted without
    rewriting the bytes). The composed bytes as they are (7-bit, CRLF): nothing is
    flattened here. A refused envelope, or an address aiosmtplib will not put on a
    command line, resets the envelope (RSET) as sendmail does, so the session stays
    usable. ``timeout`` bounds the whole transaction (one deadline instead of a timer per
    reply); TimeoutError when it passes, and the pool drops the session."""
    if client.is_ehlo_or_helo_needed:
        try:
            await client.ehlo()
        except aiosmtplib.SMTPHeloError:
            if not client.is_connected:
                raise
            await client.helo()
    encoding = "ascii"
    options: list[str] = []
    if msg.needs_smtputf8:
        if not client.supports_extension("smtputf8"):
            raise aiosmtplib.SMTPNotSupported("SMTPUTF8 is not supported by this server")
        encoding = "utf-8"
        options.append("SMTPUTF8")
    if client.supports_extension("size"):
        options.insert(0, f"size={_size_of(msg.data)}")
    try:
        async with asyncio.timeout(timeout):
            await client.mail(msg.sender, options=options, encoding=encoding, timeout=None)
            await client.rcpt(msg.recipient, encoding=encoding, timeout=None)
            await client.data(msg.data, timeout=None)
    except (aiosmtplib.SMTPResponseException, aiosmtplib.SMTPRecipientsRefused, ValueError):
        # ValueError: an address aiosmtplib refuses to write (checked before it is sent).
        with contextlib.suppress(ConnectionError, aiosmtplib.SMTPResponseException):
            await client.rset()
        raise


class SmtpPool:
    """Up to `pool_size` reusable SMTP connections, opened on demand.

    A bounded LIFO queue holds one slot per connection: an idle connection, or None for
    a connection not (or no longer) open. Taking a slot is what limits concurrency, so N
    concurrent sends never use more than N connections.
    """

    def __init__(self, options: SmtpOptions) -> None:
        self.options = options
        self.connections_opened = 0
        self.connections_closed = 0
        self.messages_sent = 0
        self._slots: asyncio.Queue[_Connection | None] | None = None
        self._live: set[_Connection] = set()
        self._retiring: set[asyncio.Task[None]] = set()
        self._tls: ssl.SSLContext | None = None
        self._local_hostname = options.local_hostname
        self._closed = False
        self._plan = options.plan
        self._watcher: asyncio.Task[None] | None = None
        self.health = MailHealth()

    @property
    def problem(self) -> SmtpProblem | None:
        """Why no mail can go out right now (the last connect failed), or None."""
        return self.health.problem

    async def __aenter__(self) -> SmtpPool:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        """Prepare TLS and the slots; connections open lazily on the first sends."""
        if self._slots is not None:
            return
        if self._plan.implicit_tls or self._plan.start_tls is not False:
            # Loading the system CA store reads files: keep it off the event loop.
            self._tls = await asyncio.to_thread(self._make_tls_context)
        if self._local_hostname is None:
            self._local_hostname = await asyncio.to_thread(socket.getfqdn)
        # LIFO: the most recently used (warm) connection goes out first, so a trickle of
        # mail keeps one connection busy instead of cycling through all of them.
        slots: asyncio.Queue[_Connection | None] = asyncio.LifoQueue(maxsize=self.options.pool_size)
        for _ in range(self.options.pool_size):
            slots.put_nowait(None)
        self._slots = slots

    def _make_tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        if self.options.ca_file:
            context.load_verify_locations(cafile=self.options.ca_file)
        if not self._plan.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    async def check(self) -> SmtpProblem | None:
        """Open one session (connect, TLS, AUTH) and QUIT: None when mail can go out."""
        return (await self.probe())[0]

    async def probe(self) -> tuple[SmtpProblem | None, str]:
        """Open one session and QUIT: (None, what the session was) or (the problem, its
        message)."""
        if self._slots is None:
            raise RuntimeError("SmtpPool.start() was not called")
        opts = self.options
        try:
            conn = await self._open()
        except TransientSendError as exc:
            problem = self.problem
            return problem, problem.message if problem is not None else exc.detail
        encrypted = conn.client.get_transport_info("sslcontext") is not None
        if self._plan.implicit_tls:
            tls = "TLS"
        elif encrypted:
            tls = "STARTTLS"
        else:
            tls = "no TLS (none offered)" if self._plan.start_tls is None else "no TLS"
        if encrypted:
            tls += ", certificate checked" if self._plan.verify else ", certificate not checked"
        auth = "AUTH accepted" if opts.username is not None else "no AUTH configured"
        await self._quit(conn)
        where = f"{opts.host}:{opts.port}"
        return None, f"{where} answers (security={opts.security}): {tls}; {auth}"

    def watch(self) -> None:
        """Check now, and again every `recheck_seconds` while no mail can go out, so that
        readiness follows the server even when nothing is waiting to be sent."""
        if self._watcher is None:
            self._watcher = asyncio.get_running_loop().create_task(self._watch(), name="smtp-watch")

    async def _watch(self) -> None:
        while not self._closed:
            # Once healthy, the sends themselves notice when it breaks again.
            if self.problem is not None or self.connections_opened == 0:
                await self.check()
            await asyncio.sleep(self.options.recheck_seconds)

    async def close(self) -> None:
        """Let in-flight sends finish (up to `timeout`), then QUIT every connection."""
        if self._slots is None or self._closed:
            self._closed = True
            return
        self._closed = True
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        slots = self._slots
        held: list[_Connection] = []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.options.timeout):
                for _ in range(self.options.pool_size):
                    slot = await slots.get()
                    if slot is not None:
                        held.append(slot)
        await asyncio.gather(*(self._quit(conn) for conn in held))
        for conn in list(self._live):  # sends that did not finish in time
            self._discard(conn)
        if self._retiring:
            await asyncio.gather(*self._retiring, return_exceptions=True)
        # Wake any sender still queued for a slot; it will see the pool is closed.
        while not slots.full():
            slots.put_nowait(None)
        self.health.forget()

    async def send(self, msg: ComposedMail) -> None:
        """Hand one message to the server. Raises TransientSendError/PermanentSendError."""
        if self._slots is None:
            raise RuntimeError("SmtpPool.start() was not called")
        slots = self._slots
        slot = await slots.get()
        keep: _Connection | None = None
        try:
            if self._closed:
                keep = slot  # close() collects it
                raise RuntimeError("SmtpPool is closed")
            conn = await self._ready(slot)
            try:
                await _transaction(conn.client, msg, self.options.timeout)
            except Exception as exc:
                # After a refused envelope aiosmtplib has sent RSET: the session is fine.
                reusable = isinstance(
                    exc,
                    aiosmtplib.SMTPResponseException
                    | aiosmtplib.SMTPRecipientsRefused
                    | aiosmtplib.SMTPNotSupported
                    | ValueError,
                )
                if reusable and conn.client.is_connected:
                    conn.last_used = time.monotonic()
                    keep = conn
                else:
                    self._discard(conn)
                error = _classify_send(exc)
                # The original exception text can carry the recipient's address: do not
                # chain it into tracebacks that end up in logs.
                raise error from None
            except BaseException:
                self._discard(conn)  # cancelled mid-transaction: session state unknown
                raise
            conn.sent += 1
            conn.last_used = time.monotonic()
            self.messages_sent += 1
            if conn.sent >= self.options.max_messages_per_connection:
                self._retire(conn)
            else:
                keep = conn
        finally:
            slots.put_nowait(keep)

    async def _ready(self, slot: _Connection | None) -> _Connection:
        """A connected session: the pooled one if it is still alive, else a fresh one."""
        if slot is not None:
            if not slot.client.is_connected:
                self._discard(slot)
                slot = None
            elif time.monotonic() - slot.last_used > self.options.idle_noop_seconds:
                try:
                    await slot.client.noop()
                except (aiosmtplib.SMTPException, OSError, TimeoutError):
                    log.debug("idle SMTP connection failed NOOP; reconnecting")
                    self._discard(slot)
                    slot = None
                except BaseException:
                    self._discard(slot)
                    raise
        if slot is None:
            slot = await self._open()
        return slot

    async def _open(self) -> _Connection:
        opts = self.options
        client = aiosmtplib.SMTP(
            hostname=opts.host,
            port=opts.port,
            local_hostname=self._local_hostname,
            timeout=opts.timeout,
            use_tls=self._plan.implicit_tls,
            start_tls=self._plan.start_tls,
            tls_context=self._tls,
            username=opts.username,
            password=opts.password,
        )
        try:
            await client.connect()
        except Exception as exc:
            client.close()
            problem = diagnose(
                exc,
                host=opts.host,
                port=opts.port,
                security=opts.security,
                auth=opts.username is not None,
                timeout=opts.timeout,
            )
            self.health.failed(problem)
            # The chained exception would drag server replies into tracebacks.
            raise _connect_error(problem) from None
        except BaseException:
            client.close()
            raise
        self.health.succeeded()
        self.connections_opened += 1
        conn = _Connection(client)
        self._live.add(conn)
        log.debug("opened SMTP connection to %s:%d", opts.host, opts.port)
        return conn

    def _discard(self, conn: _Connection) -> None:
        if conn in self._live:
            self._live.discard(conn)
            self.connections_closed += 1
        conn.client.close()

    def _retire(self, conn: _Connection) -> None:
        """Say goodbye to a connection that carried its K messages, off the send path."""
        task = asyncio.get_running_loop().create_task(self._quit(conn))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def _quit(self, conn: _Connection) -> None:
        try:
            if conn.client.is_connected:
                await conn.client.quit(timeout=min(self.options.timeout, 5.0))
        except (aiosmtplib.SMTPException, OSError, TimeoutError):
            pass
        finally:
            self._discard(conn)
