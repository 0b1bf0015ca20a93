"""The dead-letter reason codes are one contract (schemas/reasons.py) that the code uses."""

from __future__ import annotations

import json
import re
from pathlib import Path

from schemas.asyncapi import render
from schemas.reasons import DEAD_LETTER_REASONS, HIS_EVENT_REASONS
from services.common.containment import PROCESSING_FAILED
from services.domain import his_events
from services.his_gateway import outcome

ROOT = Path(__file__).resolve().parents[2]
_LITERAL = re.compile(r"DecodeError\(\s*\"([a-z_]+)\"")


def test_every_reason_the_code_writes_is_in_the_contract() -> None:
    written = {
        code
        for path in (ROOT / "services").rglob("*.py")
        for code in _LITERAL.findall(path.read_text(encoding="utf-8"))
    }
    assert written, "the scan found no DecodeError at all"
    assert written <= set(DEAD_LETTER_REASONS), written - set(DEAD_LETTER_REASONS)
    assert PROCESSING_FAILED in DEAD_LETTER_REASONS
    # The HIS parser ranks exactly the contract's HIS reasons, in its order.
    assert tuple(HIS_EVENT_REASONS) == his_events.REASONS
    assert set(outcome._ISSUE_CODE) <= set(HIS_EVENT_REASONS)


def test_the_asyncapi_document_lists_the_reasons_on_every_dead_letter_topic() -> None:
    document = json.loads(render())
    reasons = [
        message["headers"]["properties"]["error-reason"]["enum"]
        for message in document["components"]["messages"].values()
        if "error-reason" in message.get("headers", {}).get("properties", {})
    ]
    assert reasons, "no dead-letter message in the AsyncAPI document"
    assert all(r == list(DEAD_LETTER_REASONS) for r in reasons)
