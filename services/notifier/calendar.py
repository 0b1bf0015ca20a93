"""The appointment as an iCalendar object (RFC 5545) for the reminder e-mail.

``METHOD:PUBLISH``: the practice publishes an entry for the patient's own calendar; it
is not a meeting request (no attendees, nothing to answer). One VEVENT:

- ``UID`` is derived from practice and appointment id only, so every reminder of the
  same appointment (also after a move) updates the same calendar entry;
- ``SEQUENCE`` is the appointment's sequence (RFC 5545 wants a 32-bit integer: a FHIR
  ``lastUpdated`` in epoch milliseconds is written in seconds, which still grows);
- ``DTSTART``/``DTEND`` carry ``TZID`` of the practice's zone, with that zone's VTIMEZONE;
- ``SUMMARY`` is the practice's own label for the type and the practice's name,
  ``LOCATION`` the appointment's location (else the practice's name), ``DESCRIPTION``
  the practice's "with whom" and instructions and the urgent line. Never the HIS type
  display, the comment, the patient or anything clinical (DESIGN rule 5).

The VTIMEZONE is built here from the zone's transitions rather than with icalendar's
``Timezone.from_tzinfo``: icalendar 7.3 writes the onset of daylight time as the local
time *after* the change (03:00 for Europe/Amsterdam), where RFC 5545 section 3.6.5 wants
it in the offset before (02:00); a client that reads the VTIMEZONE instead of its own
zone database would put the change an hour late.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo

from icalendar import Calendar, Event, Timezone, TimezoneDaylight, TimezoneStandard, vCalAddress

from schemas.models import Appointment, PracticeConfig
from services.domain.mime import CALENDAR_FILENAME
from services.domain.render import urgent_line

__all__ = ["CALENDAR_FILENAME", "PRODID", "appointment_calendar", "calendar_uid", "vtimezone"]

PRODID = "-//e-afspraken//afspraakherinneringen//NL"
_INT32_MAX = 2**31 - 1

_APPOINTMENT_AT = {"nl": "Afspraak bij {name}", "en": "Appointment at {name}"}
_WITH = {"nl": "Bij: {who}", "en": "With: {who}"}


def calendar_uid(practice_id: str, appointment_id: str, domain: str) -> str:
    """Stable per appointment, opaque (the HIS's ids stay out of the patient's calendar)."""
    digest = hashlib.sha256(f"{practice_id}/{appointment_id}".encode()).hexdigest()[:32]
    return f"{digest}@{domain}"


def _sequence(value: int) -> int:
    if value > _INT32_MAX:
        value //= 1000  # epoch milliseconds (FHIR lastUpdated) to seconds
    return min(value, _INT32_MAX)


# --------------------------------------------------------------------------- VTIMEZONE


def _transitions(zone: tzinfo, begin: datetime, end: datetime) -> list[datetime]:
    """UTC instants in [begin, end) where the zone's offset changes, to the second."""

    def offset(moment: datetime) -> timedelta | None:
        return moment.astimezone(zone).utcoffset()

    found: list[datetime] = []
    step = timedelta(hours=6)  # no zone changes twice within six hours
    low = begin
    while low < end:
        high = min(low + step, end)
        if offset(low) != offset(high):
            a, b = low, high
            while b - a > timedelta(seconds=1):
                middle = a + (b - a) / 2
                if offset(middle) == offset(a):
                    a = middle
                else:
                    b = middle
            found.append(b.replace(microsecond=0))
        low = high
    return found


def _observance(
    zone: tzinfo, onset_utc: datetime, offset_from: timedelta
) -> TimezoneStandard | TimezoneDaylight:
    local = onset_utc.astimezone(zone)
    is_dst = bool(local.dst())
    part = TimezoneDaylight() if is_dst else TimezoneStandard()
    # RFC 5545 3.6.5: the onset is a local time in the offset in force before it.
    part.add("dtstart", (onset_utc + offset_from).replace(tzinfo=None))
    part.add("tzoffsetfrom", offset_from)
    part.add("tzoffsetto", local.utcoffset())
    name = local.tzname()
    if name:
        part.add("tzname", name)
    return part


@lru_cache(maxsize=64)
def _vtimezone_ical(zone_name: str, year: int) -> bytes:
    # Some 60 of a calendar's 80 lines, the same for every reminder of the year: written
    # once (icalendar's serialising is most of what building a calendar costs).
    return bytes(vtimezone(zone_name, year).to_ical())


_HEAD: bytes | None = None
_TAIL = b"END:VCALENDAR\r\n"


def _calendar_head() -> bytes:
    """``BEGIN:VCALENDAR`` and the calendar's properties, as Calendar.to_ical writes them."""
    global _HEAD
    if _HEAD is None:
        calendar = Calendar()
        calendar.add("prodid", PRODID)
        calendar.add("version", "2.0")
        calendar.add("method", "PUBLISH")
        calendar.add("calscale", "GREGORIAN")
        whole = bytes(calendar.to_ical())
        assert whole.endswith(_TAIL)
        _HEAD = whole[: -len(_TAIL)]
    return _HEAD


@lru_cache(maxsize=64)
def vtimezone(zone_name: str, year: int) -> Timezone:
    """The zone's VTIMEZONE for the years ``year - 1`` to ``year + 1``."""
    zone = ZoneInfo(zone_name)
    begin = datetime(year - 1, 1, 1, tzinfo=UTC)
    end = datetime(year + 2, 1, 1, tzinfo=UTC)
    component = Timezone()
    component.add("tzid", zone_name)
    first_offset = begin.astimezone(zone).utcoffset()
    assert first_offset is not None
    # The observance in force at the window's start, so every moment in it is covered.
    component.add_component(_observance(zone, begin, first_offset))
    previous = first_offset
    for onset in _transitions(zone, begin, end):
        component.add_component(_observance(zone, onset, previous))
        new = onset.astimezone(zone).utcoffset()
        assert new is not None
        previous = new
    return component


# --------------------------------------------------------------------------- the entry


def appointment_calendar(
    config: PracticeConfig,
    appointment: Appointment,
    language: str,
    *,
    uid_domain: str,
    now: datetime,
) -> bytes:
    """The ``text/calendar; method=PUBLISH`` body (CRLF lines) for this appointment."""
    language = language if language in _APPOINTMENT_AT else "nl"
    zone = ZoneInfo(config.timezone)
    start = appointment.start.astimezone(zone)
    end = appointment.end.astimezone(zone)

    # Written in pieces: head, the cached VTIMEZONE(s), the VEVENT and the end; the same
    # bytes as one Calendar.to_ical() (the calendar tests read it back and write it again).
    pieces = [_calendar_head(), _vtimezone_ical(config.timezone, start.year)]
    if end.year != start.year:
        pieces.append(_vtimezone_ical(config.timezone, end.year))

    text = config.type_text(appointment.appointment_type.code)
    if text is not None:
        summary = f"{text.label} – {config.name}"
    else:
        summary = _APPOINTMENT_AT[language].format(name=config.name)
    location = appointment.location.display if appointment.location is not None else ""
    lines: list[str] = []
    if text is not None and text.with_whom:
        lines.append(_WITH[language].format(who=text.with_whom))
    if text is not None and text.instructions:
        lines.append(text.instructions)
    if config.phone:
        lines.append(urgent_line(config.phone, language))
    # The properties in icalendar's order for a VEVENT (its canonical order, then by
    # name), each line written by icalendar and kept: a practice's summary, location,
    # description and organizer and a slot's start and end repeat across reminders.
    uid = calendar_uid(appointment.practice_id, appointment.appointment_id, uid_domain)
    event = [
        b"BEGIN:VEVENT\r\n",
        _line("summary", summary),
        _time_line("dtstart", start),
        _time_line("dtend", end),
        _time_line("dtstamp", now.astimezone(UTC)),
        _uid_line(uid),
        b"SEQUENCE:%d\r\n" % _sequence(appointment.sequence),
        _line("class", "PRIVATE"),
    ]
    if lines:
        event.append(_line("description", "\n".join(lines)))
    event.append(_line("location", location or config.name))
    if config.sender is not None:
        event.append(_organizer_line(str(config.sender.email), config.name))
    event += [_line("status", "CONFIRMED"), _line("transp", "OPAQUE"), b"END:VEVENT\r\n"]
    pieces += event
    pieces.append(_TAIL)
    return b"".join(pieces)


def _property_line(name: str, value: object) -> bytes:
    """One property as icalendar writes it inside a VEVENT (escaped, folded, CRLF)."""
    event = Event()
    event.add(name, value)
    whole = bytes(event.to_ical())
    head, tail = b"BEGIN:VEVENT\r\n", b"END:VEVENT\r\n"
    assert whole.startswith(head) and whole.endswith(tail)
    return whole[len(head) : -len(tail)]


_PLAIN_UID = re.compile(r"[A-Za-z0-9.@-]{1,70}")


def _uid_line(uid: str) -> bytes:
    """``UID`` differs on every appointment: a plain one (hex digest @ host name, nothing
    to escape, shorter than a folded line) is written as icalendar writes it."""
    if _PLAIN_UID.fullmatch(uid):
        return b"UID:" + uid.encode("ascii") + b"\r\n"
    return _property_line("uid", uid)


@lru_cache(maxsize=4096)
def _kept_line(name: str, value: str | int) -> bytes:
    return _property_line(name, value)


def _line(name: str, value: str | int) -> bytes:
    return _kept_line(name, value)


@lru_cache(maxsize=4096)
def _zoned_line(name: str, moment: datetime, zone: str) -> bytes:
    return _property_line(name, moment)


# Winter and summer, microseconds that must not show: the two probes of _time_shape.
_PROBES = ((2027, 1, 28, 1, 2, 3, 456789), (2027, 7, 28, 1, 2, 3, 456789))


def _digits(moment: datetime) -> bytes:
    return b"%04d%02d%02dT%02d%02d%02d" % (
        moment.year,
        moment.month,
        moment.day,
        moment.hour,
        moment.minute,
        moment.second,
    )


@lru_cache(maxsize=256)
def _time_shape(name: str, zone: tzinfo) -> tuple[bytes, bytes] | None:
    """What icalendar writes around the digits of a time in ``zone``: (``DTSTART;TZID=
    Europe/Amsterdam:``, CRLF) or, in UTC, (``DTSTAMP:``, ``Z`` CRLF). Found once per
    property and zone by writing two probe times (winter, summer) with icalendar; None
    when a line is not prefix + the time's own digits + suffix, unfolded (the slow
    path). A ``Z`` line is taken only for ``datetime.UTC`` itself: for any other zone a
    ``Z`` means icalendar converted the time, and the digits would not be its own."""
    shapes = set()
    for probe in _PROBES:
        moment = datetime(*probe, tzinfo=zone)
        whole = _property_line(name, moment)
        digits = _digits(moment)
        for suffix in (b"\r\n", b"Z\r\n"):
            if whole.endswith(digits + suffix) and len(whole) <= 75:
                prefix = whole[: -len(digits + suffix)]
                if b"\r\n" not in prefix and (suffix == b"\r\n" or zone is UTC):
                    shapes.add((prefix, suffix))
                break
        else:
            return None
    if len(shapes) != 1:
        return None
    return shapes.pop()


def _time_line(name: str, moment: datetime) -> bytes:
    """A DTSTART/DTEND/DTSTAMP line as icalendar writes it: the zone's shape found once
    (``_time_shape``), the digits written here; a zone whose lines are of another form
    goes through icalendar, cached per time and zone."""
    zone = moment.tzinfo
    shape = _time_shape(name, zone) if zone is not None and moment.year >= 1000 else None
    if shape is None:
        # Equal datetimes in other zones compare equal: the zone is part of the key.
        return _zoned_line(name, moment, str(moment.tzinfo))
    return shape[0] + _digits(moment) + shape[1]


@lru_cache(maxsize=1024)
def _organizer_line(email: str, name: str) -> bytes:
    organizer = vCalAddress(f"mailto:{email}")
    organizer.params["cn"] = name
    return _property_line("organizer", organizer)
