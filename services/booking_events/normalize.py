"""The Appointment record (the current state) booking_events writes for an event.

Parsing and validating HIS events lives in :mod:`services.domain.his_events`, shared
with the HIS gateway and the connector kit.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final, NamedTuple

from schemas.models import Appointment, AppointmentEvent, MeetingInfo

__all__ = ["StateRecord", "appointment_json", "to_appointment"]


# --------------------------------------------------------------------------- the state


_EVENT_ONLY: Final[set[str]] = {"event_id", "occurred_at", "comment"}  # for to_appointment


class StateRecord(NamedTuple):
    value: bytes  # the Appointment record, JSON
    booked_at: str  # its booked_at, RFC 3339 (what the ledger keeps)


_COMMENT: Final[set[str]] = {"comment"}
_EVENT_ID: Final = ',"event_id":"'
_OCCURRED_AT: Final = ',"occurred_at":"'


def appointment_json(
    event: AppointmentEvent, booked_at: str | None, meeting: MeetingInfo
) -> StateRecord:
    """The Appointment record (current state) for ``event``, as JSON bytes.

    ``booked_at`` is RFC 3339 text as the ledger keeps it, ``None`` for an appointment
    seen for the first time (then it is this event's ``occurred_at``). The HIS ``comment``
    is left out: it is never stored downstream.

    Written from one pydantic dump of the event, without building an Appointment model
    or formatting times in Python, to keep the hot path fast: the event's last two fields
    (``event_id``, ``occurred_at``) become ``last_event_id`` and ``updated_at``. A key
    cannot occur inside a JSON string (its quotes would be escaped), so finding the last
    ``,"event_id":"`` is exact. A unit test checks the result against the model.
    """
    head = event.model_dump_json(exclude=_COMMENT)
    at_id = head.rindex(_EVENT_ID)
    at_time = head.rindex(_OCCURRED_AT)
    event_id = head[at_id + len(_EVENT_ID) : at_time - 1]
    occurred_at = head[at_time + len(_OCCURRED_AT) : -2]
    booked = occurred_at if booked_at is None else booked_at
    value = (
        f'{head[:at_id]},"booked_at":"{booked}","updated_at":"{occurred_at}"'
        f',"meeting":{_meeting_json(meeting)},"last_event_id":"{event_id}"}}'
    )
    return StateRecord(value.encode("utf-8"), booked)


_MEETING_JSON: dict[MeetingInfo, str] = {}


def _meeting_json(meeting: MeetingInfo) -> str:
    text = _MEETING_JSON.get(meeting)
    if text is None:
        text = meeting.model_dump_json()
        if len(_MEETING_JSON) < 4096:
            _MEETING_JSON[meeting] = text
    return text


def to_appointment(
    event: AppointmentEvent, booked_at: datetime, meeting: MeetingInfo
) -> Appointment:
    """The same state as :func:`appointment_json`, as a model (for the CLI and tests)."""
    fields = event.model_dump(exclude=_EVENT_ONLY)
    return Appointment.model_validate(
        {
            **fields,
            "booked_at": booked_at,
            "updated_at": event.occurred_at,
            "meeting": meeting,
            "last_event_id": event.event_id,
        }
    )
