"""The patient's side of a reminder e-mail (DESIGN "Patient links"): what the notifier
adds to the message ``compose_email`` built.

- ``List-Unsubscribe`` points at the one-click link ``{public_url}/u/{token}`` that
  practice-admin serves (RFC 8058), signed for this patient; without a secret key (a
  demo without practice-admin) it falls back to the portal's ``preferences_url``. The
  mail's text and HTML keep their link to ``preferences_url`` either way.
- The appointment as a ``text/calendar; method=PUBLISH`` attachment (calendar.py).
- The practice's logo as an inline ``cid:`` image beside the HTML (services.domain
  .branding decides, and render_reminder puts the header in the HTML).

The message becomes ``multipart/mixed`` [``multipart/alternative`` [text,
``multipart/related`` [HTML, logo] or HTML], ``afspraak.ics``]; every boundary is
fixed when the part is made, so the message flattens to the same bytes every time
(which DKIM signing relies on).
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage, MIMEPart

from schemas.models import Appointment, PracticeConfig, ReminderDue
from services.common.patient_links import PatientLinkSigner, unsubscribe_url
from services.common.settings import Settings
from services.domain.branding import LOGO_CID, Logo, practice_logo
from services.notifier.calendar import CALENDAR_FILENAME, appointment_calendar

__all__ = ["PatientMail", "attach_calendar", "attach_logo", "patient_mail_from_settings"]

log = logging.getLogger(__name__)


def attach_logo(msg: EmailMessage, logo: Logo) -> None:
    """The HTML part becomes ``multipart/related`` [HTML, the logo as ``cid:`` image]."""
    html_part = msg.get_body(("html",))
    if not isinstance(html_part, EmailMessage | MIMEPart):
        return
    html_part.make_related(boundary=f"=_related_{secrets.token_hex(12)}")
    html_part.add_related(
        logo.data,
        maintype="image",
        subtype=logo.subtype,
        cid=f"<{LOGO_CID}>",
        disposition="inline",
        filename=f"logo.{'png' if logo.subtype == 'png' else 'jpg'}",
    )


def attach_calendar(msg: EmailMessage, ics: bytes) -> None:
    """Add the calendar object as an ``afspraak.ics`` attachment (base64, 7-bit clean)."""
    if msg.get_content_type() != "multipart/mixed":
        msg.make_mixed(boundary=f"=_mixed_{secrets.token_hex(12)}")
    msg.add_attachment(
        ics,
        maintype="text",
        subtype="calendar",
        filename=CALENDAR_FILENAME,
        params={"method": "PUBLISH", "charset": "utf-8"},
    )


@dataclass(frozen=True)
class PatientMail:
    """Built once per notifier from the settings (see app.py)."""

    public_url: str
    signer: PatientLinkSigner | None
    # Right of the "@" in the calendar UID (the Message-ID domain).
    uid_domain: str

    def unsubscribe_url(
        self, due: ReminderDue, config: PracticeConfig, now: datetime
    ) -> str | None:
        if self.signer is None:
            return config.preferences_url
        token = self.signer.issue(due.practice_id, due.patient_id, now)
        return unsubscribe_url(self.public_url, token)

    def complete(
        self,
        msg: EmailMessage,
        config: PracticeConfig,
        appointment: Appointment,
        language: str,
        now: datetime,
    ) -> None:
        ics = appointment_calendar(
            config, appointment, language, uid_domain=self.uid_domain, now=now
        )
        logo = practice_logo(config)
        if logo is not None:  # render_reminder referred to it as cid:
            attach_logo(msg, logo)
        attach_calendar(msg, ics)


def patient_mail_from_settings(settings: Settings) -> PatientMail:
    """The one-click link needs ``REMINDERS_ADMIN__SECRET_KEY`` (the key practice-admin
    checks links with); without it the mail lists ``preferences_url`` as before."""
    secret = settings.admin.secret_key
    signer = None
    if secret is not None and secret.get_secret_value():
        signer = PatientLinkSigner(secret.get_secret_value())
    else:
        log.warning(
            "REMINDERS_ADMIN__SECRET_KEY is not set: reminder mails carry no one-click "
            "unsubscribe link, List-Unsubscribe points at the practice's preferences_url"
        )
    return PatientMail(
        public_url=settings.admin.public_url,
        signer=signer,
        uid_domain=settings.smtp.message_id_domain,
    )
