"""Why no mail can go out: one diagnosis for a failed SMTP connection, said once.

`diagnose` turns what went wrong while connecting (TCP, TLS, STARTTLS, AUTH) into an
`SmtpProblem`: a bounded `reason` (a metric label) and a `message` that names what
failed and which setting to change. `MailHealth` holds the current problem for
`/readyz`, the gauge and the log: one JSON line when mail stops, one when it resumes.
Messages never carry the password, the user name or a recipient address.
"""

from __future__ import annotations

import errno
import logging
import socket
import ssl
from dataclasses import dataclass
from typing import Final, Literal

import aiosmtplib
from prometheus_client import Gauge

__all__ = [
    "MAIL_BLOCKED",
    "PROBLEM_REASONS",
    "MailHealth",
    "SmtpProblem",
    "SmtpProblemReason",
    "diagnose",
    "outcome_reason",
]

log = logging.getLogger("services.notifier.mail")

SmtpProblemReason = Literal[
    "starttls_not_offered",
    "certificate_rejected",
    "tls_failed",
    "connection_refused",
    "host_not_found",
    "timeout",
    "auth_rejected",
    "auth_not_offered",
    "server_refused",
    "unavailable",
]
PROBLEM_REASONS: Final[tuple[SmtpProblemReason, ...]] = (
    "starttls_not_offered",
    "certificate_rejected",
    "tls_failed",
    "connection_refused",
    "host_not_found",
    "timeout",
    "auth_rejected",
    "auth_not_offered",
    "server_refused",
    "unavailable",
)

MAIL_BLOCKED = Gauge(
    "reminders_notifier_mail_blocked",
    "1 for the reason no mail can be sent at all (connect, TLS or AUTH fails); "
    "all 0 while the mail server accepts connections",
    ["reason"],
)
for _reason in PROBLEM_REASONS:
    MAIL_BLOCKED.labels(reason=_reason).set(0)

# The outcome reasons the notifier already treats as an outage (delivery.OUTAGE_REASONS).
_OUTCOME_REASON: Final[dict[SmtpProblemReason, str]] = {
    "starttls_not_offered": "smtp_tls_failed",
    "certificate_rejected": "smtp_tls_failed",
    "tls_failed": "smtp_tls_failed",
    "connection_refused": "smtp_unavailable",
    "host_not_found": "smtp_unavailable",
    "timeout": "timeout",
    "auth_rejected": "smtp_auth_failed",
    "auth_not_offered": "smtp_auth_failed",
    "server_refused": "smtp_unavailable",
    "unavailable": "smtp_unavailable",
}


@dataclass(frozen=True)
class SmtpProblem:
    reason: SmtpProblemReason
    message: str


def outcome_reason(problem: SmtpProblem) -> str:
    return _OUTCOME_REASON[problem.reason]


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(seen) < 6:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def _short(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return exc.verify_message or "verification failed"
    if isinstance(exc, ssl.SSLError):
        return exc.reason or type(exc).__name__
    return type(exc).__name__


def diagnose(
    exc: BaseException,
    *,
    host: str,
    port: int,
    security: str,
    auth: bool,
    timeout: float,
) -> SmtpProblem:
    """What a connect failure means for the operator, and what to change."""
    where = f"{host}:{port}"
    chain = _chain(exc)
    cert = next((e for e in chain if isinstance(e, ssl.SSLCertVerificationError)), None)
    if cert is not None:
        return SmtpProblem(
            "certificate_rejected",
            f"TLS certificate of the mail server {where} is not trusted ({_short(cert)}): "
            "set REMINDERS_SMTP__CA_FILE to the CA that signed it, or make "
            "REMINDERS_SMTP__HOST the name the certificate is issued to",
        )
    tls = next((e for e in chain if isinstance(e, ssl.SSLError)), None)
    if tls is not None:
        return SmtpProblem(
            "tls_failed",
            f"TLS handshake with the mail server {where} failed ({_short(tls)}): check "
            "REMINDERS_SMTP__SECURITY (tls for a port that speaks TLS at once, like 465; "
            "auto or starttls for 587 and 25) and REMINDERS_SMTP__PORT",
        )
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return SmtpProblem(
            "auth_rejected",
            f"the mail server {where} rejected AUTH (reply {exc.code}): check "
            "REMINDERS_SMTP__USERNAME and REMINDERS_SMTP__PASSWORD",
        )
    text = str(exc).lower()
    if isinstance(exc, aiosmtplib.SMTPException) and "starttls" in text:
        return SmtpProblem(
            "starttls_not_offered",
            f"the mail server {where} does not offer STARTTLS, which "
            f"REMINDERS_SMTP__SECURITY={security} requires: enable STARTTLS on the server, "
            "use REMINDERS_SMTP__SECURITY=tls with the server's TLS port (465), or "
            "REMINDERS_SMTP__SECURITY=none only for a relay on a network you trust",
        )
    if isinstance(exc, aiosmtplib.SMTPException) and "auth" in text and auth:
        return SmtpProblem(
            "auth_not_offered",
            f"the mail server {where} offers no AUTH on this connection but "
            "REMINDERS_SMTP__USERNAME is set: many servers offer AUTH only after TLS "
            "(REMINDERS_SMTP__SECURITY=auto, starttls or tls), or unset the user name",
        )
    if any(isinstance(e, TimeoutError) for e in chain):
        return SmtpProblem(
            "timeout",
            f"the mail server {where} did not answer within {timeout:g} s: check "
            "REMINDERS_SMTP__HOST, REMINDERS_SMTP__PORT and the firewall; a TLS port (465) "
            "needs REMINDERS_SMTP__SECURITY=tls",
        )
    for error in chain:
        if isinstance(error, socket.gaierror):
            return SmtpProblem(
                "host_not_found",
                f"the mail server host {host} cannot be resolved: check REMINDERS_SMTP__HOST",
            )
        if isinstance(error, ConnectionRefusedError) or (
            isinstance(error, OSError) and error.errno == errno.ECONNREFUSED
        ):
            return SmtpProblem(
                "connection_refused",
                f"connection refused at {where}: no mail server listens there; check "
                "REMINDERS_SMTP__HOST and REMINDERS_SMTP__PORT",
            )
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return SmtpProblem(
            "server_refused",
            f"the mail server {where} refused the session (reply {exc.code}): see its log; "
            "REMINDERS_SMTP__HOST may name a server that does not relay for this host",
        )
    if "connection refused" in text or "connect call failed" in text:
        return SmtpProblem(
            "connection_refused",
            f"connection refused at {where}: no mail server listens there; check "
            "REMINDERS_SMTP__HOST and REMINDERS_SMTP__PORT",
        )
    return SmtpProblem(
        "unavailable",
        f"cannot open an SMTP session with {where} ({type(exc).__name__}): check "
        "REMINDERS_SMTP__HOST, REMINDERS_SMTP__PORT and REMINDERS_SMTP__SECURITY",
    )


class MailHealth:
    """The current reason no mail can go out, if any; logs and gauges each change."""

    def __init__(self, *, gauge: bool = True) -> None:
        self.problem: SmtpProblem | None = None
        self._gauge = gauge

    def failed(self, problem: SmtpProblem) -> None:
        if problem == self.problem:
            return
        if self._gauge:
            if self.problem is not None:
                MAIL_BLOCKED.labels(reason=self.problem.reason).set(0)
            MAIL_BLOCKED.labels(reason=problem.reason).set(1)
        self.problem = problem
        log.error(
            f"no mail can be sent: {problem.message}",
            extra={"smtp_problem": problem.reason},
        )

    def forget(self) -> None:
        """The sender is closed: it no longer stands for this process's mail."""
        if self._gauge and self.problem is not None:
            MAIL_BLOCKED.labels(reason=self.problem.reason).set(0)
        self.problem = None

    def succeeded(self) -> None:
        if self.problem is None:
            return
        if self._gauge:
            MAIL_BLOCKED.labels(reason=self.problem.reason).set(0)
        log.warning(
            "mail server accepts connections again", extra={"smtp_problem_was": self.problem.reason}
        )
        self.problem = None
