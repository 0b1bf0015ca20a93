"""The practice's look: accent bar and inline cid: logo, urgent line untouched."""

from __future__ import annotations

import base64
import email
import email.policy
import io
from html.parser import HTMLParser
from typing import Any

import pytest
from PIL import Image
from pydantic import ValidationError

from schemas.models import Branding, PracticeConfig
from services.domain.branding import DEFAULT_ACCENT, LOGO_CID, apply_branding, practice_logo
from services.domain.render import render_reminder, urgent_line
from services.notifier.patient_mail import PatientMail
from services.notifier.samples import sample_appointment, sample_config
from tests.support.mail import START, CapturingMail, send_reminder


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (96, 48), (26, 110, 92)).save(out, format="PNG")
    return out.getvalue()


def _branded(accent: str | None = "#aa3300", logo: bytes | None = None) -> PracticeConfig:
    encoded = base64.b64encode(logo).decode() if logo else None
    try:
        branding = Branding(accent_color=accent or DEFAULT_ACCENT, logo=encoded)
    except ValidationError:
        # Values the schema refuses, as a config that skipped validation would hold them.
        branding = Branding.model_construct(accent_color=accent, logo=encoded)
    return sample_config().model_copy(update={"branding": branding})


def _html(config: PracticeConfig, **kwargs: Any) -> str:
    appointment = sample_appointment(start=START)
    return render_reminder(config, appointment, "nl", **kwargs).email.html


class _Urgent(HTMLParser):
    """Where the urgent line sits: its ancestors and their attributes."""

    def __init__(self, urgent: str) -> None:
        super().__init__()
        self.urgent = urgent
        self.stack: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.found: list[tuple[str, list[tuple[str, str | None]]]] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in ("meta", "img", "br", "hr"):
            self.stack.append((tag, attrs))

    def handle_endtag(self, tag: str) -> None:
        if self.stack and self.stack[-1][0] == tag:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        if self.urgent in data:
            self.found = list(self.stack)


def _urgent_ancestors(document: str) -> list[tuple[str, list[tuple[str, str | None]]]]:
    parser = _Urgent(urgent_line("020-1234567", "nl"))
    parser.feed(document)
    assert parser.found is not None
    return parser.found


def test_accent_and_logo_in_a_header_and_the_urgent_line_unchanged() -> None:
    plain = _html(sample_config())
    branded = _html(_branded(logo=_png()))
    assert "border-top:6px solid #aa3300" in branded
    assert f'<img src="cid:{LOGO_CID}" alt="Huisartsenpraktijk De Linde"' in branded
    assert _urgent_ancestors(branded) == _urgent_ancestors(plain)
    assert [tag for tag, _ in _urgent_ancestors(branded)] == ["html", "body", "p", "strong"]
    assert all(attrs == [] for tag, attrs in _urgent_ancestors(branded) if tag != "html")
    # Nothing else moved: the branded document is the plain one plus the header.
    header_start = branded.index("<body>\n") + len("<body>\n")
    header_end = branded.index("</div>\n", header_start) + len("</div>\n")
    assert branded[:header_start] + branded[header_end:] == plain


def test_preview_shows_the_logo_as_a_data_uri() -> None:
    html = _html(_branded(logo=_png()), logo_src="data")
    assert 'src="data:image/png;base64,' in html
    assert "cid:" not in html


@pytest.mark.parametrize(
    ("accent", "logo"),
    [
        (None, None),
        ("#1a6e5c", None),  # the default accent: the plain layout
        ("red;display:none", None),  # not a checked colour
        ("#aa3300x", b"GIF89a not a png"),
    ],
)
def test_no_own_look_or_unchecked_values_leave_the_layout_plain(
    accent: str | None, logo: bytes | None
) -> None:
    assert _html(_branded(accent, logo)) == _html(sample_config())


def test_logo_over_100_kb_is_not_used() -> None:
    big = b"\x89PNG\r\n\x1a\n" + bytes(100 * 1024)
    assert practice_logo(_branded(logo=big)) is None


def test_missing_anchor_leaves_the_document_alone() -> None:
    assert apply_branding("<p>x</p>", _branded(logo=_png())) == "<p>x</p>"


async def test_mail_carries_the_logo_as_an_inline_cid_part() -> None:
    mail = CapturingMail()
    patient_mail = PatientMail(
        public_url="https://beheer.example.org", signer=None, uid_domain="r.example.org"
    )
    await send_reminder(mail, patient_mail, config=_branded(logo=_png()))
    await send_reminder(mail, patient_mail, config=_branded(logo=_png()))
    first, again = mail.sent
    wire = first.data
    assert wire == again.data, "composing must be stable (DKIM)"
    parsed = email.message_from_bytes(wire, policy=email.policy.default)
    types = [part.get_content_type() for part in parsed.walk()]
    assert types == [
        "multipart/mixed",
        "multipart/alternative",
        "text/plain",
        "multipart/related",
        "text/html",
        "image/png",
        "text/calendar",
    ]
    [image] = [p for p in parsed.walk() if p.get_content_type() == "image/png"]
    assert image["Content-ID"] == f"<{LOGO_CID}>"
    assert image.get_content_disposition() == "inline"
    assert image.get_payload(decode=True) == _png()
    html_part = parsed.get_body(("html",))
    assert html_part is not None
    assert f"cid:{LOGO_CID}" in html_part.get_content()
    assert "http" not in html_part.get_content().split("<body>")[1].split("</div>")[0]


def test_a_validated_config_with_branding_renders_it() -> None:
    logo = base64.b64encode(_png()).decode()
    config = sample_config(branding={"accent_color": "#AA3300", "logo": logo})
    html = _html(config)
    assert "border-top:6px solid #aa3300" in html and f"cid:{LOGO_CID}" in html
