"""The meeting classifier for the "does this count as a meeting?" box in practice-admin.

A re-export of the one classifier (``services/booking_events/classify.py``, pure), so that
practice-admin never imports booking_events; it moves to ``services/domain`` with the
other pure rules, and then only the import below changes.
"""

from __future__ import annotations

from services.booking_events.classify import DEFAULT_KEYWORDS, classify, keyword_match

__all__ = ["DEFAULT_KEYWORDS", "classify", "keyword_match"]
