"""The Web Push message a patient's browser shows: a pure rule (payload and Topic)."""

from __future__ import annotations

import base64
import hashlib
import json

__all__ = ["MAX_PAYLOAD_BYTES", "push_payload", "push_topic"]

# RFC 8291 section 4: one 4096-octet record minus header (86), tag (16) and delimiter (1).
MAX_PAYLOAD_BYTES = 3993


def push_payload(title: str, body: str, language: str) -> bytes:
    """The notification the service worker shows: JSON, UTF-8 (what the size limit counts)."""
    return json.dumps({"title": title, "body": body, "lang": language}, ensure_ascii=False).encode(
        "utf-8"
    )


def push_topic(practice_id: str, appointment_id: str) -> str:
    """RFC 8030 Topic for an appointment: a newer message replaces an undelivered older one.

    32 characters of the URL-safe base64 alphabet; a hash, so no ids leak to the service.
    """
    digest = hashlib.sha256(f"{practice_id}/{appointment_id}".encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")[:32]
