"""The notifier's reminder mail with the patient's side: one-click link and calendar part."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC
from email.message import EmailMessage

from icalendar import Calendar

from services.common.patient_links import PatientLinkSigner
from services.notifier.patient_mail import PatientMail
from tests.support.mail import NOW, START, CapturingMail, send_reminder

DOMAIN = "reminders.example.org"
PUBLIC = "https://beheer.example.org"
SIGNER = PatientLinkSigner("unit-test-secret")


async def _sent(patient_mail: PatientMail | None) -> EmailMessage:
    mail = CapturingMail()
    await send_reminder(mail, patient_mail)
    [msg] = mail.sent
    wire = msg.data
    parsed = email.message_from_bytes(wire, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


async def test_one_click_link_names_the_patient_and_the_preferences_link_stays() -> None:
    msg = await _sent(PatientMail(public_url=PUBLIC, signer=SIGNER, uid_domain=DOMAIN))
    header = str(msg["List-Unsubscribe"])
    assert header.startswith(f"<{PUBLIC}/u/") and header.endswith(">")
    token = header[len(f"<{PUBLIC}/u/") : -1]
    link = SIGNER.verify(token, NOW)
    assert (link.practice_id, link.patient_id) == ("01234567", "p-1")
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert "@" not in header
    for subtype in ("plain", "html"):
        body = msg.get_body((subtype,))
        assert body is not None
        assert "https://portaal.example.org/voorkeuren" in body.get_content()


async def test_calendar_part_is_attached_beside_text_and_html() -> None:
    msg = await _sent(PatientMail(public_url=PUBLIC, signer=SIGNER, uid_domain=DOMAIN))
    assert msg.get_content_type() == "multipart/mixed"
    [alternative, ics] = list(msg.iter_parts())
    assert alternative.get_content_type() == "multipart/alternative"
    assert ics.get_content_type() == "text/calendar"
    assert ics.get_param("method") == "PUBLISH"
    assert ics.get_filename() == "afspraak.ics"
    assert ics["Content-Transfer-Encoding"] == "base64"
    payload = ics.get_payload(decode=True)
    assert isinstance(payload, bytes)
    [event] = Calendar.from_ical(payload).walk("VEVENT")
    assert event.decoded("dtstart").astimezone(UTC) == START


async def test_without_a_secret_the_preferences_url_is_listed_as_before() -> None:
    msg = await _sent(PatientMail(public_url=PUBLIC, signer=None, uid_domain=DOMAIN))
    assert msg["List-Unsubscribe"] == "<https://portaal.example.org/voorkeuren>"


async def test_without_patient_mail_the_message_is_unchanged() -> None:
    msg = await _sent(None)
    assert msg.get_content_type() == "multipart/alternative"
    assert msg["List-Unsubscribe"] == "<https://portaal.example.org/voorkeuren>"
