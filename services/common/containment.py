"""One bad record never stops a consumer: the containment policy of every service.

A record whose processing raises for a reason about the record (a value our code did
not expect: ``ValueError``, ``OverflowError``, ``TypeError``, a pydantic error, ...) goes
to its topic's DLQ with a reason, the exception's class and a scrubbed message, is
counted, and the partition goes on. Only infrastructure errors (the broker, I/O, memory,
cancellation) propagate, to be retried or to stop the loop. Every consumer calls
:func:`contain` (or :func:`record_error` in its own ``except``) around the code that
handles one record, so the policy lives here once.

The DLQ reason of such a record is :data:`PROCESSING_FAILED`; a :class:`DecodeError`
keeps its own reason.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from typing import Final, ParamSpec, TypeVar

from aiokafka.errors import KafkaError
from prometheus_client import Counter
from pydantic import ValidationError

from services.domain.codec import DecodeError, validation_reason

__all__ = [
    "INFRASTRUCTURE",
    "POISON_RECORDS",
    "PROCESSING_FAILED",
    "contain",
    "is_about_the_record",
    "record_error",
    "scrub",
]

log = logging.getLogger(__name__)

PROCESSING_FAILED: Final = "processing_failed"

# Errors of the world around a record: they are retried or stop the loop, never
# dead-letter a record (a broker hiccup must not park good records).
INFRASTRUCTURE: Final[tuple[type[BaseException], ...]] = (
    KafkaError,
    OSError,
    MemoryError,
    asyncio.CancelledError,
)

POISON_RECORDS = Counter(
    "reminders_poison_records_total",
    "Records whose processing raised an unexpected error, contained (sent to the DLQ) "
    "instead of stopping the consumer",
    ["topic", "exception"],
)

T = TypeVar("T")
P = ParamSpec("P")

# Whatever an exception message quotes may be a value from the record: drop it.
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_EMAIL = re.compile(r"\S+@\S+")
_DIGITS = re.compile(r"\d{6,}")
_MAX_DETAIL = 300


def is_about_the_record(exc: BaseException) -> bool:
    """True for an error the record caused; False for infrastructure (and BaseException)."""
    return isinstance(exc, Exception) and not isinstance(exc, INFRASTRUCTURE)


def scrub(text: str) -> str:
    """An exception message without what it may quote from the record (values, e-mail
    addresses, long digit runs such as a BSN), one line, bounded."""
    text = _QUOTED.sub("'…'", text)
    text = _EMAIL.sub("…", text)
    text = _DIGITS.sub("…", text)
    text = " ".join(text.split())
    return text[:_MAX_DETAIL]


def record_error(exc: Exception, topic: str = "") -> DecodeError:
    """The DecodeError a record's unexpected exception becomes (counted and logged)."""
    if isinstance(exc, DecodeError):
        return exc
    name = type(exc).__name__
    message = validation_reason(exc) if isinstance(exc, ValidationError) else scrub(str(exc))
    POISON_RECORDS.labels(topic or "unknown", name[:40]).inc()
    log.error(
        "a record could not be processed; it goes to the dead-letter topic",
        extra={"topic": topic, "exception": name, "error_detail": message},
    )
    detail = f"{name}: {message}" if message else name
    return DecodeError(PROCESSING_FAILED, f"processing failed ({detail})"[:1000])


def contain(
    topic: str, process: Callable[P, T], *args: P.args, **kwargs: P.kwargs
) -> T | DecodeError:
    """``process(*args, **kwargs)``, or the DecodeError for the record if it raised about
    the record (``topic`` is the record's, for the count). Infrastructure errors propagate.
    """
    try:
        return process(*args, **kwargs)
    except Exception as exc:
        if not is_about_the_record(exc):
            raise
        return record_error(exc, topic)
