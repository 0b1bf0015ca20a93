"""Mail from practice-admin (sign-in codes, "send a test to me") over the project's SMTP."""

from __future__ import annotations

import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Protocol

import aiosmtplib

from services.common.settings import SmtpSettings
from services.common.smtp_tls import tls_plan

__all__ = ["Mailer", "SmtpMailer"]


class Mailer(Protocol):
    async def send(self, message: EmailMessage) -> None: ...


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
        plan = tls_plan(s.host, s.security)
        context = ssl.create_default_context(cafile=s.ca_file)
        if not plan.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        await aiosmtplib.send(
            message,
            hostname=s.host,
            port=s.port,
            use_tls=plan.implicit_tls,
            start_tls=plan.start_tls,
            tls_context=context,
            username=s.username,
            password=s.password.get_secret_value() if s.password else None,
            timeout=s.timeout,
        )
