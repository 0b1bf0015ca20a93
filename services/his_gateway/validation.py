"""The one HIS-event parser, as the gateway sees it.

Every request body is judged by exactly the code booking_events runs on
``his.appointments.v1``, so a vendor gets at the door the verdict the pipeline would give,
with the same reason codes as the DLQ. This module is the gateway's only import of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Final

from schemas.models import AppointmentEvent

# TEMPORARY: until "domain: one HIS-event parser" lands on main, the parser still lives in
# booking_events; this is the single place that imports it (replaced by
# ``from services.domain.his_events import FHIR_CONTENT_TYPE, Problem, problems``).
from services.booking_events.normalize import FHIR_CONTENT_TYPE as _FHIR
from services.booking_events.normalize import parse_event
from services.common.codec import DecodeError

__all__ = ["FHIR_CONTENT_TYPE", "Problem", "problems"]

FHIR_CONTENT_TYPE: Final = _FHIR


@dataclass(frozen=True)
class Problem:
    reason: str
    detail: str
    field: str | None = None


def problems(
    value: bytes, *, fhir: bool, received_at: datetime
) -> tuple[AppointmentEvent | None, list[Problem]]:
    try:
        return parse_event(value, fhir=fhir, received_at=received_at), []
    except DecodeError as exc:
        return None, [Problem(exc.reason, exc.detail)]
