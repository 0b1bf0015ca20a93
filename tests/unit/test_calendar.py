"""The calendar part: RFC 5545 content read back with the icalendar library, across DST."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo, available_timezones

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from icalendar import Calendar, Event, Timezone

from services.notifier.calendar import (
    _property_line,
    _time_line,
    appointment_calendar,
    calendar_uid,
    vtimezone,
)
from services.notifier.samples import sample_appointment, sample_config

AMS = ZoneInfo("Europe/Amsterdam")
NOW = datetime(2027, 3, 20, 12, 0, tzinfo=UTC)
DOMAIN = "reminders.example.org"


def _ics(**overrides: object) -> bytes:
    start = overrides.pop("start", datetime(2027, 3, 29, 9, 30, tzinfo=AMS))
    appointment = sample_appointment(start=start, **overrides)  # type: ignore[arg-type]
    return appointment_calendar(sample_config(), appointment, "nl", uid_domain=DOMAIN, now=NOW)


def _event(raw: bytes) -> Event:
    calendar = Calendar.from_ical(raw)
    [event] = calendar.walk("VEVENT")
    assert isinstance(event, Event)
    return event


def _offset_from_vtimezone(component: Timezone, local: datetime) -> timedelta:
    """The UTC offset of a local time by the VTIMEZONE's own observances (no tz database)."""
    best: tuple[datetime, timedelta] | None = None
    for part in component.walk():
        if part.name not in ("STANDARD", "DAYLIGHT"):
            continue
        onset = part.decoded("dtstart")
        offset_from = part.decoded("tzoffsetfrom")
        offset_to = part.decoded("tzoffsetto")
        onset_utc = onset - offset_from
        moment_utc = local - offset_to
        if onset_utc <= moment_utc and (best is None or onset_utc > best[0]):
            best = (onset_utc, offset_to)
    assert best is not None, "the VTIMEZONE does not cover this moment"
    return best[1]


@pytest.mark.parametrize(
    ("start", "utc_hour", "offset_hours"),
    [
        (datetime(2027, 3, 26, 9, 30, tzinfo=AMS), 8, 1),  # Friday before the change
        (datetime(2027, 3, 29, 9, 30, tzinfo=AMS), 7, 2),  # Monday after it
        (datetime(2027, 10, 29, 9, 30, tzinfo=AMS), 7, 2),  # Friday before the autumn change
        (datetime(2027, 11, 1, 9, 30, tzinfo=AMS), 8, 1),  # Monday after it
    ],
)
def test_local_start_in_the_practice_zone_on_both_sides_of_the_change(
    start: datetime, utc_hour: int, offset_hours: int
) -> None:
    raw = _ics(start=start)
    assert b"DTSTART;TZID=Europe/Amsterdam:" + start.strftime("%Y%m%dT093000").encode() in raw
    event = _event(raw)
    dtstart = event.decoded("dtstart")
    assert dtstart.tzinfo is not None
    assert (dtstart.hour, dtstart.minute) == (9, 30)
    assert dtstart.astimezone(UTC).hour == utc_hour
    assert event.decoded("dtend") - dtstart == timedelta(minutes=10)

    # The VTIMEZONE alone (for a client without a tz database) gives the same offset.
    [component] = Calendar.from_ical(raw).walk("VTIMEZONE")
    assert isinstance(component, Timezone)
    assert str(component["tzid"]) == "Europe/Amsterdam"
    naive = start.replace(tzinfo=None)
    assert _offset_from_vtimezone(component, naive) == timedelta(hours=offset_hours)


def test_vtimezone_onsets_are_in_the_offset_before_the_change() -> None:
    """RFC 5545 3.6.5: 2027-03-28 02:00 (+01:00 to +02:00), 2027-10-31 03:00 (back)."""
    text = vtimezone("Europe/Amsterdam", 2027).to_ical().decode()
    assert "BEGIN:DAYLIGHT\r\nDTSTART:20270328T020000\r\nTZNAME:CEST\r\n" in text
    assert "TZOFFSETFROM:+0100\r\nTZOFFSETTO:+0200" in text
    assert "BEGIN:STANDARD\r\nDTSTART:20271031T030000\r\nTZNAME:CET\r\n" in text


def test_publish_not_a_request() -> None:
    raw = _ics()
    calendar = Calendar.from_ical(raw)
    assert str(calendar["method"]) == "PUBLISH"
    assert str(calendar["version"]) == "2.0"
    assert "ATTENDEE" not in _event(raw)
    assert raw.endswith(b"END:VCALENDAR\r\n")
    assert b"\n" not in raw.replace(b"\r\n", b"")


def test_uid_stable_per_appointment_and_sequence_from_the_appointment() -> None:
    first = _event(_ics(sequence=1))
    moved = _event(_ics(sequence=4, start=datetime(2027, 4, 2, 14, 0, tzinfo=AMS)))
    other = _event(_ics(appointment_id="a-2"))
    assert str(first["uid"]) == str(moved["uid"]) == calendar_uid("01234567", "a-1", DOMAIN)
    assert str(other["uid"]) != str(first["uid"])
    assert "a-1" not in str(first["uid"])
    assert first.decoded("sequence") == 1 and moved.decoded("sequence") == 4


def test_sequence_in_epoch_milliseconds_fits_32_bits() -> None:
    event = _event(_ics(sequence=1_806_000_000_123))
    assert event.decoded("sequence") == 1_806_000_000


def test_practice_name_location_and_no_clinical_data() -> None:
    raw = _ics(
        appointment_type={"code": "C10", "display": "Pijn op de borst"},
        agenda={"id": "ag-1", "display": "Spreekuur dr. Jansen"},
        patient={"id": "pt-secret-9", "required": "required"},
    )
    event = _event(raw)
    assert str(event["summary"]) == "Consult 10 minuten – Huisartsenpraktijk De Linde"
    assert str(event["location"]) == "Lindelaan 1, Utrecht"
    description = str(event["description"])
    assert "de huisarts" in description
    assert "Bel dan de praktijk: 020-1234567" in description
    text = raw.decode()
    for secret in ("Pijn op de borst", "pt-secret-9", "p-1@patient", "Spreekuur"):
        assert secret not in text
    assert str(event["organizer"]) == "mailto:noreply@delinde.example.org"


def test_unknown_type_gets_a_neutral_summary_and_the_practice_as_location() -> None:
    appointment = sample_appointment(
        start=datetime(2027, 3, 29, 9, 30, tzinfo=AMS),
        appointment_type={"code": "ZZ", "display": "Uitslag bloedonderzoek"},
        location=None,
    )
    raw = appointment_calendar(sample_config(), appointment, "en", uid_domain=DOMAIN, now=NOW)
    event = _event(raw)
    assert str(event["summary"]) == "Appointment at Huisartsenpraktijk De Linde"
    assert str(event["location"]) == "Huisartsenpraktijk De Linde"
    assert b"bloedonderzoek" not in raw


@pytest.mark.parametrize(
    "start",
    [datetime(2027, 3, 29, 9, 30, tzinfo=AMS), datetime(2026, 12, 31, 23, 55, tzinfo=AMS)],
)
def test_written_in_pieces_it_is_one_calendar_as_icalendar_writes_it(start: datetime) -> None:
    """The head and VTIMEZONE are cached bytes: the whole still reads as one VCALENDAR
    (a VTIMEZONE per year it touches, one VEVENT) and icalendar writes it back unchanged."""
    raw = _ics(start=start)
    calendar = Calendar.from_ical(raw)
    assert calendar.to_ical() == raw
    assert [c.name for c in calendar.subcomponents][-1] == "VEVENT"
    years = {start.year, (start + timedelta(minutes=10)).year}
    assert len(calendar.walk("VTIMEZONE")) == len(years)


_ZONES: list[tzinfo] = [
    UTC,
    ZoneInfo("UTC"),
    AMS,
    *(ZoneInfo(name) for name in sorted(available_timezones())),
]
_FIXED = st.builds(
    lambda minutes: timezone(timedelta(minutes=minutes)), st.integers(-23 * 60, 23 * 60)
)


@settings(max_examples=400, deadline=None)
@given(
    name=st.sampled_from(["dtstart", "dtend", "dtstamp"]),
    zone=st.one_of(st.sampled_from(_ZONES), _FIXED),
    moment=st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    to_utc=st.booleans(),
)
def test_time_lines_are_the_lines_icalendar_writes(
    name: str, zone: tzinfo, moment: datetime, to_utc: bool
) -> None:
    """DTSTART/DTEND/DTSTAMP written without icalendar are byte for byte its lines, in any
    zone (UTC, IANA, fixed offsets) and year, microseconds and all."""
    local = moment.replace(tzinfo=zone)
    if to_utc:  # as appointment_calendar writes DTSTAMP
        local = local.astimezone(UTC)
    assert _time_line(name, local) == _property_line(name, local)
