"""The practice logo: a PNG or JPEG of at most 100 KB, decoded and re-encoded with Pillow.

Re-encoding drops everything but the pixels (metadata, trailing data, a polyglot's other
half). SVG, HTML or anything Pillow cannot decode as PNG or JPEG is refused.
"""

from __future__ import annotations

import base64
import io

from PIL import Image, ImageOps

from schemas.models import MAX_LOGO_BYTES

__all__ = ["LogoRefused", "clean_logo"]

_MAX_PIXELS = 2000 * 2000
_ORIENTATION = 0x0112  # the EXIF tag


class LogoRefused(ValueError):
    """``reason`` is a key of the page texts."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def clean_logo(data: bytes) -> str:
    """The re-encoded image as base64; LogoRefused otherwise."""
    if len(data) > MAX_LOGO_BYTES:
        raise LogoRefused("logo_too_big")
    try:
        with Image.open(io.BytesIO(data)) as probe:
            kind = probe.format
            if kind not in ("PNG", "JPEG"):
                raise LogoRefused("logo_not_image")
            if probe.width * probe.height > _MAX_PIXELS:
                raise LogoRefused("logo_too_large_pixels")
            probe.verify()
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            # Re-encoding drops the EXIF orientation a phone's photo is shown by: turn
            # the pixels upright first.
            turned = image.getexif().get(_ORIENTATION, 1) != 1
            upright = ImageOps.exif_transpose(image) if turned else image
            out = io.BytesIO()
            if kind == "PNG":
                upright.save(out, format="PNG", optimize=True)
            else:
                upright.convert("RGB").save(out, format="JPEG", quality=90)
    except LogoRefused:
        raise
    except Image.DecompressionBombError as exc:
        raise LogoRefused("logo_too_large_pixels") from exc
    except MemoryError:
        raise
    except Exception as exc:
        # Pillow's decoders answer a broken file with nearly any exception (OSError,
        # SyntaxError, IndexError, UnboundLocalError, struct.error...), not only
        # UnidentifiedImageError: whatever it raises, the upload is not an image we use.
        raise LogoRefused("logo_not_image") from exc
    encoded = out.getvalue()
    if len(encoded) > MAX_LOGO_BYTES:
        raise LogoRefused("logo_too_big")
    return base64.b64encode(encoded).decode("ascii")
