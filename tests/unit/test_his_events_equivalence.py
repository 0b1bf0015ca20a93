"""Issues #16 and #19: the faster HIS-event parser gives exactly the old one's verdicts.

A differential property test against a frozen copy of the parser before the change
(tests/support/his_events_frozen.py): for wide FHIR and native documents (any unicode,
control characters, extreme dates and numbers, long strings, BSN notations), mutated
(fields dropped, replaced by values of any type, extra fields, a key named twice, colons
written as ``\\u003a``, UTF-16, a BOM, truncated, random bytes), both give the same event
(the same values, the same fields set, nested models included) or the same problems (the
same reasons, details and fields, in the same order), and parse_event the same reason
and detail. ``REMINDERS_HYPOTHESIS_EXAMPLES`` sets the number of examples.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from services.domain import his_events
from services.domain.codec import DecodeError
from tests.support import his_events_frozen as frozen
from tests.support.wide import (
    edge_settings,
    fhir_documents,
    native_documents,
    odd_text,
    sane_moment,
    wide_int,
    wide_moment,
)

RECEIVED = datetime(2026, 11, 20, 13, 0, tzinfo=UTC)

# A rule changed on purpose since the copy: a meta.versionId that is not digits is refused
# (number_out_of_range), no longer passed over for meta.lastUpdated. The copy reads the
# sequence with today's rule; everything else stays compared with the old parser.
frozen._sequence = his_events._sequence  # type: ignore[assignment]

_ANY = st.one_of(
    odd_text,
    wide_int,
    st.floats(allow_nan=False),
    st.none(),
    st.booleans(),
    st.lists(odd_text, max_size=3),
    st.dictionaries(odd_text, odd_text, max_size=3),
    st.sampled_from(
        [
            "Patient/123456782",
            "https://his.example.org/fhir/Patient/pt-1/_history/2",
            "Practitioner/",
            "//Location//L1",
            "http://fhir.nl/fhir/NamingSystem/agb-z",
            "urn:oid:2.16.840.1.113883.2.4.6.1",
            "http://fhir.nl/fhir/NamingSystem/bsn",
            "urn:e-afspraken:booked-via",
            "urn:e-afspraken:kind",
            "2026-12-01T09:30:00",
            "1999-12-31T23:59:59-01:00",
            "2100-01-01T00:30:00+01:00",
            "2000-01-01T00:00:00Z",
            "  01234567 ",
            " dr. E. Jansen\u2028",
            "=?utf-8?q?x?=",
            "Appointment",
        ]
    ),
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(doc, dict):
        for key, value in doc.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(doc, list):
        for index, value in enumerate(doc):
            found += _paths(value, (*prefix, index))
    return found


def _mutate(data: st.DataObject, doc: Any) -> Any:
    """A few changes anywhere in the document: a value replaced, a field dropped, added."""
    for _ in range(data.draw(st.integers(0, 3))):
        path = data.draw(st.sampled_from(_paths(doc)[1:] or [()]))
        if not path:
            break
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        how = data.draw(st.sampled_from(["replace", "drop", "add", "copy"]))
        if how == "replace":
            parent[path[-1]] = data.draw(_ANY)
        elif how == "drop" and isinstance(parent, dict):
            del parent[path[-1]]
        elif how == "add" and isinstance(parent, dict):
            parent[data.draw(odd_text | st.sampled_from(sorted(parent)))] = data.draw(_ANY)
        elif how == "copy" and isinstance(parent, list) and parent:
            parent.append(json.loads(json.dumps(parent[path[-1]])))
    return doc


def _encode(data: st.DataObject, doc: Any, ascii_only: bool, escape_colons: bool) -> str:
    """JSON text of ``doc``; an object may name one of its keys twice."""
    if isinstance(doc, dict):
        pairs = list(doc.items())
        if pairs and data.draw(st.integers(0, 15)) == 0:
            key, _ = data.draw(st.sampled_from(pairs))
            pairs.insert(data.draw(st.integers(0, len(pairs))), (key, data.draw(_ANY)))
        inner = ", ".join(
            f"{_encode(data, key, ascii_only, escape_colons)}: "
            f"{_encode(data, value, ascii_only, escape_colons)}"
            for key, value in pairs
        )
        return "{" + inner + "}"
    if isinstance(doc, list):
        return "[" + ", ".join(_encode(data, v, ascii_only, escape_colons) for v in doc) + "]"
    text = json.dumps(doc, ensure_ascii=ascii_only)
    if isinstance(doc, str) and escape_colons:
        text = text.replace(":", "\\u003a")
    return text


def _value(data: st.DataObject, doc: Any) -> bytes:
    doc = _mutate(data, doc)
    text = _encode(data, doc, data.draw(st.booleans()), data.draw(st.integers(0, 7)) == 0)
    how = data.draw(st.sampled_from(["utf-8"] * 12 + ["utf-16", "bom", "truncate", "bytes"]))
    if how == "utf-16":
        return text.encode("utf-16", "surrogatepass")
    raw = text.encode("utf-8", "surrogatepass")
    if how == "bom":
        return b"\xef\xbb\xbf" + raw
    if how == "truncate":
        return raw[: data.draw(st.integers(0, max(0, len(raw) - 1)))]
    if how == "bytes":
        return data.draw(st.binary(max_size=100))
    return raw


def _fields_set(model: BaseModel) -> Any:
    """The fields set of a model and of every model in it."""
    return (
        model.model_fields_set,
        {
            name: _fields_set(value)
            for name, value in model.__dict__.items()
            if isinstance(value, BaseModel)
        },
    )


def _same(value: bytes, *, fhir: bool, received_at: datetime) -> None:
    old_event, old_problems = frozen.problems(value, fhir=fhir, received_at=received_at)
    new_event, new_problems = his_events.problems(value, fhir=fhir, received_at=received_at)
    assert [(p.reason, p.detail, p.field) for p in new_problems] == [
        (p.reason, p.detail, p.field) for p in old_problems
    ]
    assert (new_event is None) == (old_event is None)
    if old_event is not None and new_event is not None:
        assert new_event == old_event
        assert type(new_event) is type(old_event)
        assert new_event.model_dump_json() == old_event.model_dump_json()
        assert _fields_set(new_event) == _fields_set(old_event)
    try:
        old: Any = frozen.parse_event(value, fhir=fhir, received_at=received_at)
    except DecodeError as exc:
        old = (exc.reason, exc.detail)
    try:
        new: Any = his_events.parse_event(value, fhir=fhir, received_at=received_at)
    except DecodeError as exc:
        new = (exc.reason, exc.detail)
    assert new == old


_RECEIVED_AT = st.one_of(st.just(RECEIVED), sane_moment, wide_moment)


@edge_settings
@given(data=st.data(), doc=fhir_documents(), received_at=_RECEIVED_AT)
def test_fhir_verdicts_are_the_old_parsers(
    data: st.DataObject, doc: Any, received_at: datetime
) -> None:
    _same(_value(data, doc), fhir=True, received_at=received_at)


@edge_settings
@given(data=st.data(), doc=native_documents())
def test_native_verdicts_are_the_old_parsers(data: st.DataObject, doc: Any) -> None:
    _same(_value(data, doc), fhir=False, received_at=RECEIVED)


@edge_settings
@given(data=st.data(), doc=native_documents())
def test_native_documents_sent_as_fhir_and_back(data: st.DataObject, doc: Any) -> None:
    value = _value(data, doc)
    _same(value, fhir=True, received_at=RECEIVED)


@edge_settings
@given(data=st.data(), doc=fhir_documents())
def test_fhir_documents_sent_as_native(data: st.DataObject, doc: Any) -> None:
    _same(_value(data, doc), fhir=False, received_at=RECEIVED)


def test_the_fast_validator_refuses_what_it_cannot_vouch_for() -> None:
    """The cases the fast validator hands to AppointmentEvent (None), at their edges."""
    base = json.loads(
        json.dumps(
            {
                "event_id": "5f0d9a52-6f43-5c1e-9a51-2c6e0a3d7b11",
                "occurred_at": "2026-11-20T14:05:40+01:00",
                "source_system": "medicom",
                "practice_id": "01234567",
                "appointment_id": "A-1",
                "sequence": 1,
                "status": "booked",
                "start": "2026-12-01T09:40:00+01:00",
                "end": "2026-12-01T09:50:00+01:00",
                "appointment_type": {"code": "C10", "display": "1 klacht"},
                "agenda": {"id": "AG-1", "display": "Spreekuur"},
                "practitioner": {"id": "P-1", "display": "dr. E. Jansen"},
                "patient": {"id": "pt-1"},
            }
        )
    )
    assert his_events._fast_event(base) is not None
    for field, value in [
        ("start", "2001-01-01T12:00:00+00:00"),  # in range, but not the fast one's
        ("end", "2098-12-31T00:00:00+00:00"),
        ("end", "2026-12-01T09:40:00+01:00"),  # end not after start
        ("practice_id", "٠١٢٣٤٥٦٧"),
        ("practice_id", "0123456"),
        ("occurred_at", "2098-12-30T00:00:00+00:00"),
        ("patient", {"id": "123456782"}),  # the nested models' own checks still run
        ("agenda", {"id": "AG-1", "display": "a\u200bb"}),
    ]:
        assert his_events._fast_event({**base, field: value}) is None, (field, value)


@edge_settings
@given(doc=fhir_documents() | native_documents(), ascii_only=st.booleans())
def test_unmutated_documents_get_the_old_verdicts(doc: Any, ascii_only: bool) -> None:
    """Most of these are accepted: the events' values and fields set compared."""
    value = json.dumps(doc, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    fhir = "resourceType" in doc
    _same(value, fhir=fhir, received_at=RECEIVED)
    _same(value, fhir=not fhir, received_at=RECEIVED)


@edge_settings
@given(doc=native_documents(), role=_ANY, display=_ANY, ascii_only=st.booleans())
def test_native_parts_with_every_field_get_the_old_verdicts(
    doc: Any, role: Any, display: Any, ascii_only: bool
) -> None:
    """Parts that name exactly their model's fields (those the parser validates once per
    distinct values), with values of any type."""
    doc["practitioner"]["role"] = role
    doc["agenda"]["display"] = display
    value = json.dumps(doc, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    _same(value, fhir=False, received_at=RECEIVED)
    _same(value, fhir=False, received_at=RECEIVED)  # the second time from the cache


def test_parts_of_big_records_are_not_cached() -> None:
    """The parts' cache holds its keys: a record above 4 KB (a long display, padded with
    spaces that the strip removes) is validated without it, with the same verdict."""
    example = Path(__file__).parents[2] / "deploy/examples/his/appointment-fhir.json"
    doc = json.loads(example.read_text())
    doc["participant"][1]["actor"]["display"] = "dr. E. Jansen" + " " * 5000
    value = json.dumps(doc).encode()
    before = his_events._part.cache_info().currsize
    _same(value, fhir=True, received_at=RECEIVED)
    assert his_events.problems(value, fhir=True, received_at=RECEIVED)[0] is not None
    assert his_events._part.cache_info().currsize == before
