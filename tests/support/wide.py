"""Hypothesis strategies for what the edges might be sent, built from the contract models.

Wide values on purpose: any unicode, extreme dates and numbers, long strings, unicode
digits, control and direction characters, BSN notations. Each strategy mixes values the
edge should accept (to push records deep into the pipeline) with values it should refuse.
``REMINDERS_HYPOTHESIS_EXAMPLES`` sets the number of examples per property (default 200).
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, time, timedelta, timezone
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from schemas.models import APPOINTMENT_STATUSES

__all__ = [
    "EXAMPLES",
    "config_documents",
    "edge_settings",
    "fhir_documents",
    "native_documents",
    "preference_documents",
]

EXAMPLES = int(os.environ.get("REMINDERS_HYPOTHESIS_EXAMPLES", "200"))

edge_settings = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)

# Characters that broke a stage once, or could: unicode digits, separators, bidi,
# C1 controls, surrogates' neighbours, an encoded word.
_ODD = [
    "²",
    "٣",
    "१",
    "\u2028",
    "\u2029",
    "\u0085",
    "\u202e",
    "\u2066",
    "\u200b",
    "\ufeff",
    "\x00",
    "\r\n",
    "\t",
    "=?utf-8?q?x=0D=0AReply-To:_a@b?=",
    "{{",
    "}}",
    "{%",
    "%}",
    "<script>",
    "&amp;",
    "\U0001f600",
    "\ufffd",
]

odd_text = st.one_of(
    st.text(max_size=40),
    st.text(max_size=300),
    st.lists(st.sampled_from(_ODD) | st.text(max_size=5), max_size=8).map("".join),
)
plain_text = st.text(
    alphabet=st.characters(
        blacklist_categories=("Cc", "Cf", "Cs", "Zl", "Zp"), blacklist_characters="=?"
    ),
    max_size=200,
)
_PLAIN = st.characters(
    blacklist_categories=("Cc", "Cf", "Cs", "Zl", "Zp", "Zs"), blacklist_characters="=?"
)
short_plain = st.text(alphabet=_PLAIN, min_size=1, max_size=64)
identifier = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}", fullmatch=True)
agb = st.from_regex(r"[0-9]{8}", fullmatch=True)
bsn_like = st.sampled_from(
    ["123456782", "1234.56.782", "BSN123456782", "0123456782", "12345678", "NL-1234-56-782"]
)

_OFFSETS = st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59).map(
    lambda m: timezone(timedelta(minutes=m))
)
wide_moment = st.datetimes(
    min_value=datetime(1, 1, 2),
    max_value=datetime(9999, 12, 30),
    timezones=st.one_of(st.just(UTC), _OFFSETS),
)
# Inside the accepted range (2000-2100 UTC), to get records deep into the pipeline.
sane_moment = st.datetimes(
    min_value=datetime(2000, 1, 2),
    max_value=datetime(2099, 12, 30),
    timezones=st.one_of(st.just(UTC), _OFFSETS),
)
moment_text = st.one_of(
    (sane_moment | wide_moment).map(lambda d: d.isoformat()),
    st.sampled_from(
        ["9999-12-31T23:30:00-01:00", "0001-01-01T00:00:00+01:00", "2026-12-01T09:30:00"]
    ),
    odd_text,
)
wide_int = st.one_of(
    st.integers(min_value=0, max_value=2**63 - 1),
    st.integers(min_value=-(2**70), max_value=2**130),
    st.sampled_from([2**63 - 1, 2**63, 2**64, 10**30, -1]),
)


@st.composite
def _appointment_fields(draw: st.DrawFn) -> dict[str, Any]:
    start = draw(sane_moment)
    length = draw(st.timedeltas(min_value=timedelta(minutes=1), max_value=timedelta(days=2)))
    end = start + length if start.year < 2099 else start + timedelta(minutes=5)
    return {"start": start, "end": end}


@st.composite
def native_documents(draw: st.DrawFn) -> Any:
    """A native AppointmentEvent as JSON-ready data: valid shape, wide values."""
    wide = draw(st.integers(0, 3)) == 0  # a quarter of the examples: any field may be wild

    def pick(valid: st.SearchStrategy[Any], wild: st.SearchStrategy[Any]) -> Any:
        return draw(wild) if wide and draw(st.integers(0, 4)) == 0 else draw(valid)

    times = draw(_appointment_fields())
    doc: dict[str, Any] = {
        "event_id": pick(st.uuids().map(str), odd_text),
        "occurred_at": pick(sane_moment.map(lambda d: d.isoformat()), moment_text),
        "source_system": pick(short_plain, odd_text),
        "practice_id": pick(agb, st.one_of(identifier, odd_text, st.just("  "))),
        "appointment_id": pick(identifier, odd_text),
        "sequence": pick(st.integers(min_value=0, max_value=2**63 - 1), wide_int),
        "status": pick(st.sampled_from(APPOINTMENT_STATUSES), odd_text),
        "start": pick(st.just(times["start"].isoformat()), moment_text),
        "end": pick(st.just(times["end"].isoformat()), moment_text),
        "appointment_type": {
            "code": pick(short_plain, odd_text),
            "display": pick(plain_text, odd_text),
        },
        "agenda": {
            "id": pick(short_plain, odd_text),
            "display": pick(plain_text, odd_text),
        },
        "practitioner": {
            "id": pick(short_plain, odd_text),
            "display": pick(plain_text, odd_text),
        },
        "location": pick(st.builds(lambda d: {"display": d}, plain_text), st.none() | st.just({})),
        "booked_via": pick(st.sampled_from(["portal", "phone", "desk", "other"]), odd_text),
        "patient": {
            "id": pick(identifier, st.one_of(bsn_like, odd_text)),
            "required": pick(
                st.sampled_from(["required", "optional", "information-only"]), odd_text
            ),
        },
        "kind": pick(st.sampled_from(["consult", "meeting", None]), odd_text),
        "comment": pick(st.none() | odd_text, odd_text),
    }
    if doc["location"] is None:
        del doc["location"]
    return doc


@st.composite
def fhir_documents(draw: st.DrawFn) -> Any:
    """The FHIR R4 Appointment fields booking_events reads, with wide values."""
    wide = draw(st.integers(0, 3)) == 0

    def pick(valid: st.SearchStrategy[Any], wild: st.SearchStrategy[Any]) -> Any:
        return draw(wild) if wide and draw(st.integers(0, 4)) == 0 else draw(valid)

    times = draw(_appointment_fields())
    version = pick(
        st.integers(min_value=0, max_value=2**63 - 1).map(str),
        st.one_of(
            st.sampled_from(["²", "٣", "1²", "१२", "99999999999999999999999", "", " 7 "]),
            wide_int.map(str),
            odd_text,
        ),
    )
    participants: list[Any] = [
        {
            "actor": {"reference": f"Patient/{pick(identifier, st.one_of(bsn_like, odd_text))}"},
            "required": pick(st.sampled_from(["required", "information-only"]), odd_text),
        },
        {
            "actor": {
                "reference": f"Practitioner/{pick(identifier, odd_text)}",
                "display": pick(plain_text, odd_text),
            },
            "type": [{"coding": [{"code": "PPRF", "display": pick(plain_text, odd_text)}]}],
        },
        {
            "actor": {
                "reference": f"HealthcareService/{pick(identifier, odd_text)}",
                "display": pick(plain_text, odd_text),
            }
        },
        {
            "actor": {
                "reference": "Location/L1",
                "display": pick(plain_text, odd_text),
                "identifier": {
                    "system": "http://fhir.nl/fhir/NamingSystem/agb-z",
                    "value": pick(agb, st.one_of(identifier, odd_text)),
                },
            }
        },
    ]
    if wide and draw(st.booleans()):
        participants.append(
            {"actor": {"identifier": {"system": "http://fhir.nl/fhir/NamingSystem/bsn"}}}
        )
    meta: dict[str, Any] = {
        "versionId": version,
        "source": pick(plain_text, odd_text),
        "tag": [
            {
                "system": "urn:e-afspraken:booked-via",
                "code": pick(st.sampled_from(["portal", "phone"]), odd_text),
            },
            {
                "system": "urn:e-afspraken:kind",
                "code": pick(st.sampled_from(["consult", "meeting"]), odd_text),
            },
        ],
    }
    if draw(st.booleans()):
        meta["lastUpdated"] = pick(sane_moment.map(lambda d: d.isoformat()), moment_text)
    return {
        "resourceType": pick(st.just("Appointment"), odd_text),
        "id": pick(identifier, odd_text),
        "meta": meta,
        "status": pick(st.sampled_from(APPOINTMENT_STATUSES), odd_text),
        "appointmentType": {
            "coding": [
                {
                    "code": pick(identifier, odd_text),
                    "display": pick(plain_text, odd_text),
                }
            ]
        },
        "start": pick(st.just(times["start"].isoformat()), moment_text),
        "end": pick(st.just(times["end"].isoformat()), moment_text),
        "participant": participants,
    }


_TEMPLATE_PIECES = [
    "{{ label }}",
    "{{ date_text }}",
    "{{ time_text }}",
    "{{ practice.name }}",
    "{{ practice.phone }}",
    "{{ with_whom }}",
    "{{ location }}",
    "{{ label|upper }}",
    "{{ label.format }}",
    "{{ label['format'] }}",
    "{% if with_whom %}met {{ with_whom }}{% endif %}",
    "{{ instructions|truncate(20) }}",
    # Expressions that fail as they render (a refusal, never an exception of their own).
    "{{ 1 is divisibleby 0 }}",
    "{{ 2.5 is divisibleby 0.0 }}",
    "{{ label is divisibleby 3 }}",
    "{{ label[::0] }}",
    "{{ label|truncate(1e400) }}",
    "{{ 1e400 is odd }}",
    "<b>",
    "</p>",
    "\n",
]
template_source = st.lists(
    st.sampled_from(_TEMPLATE_PIECES) | plain_text | odd_text, max_size=12
).map("".join)
clock_text = st.one_of(
    st.times().map(lambda t: t.strftime("%H:%M")),
    st.times(timezones=st.one_of(st.none(), _OFFSETS)).map(time.isoformat),
    st.sampled_from(["21:00:30.5+02:00", "24:00", "9:00", "21.00", "00:00", "23:59"]),
    odd_text,
)


@st.composite
def config_documents(draw: st.DrawFn) -> Any:
    """A PracticeConfig as data (as from YAML or JSON), with wide values."""
    wide = draw(st.integers(0, 2)) == 0

    def pick(valid: st.SearchStrategy[Any], wild: st.SearchStrategy[Any]) -> Any:
        return draw(wild) if wide and draw(st.integers(0, 3)) == 0 else draw(valid)

    codes = draw(st.lists(identifier, max_size=4, unique=True))
    types = {
        code: {
            "label": pick(short_plain, odd_text),
            "with_whom": pick(plain_text, odd_text),
            "instructions": pick(plain_text, odd_text),
        }
        for code in codes
    }
    template_keys = draw(st.lists(st.sampled_from(["default", *codes]), max_size=2, unique=True))
    templates = {
        key: {
            language: {
                part: draw(template_source)
                for part in draw(
                    st.lists(
                        st.sampled_from(["subject", "text", "html", "push_title", "push_body"]),
                        max_size=3,
                        unique=True,
                    )
                )
            }
            for language in draw(st.lists(st.sampled_from(["nl", "en"]), max_size=2, unique=True))
        }
        for key in template_keys
    }
    if draw(st.booleans()):
        hours = pick(
            st.floats(min_value=0.5, max_value=168),
            st.floats(allow_nan=True, allow_infinity=True) | wide_int,
        )
        send: dict[str, Any] = {"policy": "hours_before", "hours": hours}
    else:
        at = pick(st.times().map(lambda t: t.strftime("%H:%M")), clock_text)
        send = {"policy": "day_before_at", "time": at}
    hh_mm = st.times().map(lambda t: t.strftime("%H:%M"))
    quiet = pick(
        st.one_of(st.none(), st.builds(lambda a, b: {"start": a, "end": b}, hh_mm, hh_mm)),
        st.builds(lambda a, b: {"start": a, "end": b}, clock_text, clock_text),
    )
    doc: dict[str, Any] = {
        "practice_id": pick(agb, st.one_of(identifier, odd_text)),
        "name": pick(short_plain, odd_text),
        "phone": pick(st.sampled_from(["020-1234567", "+31 20 123 4567"]), odd_text),
        "reminders_enabled": draw(st.booleans()),
        "timezone": pick(
            st.sampled_from(
                ["Europe/Amsterdam", "America/Curacao", "Pacific/Kiritimati", "Asia/Kathmandu"]
            ),
            odd_text,
        ),
        "send": send,
        "quiet_hours": quiet,
        "min_lead_minutes": pick(st.integers(0, 1440), wide_int),
        "skip_if_booked_within_hours": pick(st.floats(0, 168), wide_int),
        "channels": draw(st.sampled_from([["email", "push"], ["email"], ["push"]])),
        "sender": {
            "email": pick(st.just("herinnering@praktijk.example.org"), st.emails() | odd_text),
            "name": pick(short_plain, odd_text),
        },
        "preferences_url": pick(
            st.sampled_from(["https://portaal.example.org/v", None]),
            odd_text.map(lambda s: "https://x.example/" + s),
        ),
        "appointment_types": types,
        "templates": templates,
        "version": pick(st.integers(0, 2**63 - 1), wide_int),
    }
    return doc


_SUB = {
    "endpoint": "https://fcm.googleapis.com/fcm/send/abc",
    "keys": {"p256dh": "B" + "A" * 86, "auth": "A" * 22},
}


@st.composite
def preference_documents(draw: st.DrawFn, practice_id: str, patient_id: str) -> Any:
    """PatientPreferences as data, for one practice and patient, with wide values."""
    wide = draw(st.integers(0, 2)) == 0

    def pick(valid: st.SearchStrategy[Any], wild: st.SearchStrategy[Any]) -> Any:
        return draw(wild) if wide and draw(st.integers(0, 3)) == 0 else draw(valid)

    return {
        "practice_id": pick(st.just(practice_id), odd_text),
        "patient_id": pick(st.just(patient_id), st.one_of(bsn_like, odd_text)),
        "reminders": draw(st.booleans()),
        "email": pick(st.emails(), odd_text | st.none()),
        "push_subscriptions": pick(
            st.lists(st.just(_SUB), max_size=2),
            st.lists(
                st.builds(
                    lambda e: {"endpoint": e, "keys": _SUB["keys"]},
                    odd_text.map(lambda s: "https://push.example/" + s),
                ),
                max_size=2,
            ),
        ),
        "language": pick(st.sampled_from(["nl", "en"]), odd_text),
        "updated_at": pick(sane_moment.map(lambda d: d.isoformat()), moment_text),
    }
