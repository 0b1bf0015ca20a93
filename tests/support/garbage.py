"""Malformed records for every input topic, drawn with hypothesis.

Each record is broken in at least one way a real producer gets wrong: truncated JSON,
wrong types, huge strings, control characters, times without offset, unknown enum values,
template injection in configs, CRLF in names and addresses, a BSN as patient id. Keys
name a practice that has no config, so a record that slipped through could never
produce a message: it would show up as a missing DLQ entry instead.
"""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

GHOST_PRACTICE = "01999999"

_VALID_EVENT: dict[str, Any] = {
    "event_id": "0b7f0d3e-8c7a-4c55-9e0e-1f2d3c4b5a69",
    "occurred_at": "2026-11-30T08:00:00+01:00",
    "source_system": "medicom",
    "practice_id": GHOST_PRACTICE,
    "appointment_id": "G-1",
    "sequence": 1,
    "status": "booked",
    "start": "2026-12-01T09:30:00+01:00",
    "end": "2026-12-01T09:40:00+01:00",
    "appointment_type": {"code": "C10", "display": "Consult"},
    "agenda": {"id": "AG-1", "display": "Spreekuur"},
    "practitioner": {"id": "P-1", "display": "dr. X"},
    "patient": {"id": "pt-ghost", "required": "required"},
}

_BREAKERS: dict[str, list[Any]] = {
    "start": ["2026-12-01T09:30:00", "gisteren", 12, None],
    "end": ["2026-12-01T08:00:00+01:00", "2026-12-01T09:40:00"],
    "status": ["maybe", "BOOKED", 3],
    "sequence": ["one", -1, 1.5],
    "practice_id": ["", "a/b", "x" * 500],
    "patient": [{"id": "123456782"}, {"id": "pt\r\nBcc: x@example.org"}, "pt-1", {"id": ""}],
    "appointment_type": [{"code": ""}, None, {"code": "C" * 10_000}],
    "occurred_at": ["2026-11-30 08:00", None],
    "event_id": ["not-a-uuid", 7],
    "agenda": [{"display": "no id"}, []],
}


def _mangle_event(data: st.DataObject) -> bytes:
    event = dict(_VALID_EVENT)
    field = data.draw(st.sampled_from(sorted(_BREAKERS)))
    event[field] = data.draw(st.sampled_from(_BREAKERS[field]))
    if data.draw(st.booleans()):
        event["location"] = {"display": data.draw(st.text(min_size=1, max_size=50)) + "\x00"}
    raw = json.dumps(event).encode()
    how = data.draw(st.sampled_from(["as-is", "truncate", "bytes"]))
    if how == "truncate":
        return raw[: data.draw(st.integers(1, len(raw) - 2))]
    if how == "bytes":
        return data.draw(st.binary(min_size=1, max_size=200)) + b"\xff{"
    return raw


_BAD_CONFIGS: list[dict[str, Any]] = [
    {"reminders_enabled": True},  # no phone
    {"timezone": "Europe/Amsterdamm"},
    {"templates": {"default": {"nl": {"text": "{{ ''.__class__.__mro__[1].__subclasses__() }}"}}}},
    {"templates": {"default": {"nl": {"subject": "{{ patient.bsn }}"}}}},
    {"templates": {"default": {"nl": {"html": "{% for %}"}}}},
    {"sender": {"email": "praktijk@example.org\r\nBcc: x@example.org", "name": "P"}},
    {"sender": {"email": "praktijk@example.org", "name": "De Linde\r\nBcc: x"}},
    {"channels": ["sms"]},
    {"send": {"policy": "day_before_at", "time": 1080}},
    {"quiet_hours": {"start": "25:00", "end": "08:00"}},
    {"colour": "red"},
]


def _mangle_config(data: st.DataObject) -> bytes:
    config: dict[str, Any] = {
        "practice_id": GHOST_PRACTICE,
        "name": "Spookpraktijk",
        "phone": "020-0000000",
        "sender": {"email": "praktijk@example.org", "name": "Spook"},
    }
    config.update(data.draw(st.sampled_from(_BAD_CONFIGS)))
    if "phone" in config and config.get("reminders_enabled") and len(config) == 5:
        config.pop("phone")
    if config == {"practice_id": GHOST_PRACTICE}:
        config["name"] = 5
    return json.dumps(config).encode()


def _mangle_preferences(data: st.DataObject) -> bytes:
    prefs: dict[str, Any] = {
        "practice_id": GHOST_PRACTICE,
        "patient_id": "pt-ghost",
        "reminders": True,
        "email": "pt-ghost@example.org",
        "updated_at": "2026-11-01T10:00:00+01:00",
    }
    broken = data.draw(
        st.sampled_from(
            [
                ("email", "pt-ghost@example.org\r\nBcc: x@example.org"),
                ("email", "not an address"),
                ("patient_id", "123456782"),
                ("reminders", "ja"),
                ("language", "fy"),
                ("updated_at", "2026-11-01T10:00:00"),
                ("push_subscriptions", [{"endpoint": "javascript:alert(1)", "keys": {}}]),
            ]
        )
    )
    prefs[broken[0]] = broken[1]
    return json.dumps(prefs).encode()


def _garbage_value(data: st.DataObject) -> bytes:
    return data.draw(
        st.one_of(
            st.binary(min_size=1, max_size=300),
            st.just(b'{"reminder_id": 1}'),
            st.just(b'{"practice_id": "' + b"A" * 100_000 + b'"}'),
            st.just(b"[]"),
            st.just(b'{"start": "2026-12-01T09:30:00"}'),
        )
    )


_KINDS = {
    "his.appointments.v1": _mangle_event,
    "practice.config.v1": _mangle_config,
    "patient.preferences.v1": _mangle_preferences,
    "appointments.v1": _garbage_value,
    "reminders.due.v1": _garbage_value,
}


def _key(kind: str, i: int) -> str:
    if kind == "his.appointments.v1" or kind == "practice.config.v1":
        return GHOST_PRACTICE
    return f"{GHOST_PRACTICE}/g{i}"


def garbage_records(
    *, topic_kind: str, practice: str, rng: random.Random, count: int
) -> list[tuple[str, bytes]]:
    """``count`` malformed (key, value) records for the topic ``topic_kind``."""
    del practice  # records carry the ghost practice; the caller picks the partition
    out: list[bytes] = []
    make = _KINDS[topic_kind]

    @settings(
        max_examples=count,
        database=None,
        derandomize=True,
        suppress_health_check=list(HealthCheck),
        deadline=None,
    )
    @given(st.data())
    def collect(data: st.DataObject) -> None:
        if len(out) < count:
            out.append(make(data))

    collect()
    while len(out) < count:  # hypothesis may stop early on a small space
        out.append(out[rng.randrange(len(out))] if out else b"{")
    return [(_key(topic_kind, i), value) for i, value in enumerate(out)]


# --------------------------------------------------------------------------- odd, not broken

_FHIR: dict[str, Any] = {
    "resourceType": "Appointment",
    "meta": {"versionId": "1", "lastUpdated": "2026-11-30T08:00:00+01:00"},
    "status": "booked",
    "appointmentType": {"coding": [{"code": "C10", "display": "Consult"}]},
    "start": "2026-12-01T09:30:00+01:00",
    "end": "2026-12-01T09:40:00+01:00",
    "participant": [
        {"actor": {"reference": "Patient/pt-ghost"}, "required": "required"},
        {"actor": {"reference": "Practitioner/P-1", "display": "dr. X"}},
        {
            "actor": {
                "reference": "Location/L-1",
                "identifier": {
                    "system": "http://fhir.nl/fhir/NamingSystem/agb-z",
                    "value": GHOST_PRACTICE,
                },
            }
        },
    ],
}
FHIR_HEADERS = [("content-type", b"application/fhir+json")]


@dataclass(frozen=True)
class OddRecord:
    """A record the edges might accept although it is odd: extreme but valid dates, the
    largest numbers, unicode digits, control and direction characters. ``verdict`` is
    what must become of it: ``dlq`` (refused with a reason) or ``processed`` (an
    appointment state for the ghost practice, which has no config and so never sends)."""

    topic_kind: str
    key: str
    value: bytes
    fhir: bool
    verdict: str  # "dlq" or "processed"
    what: str

    @property
    def state_key(self) -> str:
        """The appointments.v1 key a processed record must produce."""
        data = json.loads(self.value)
        return f"{GHOST_PRACTICE}/{data.get('appointment_id') or data.get('id')}"


def _native(n: int, start: datetime, **changes: Any) -> bytes:
    data = {
        **_VALID_EVENT,
        "appointment_id": f"ODD-{n}",
        "event_id": str(uuid.UUID(int=n + 1)),
        "start": start.isoformat(),
        "end": (start + timedelta(minutes=10)).isoformat(),
    }
    data.update(changes)
    return json.dumps(data, ensure_ascii=False).encode()


def _fhir(n: int, start: datetime, version: str) -> bytes:
    data = json.loads(json.dumps(_FHIR))
    data["id"] = f"ODD-{n}"
    data["start"] = start.isoformat()
    data["end"] = (start + timedelta(minutes=10)).isoformat()
    data["meta"]["versionId"] = version
    return json.dumps(data, ensure_ascii=False).encode()


def odd_records(now: datetime) -> list[OddRecord]:
    """The inputs of issue 12 that once stopped a service, and their valid neighbours
    (appointments two days after ``now``, so none has expired)."""
    his, config = "his.appointments.v1", "practice.config.v1"
    s = now.replace(microsecond=0) + timedelta(days=2)
    g = GHOST_PRACTICE
    late = {"start": "2099-12-30T23:00:00+14:00", "end": "2099-12-30T23:10:00+14:00"}
    duplicate = _native(9, s).replace(b'"patient": {', b'"patient": {"id": "123456782", ', 1)
    config_base = {"practice_id": g, "name": "Ghost", "phone": "020-1234567"}
    return [
        OddRecord(
            his,
            g,
            _native(1, s, start="9999-12-31T23:30:00-01:00", end="9999-12-31T23:45:00-01:00"),
            False,
            "dlq",
            "year 9999",
        ),
        OddRecord(his, g, _native(2, s, **late), False, "processed", "late 2099"),
        OddRecord(his, g, _native(3, s, sequence=2**63 - 1), False, "processed", "max sequence"),
        OddRecord(his, g, _native(4, s, sequence=10**30), False, "dlq", "sequence 10**30"),
        OddRecord(
            his,
            g,
            _native(5, s, agenda={"id": "AG", "display": "Spreek\u202euur"}),
            False,
            "dlq",
            "bidi in display",
        ),
        OddRecord(
            his,
            g,
            _native(6, s, agenda={"id": "AG", "display": "Spreekuur ✓ Ærø 😀"}),
            False,
            "processed",
            "unicode display",
        ),
        OddRecord(his, g, _fhir(7, s, "²"), True, "dlq", "versionId ²"),
        OddRecord(his, g, _fhir(8, s, str(2**63 - 1)), True, "processed", "versionId max"),
        OddRecord(his, g, duplicate, False, "dlq", "duplicate key"),
        OddRecord(his, g, _native(10, s, patient={"id": "1234.56.782"}), False, "dlq", "BSN"),
        OddRecord(
            config,
            g,
            json.dumps(
                {**config_base, "quiet_hours": {"start": "21:00:30.5+02:00", "end": "08:00"}}
            ).encode(),
            False,
            "dlq",
            "quiet",
        ),
        OddRecord(
            config,
            g,
            json.dumps(
                {
                    **config_base,
                    "sender": {
                        "email": "a@ghost.example.org",
                        "name": "=?utf-8?q?G=0D=0AReply-To:_x@y.z?=",
                    },
                }
            ).encode(),
            False,
            "dlq",
            "encoded word",
        ),
        OddRecord(
            config,
            g,
            json.dumps(
                {**config_base, "appointment_types": {"C10": {"label": "Con\u2028sult"}}}
            ).encode(),
            False,
            "dlq",
            "U+2028 label",
        ),
    ]
