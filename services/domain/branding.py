"""The practice's look in the HTML reminder (``PracticeConfig.branding``): a pure rule.

A header above the message: a bar in the practice's accent colour and its logo. The
logo travels inside the mail as an inline ``cid:`` part (never a remote image: no mail
loads anything from another host); a preview in a browser, which cannot resolve
``cid:``, gets the same image as a ``data:`` URI instead.

What does not change: the layout's urgent-line paragraph and everything below the
header. The header is made here from checked values only (a ``#rrggbb`` colour, the
practice's name escaped, an image that is a PNG or JPEG), never from template output,
so no practice text gains a ``style`` attribute, and the urgent line keeps its own
unstyled paragraph, whatever the accent colour.

A practice that chose neither a logo nor a colour of its own (the default accent)
gets the plain layout.
"""

from __future__ import annotations

import base64
import binascii
import html
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from schemas.models import PracticeConfig

__all__ = [
    "DEFAULT_ACCENT",
    "LOGO_CID",
    "Logo",
    "accent_color",
    "apply_branding",
    "practice_logo",
]

DEFAULT_ACCENT = "#1a6e5c"
# Unique within one message, which is all a Content-ID needs here.
LOGO_CID = "praktijklogo@e-afspraken"
MAX_LOGO_BYTES = 100 * 1024
_ACCENT = re.compile(r"^#[0-9a-fA-F]{6}$")
_ANCHOR = "<body>\n"

LogoSource = Literal["cid", "data"]


@dataclass(frozen=True)
class Logo:
    data: bytes
    subtype: Literal["png", "jpeg"]


def accent_color(config: PracticeConfig) -> str | None:
    # The schema checks both values; checked again here because they end up in markup
    # (and a config built with model_copy or model_construct skips validation).
    value = config.branding.accent_color
    if isinstance(value, str) and _ACCENT.match(value):
        return value.lower()
    return None


def practice_logo(config: PracticeConfig) -> Logo | None:
    """The logo as image bytes, or None (no logo, or not a PNG/JPEG within 100 KB)."""
    value = config.branding.logo
    if not isinstance(value, str) or not value:
        return None
    return _decoded_logo(value)


@lru_cache(maxsize=256)
def _decoded_logo(value: str) -> Logo | None:
    # Up to 100 KB decoded on every reminder otherwise; one Logo per practice's value.
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(data) > MAX_LOGO_BYTES:
        return None
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return Logo(data, "png")
    if data.startswith(b"\xff\xd8\xff"):
        return Logo(data, "jpeg")
    return None


def _header(
    config: PracticeConfig, accent: str | None, logo: Logo | None, source: LogoSource
) -> str:
    name = html.escape(config.name, quote=True)
    style = f"border-top:6px solid {accent};padding:12px 0 4px 0" if accent else "padding:12px 0"
    image = ""
    if logo is not None:
        if source == "cid":
            src = f"cid:{LOGO_CID}"
        else:
            src = f"data:image/{logo.subtype};base64,{base64.b64encode(logo.data).decode()}"
        image = (
            f'<img src="{src}" alt="{name}" height="48" '
            'style="height:48px;width:auto;border:0;display:block">'
        )
    return f'<div style="{style}">{image}</div>\n'


def apply_branding(document: str, config: PracticeConfig, *, logo_src: LogoSource = "cid") -> str:
    """The rendered HTML document with the practice's header, or unchanged without one."""
    accent = accent_color(config)
    logo = practice_logo(config)
    if accent == DEFAULT_ACCENT:
        accent = None
    if accent is None and logo is None:
        return document
    at = document.find(_ANCHOR)
    if at < 0:
        return document
    at += len(_ANCHOR)
    return document[:at] + _header(config, accent, logo, logo_src) + document[at:]
