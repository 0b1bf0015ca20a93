"""Mail from practice-admin (sign-in codes, "send a test to me") over the project's SMTP."""

from __future__ import annotations

import ipaddress
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Protocol

import aiosmtplib

from services.common.settings import SmtpSettings

__all__ = ["Mailer", "SmtpMailer"]


class Mailer(Protocol):
    async def send(self, message: EmailMessage) -> None: ...


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class SmtpMailer:
    """One connection per message: sign-in mails are few."""

    def __init__(self, settings: SmtpSettings, sender: str) -> None:
        self._settings = settings
        self.sender = sender

    def new_message(self, to: str, subject: str) -> EmailMessage:
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = to
        message["Subject"] = subject
        message["Date"] = formatdate(localtime=False)
        message["Message-ID"] = make_msgid(domain=self._settings.message_id_domain)
        message["Auto-Submitted"] = "auto-generated"
        return message

    async def send(self, message: EmailMessage) -> None:
        s = self._settings
        context = ssl.create_default_context(cafile=s.ca_file) if s.security != "none" else None
        # STARTTLS is required towards any host but a loopback relay, where it is used
        # only when offered (DESIGN.md, Messages).
        start_tls: bool | None = None
        if s.security == "starttls":
            start_tls = None if _is_loopback(s.host) else True
        elif s.security == "none":
            start_tls = False
        await aiosmtplib.send(
            message,
            hostname=s.host,
            port=s.port,
            use_tls=s.security == "tls",
            start_tls=start_tls,
            tls_context=context,
            username=s.username,
            password=s.password.get_secret_value() if s.password else None,
            timeout=s.timeout,
        )
