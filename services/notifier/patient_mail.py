"""The patient's side of a reminder e-mail (DESIGN "Patient links"): what the notifier
has ``compose_email`` add to the message.

- ``List-Unsubscribe`` points at the one-click link ``{public_url}/u/{token}`` that
  practice-admin serves (RFC 8058), signed for this patient; without a secret key (a
  demo without practice-admin) it falls back to the portal's ``preferences_url``. The
  mail's text and HTML keep their link to ``preferences_url`` either way.
- The appointment as a ``text/calendar; method=PUBLISH`` attachment (calendar.py).
- The practice's logo as an inline ``cid:`` image beside the HTML (services.domain
  .branding decides, and render_reminder puts the header in the HTML).

The message becomes ``multipart/mixed`` [``multipart/alternative`` [text,
``multipart/related`` [HTML, logo] or HTML], ``afspraak.ics``], written as bytes by
``compose_email`` (the bytes DKIM signs are the bytes sent).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from schemas.models import Appointment, PracticeConfig, ReminderDue
from services.common.patient_links import PatientLinkSigner, unsubscribe_url
from services.common.settings import Settings
from services.domain.branding import Logo, practice_logo
from services.notifier.calendar import appointment_calendar

__all__ = ["PatientMail", "patient_mail_from_settings"]

log = logging.getLogger(__name__)


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

    def parts(
        self,
        config: PracticeConfig,
        appointment: Appointment,
        language: str,
        now: datetime,
    ) -> tuple[bytes, Logo | None]:
        """What ``compose_email`` adds: the calendar object and the practice's logo."""
        ics = appointment_calendar(
            config, appointment, language, uid_domain=self.uid_domain, now=now
        )
        # render_reminder referred to the logo as cid: when there is one.
        return ics, practice_logo(config)


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
