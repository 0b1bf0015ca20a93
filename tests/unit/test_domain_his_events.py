"""services.domain.his_events: the one HIS-event parser, and every problem at once."""

from __future__ import annotations

import ast
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest.mock import patch

from hypothesis import given, settings
from hypothesis import strategies as st

from services.domain import his_events
from services.domain.codec import DuplicateKey, no_duplicate_keys
from services.domain.his_events import (
    REASONS,
    Problem,
    duplicate_key_problem,
    parse_event,
    problems,
)

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "deploy" / "examples" / "his"
RECEIVED = datetime(2026, 11, 20, 13, 0, tzinfo=UTC)


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EXAMPLES / name).read_text())
    return data


def _raw(data: Any) -> bytes:
    return json.dumps(data).encode()


def test_a_valid_event_has_no_problems_in_either_form() -> None:
    for name, fhir in (("appointment-native.json", False), ("appointment-fhir.json", True)):
        value = _raw(_load(name))
        event, found = problems(value, fhir=fhir, received_at=RECEIVED)
        assert found == []
        assert event == parse_event(value, fhir=fhir, received_at=RECEIVED)


def test_every_problem_of_a_native_event_is_listed() -> None:
    data = _load("appointment-native.json")
    data["status"] = "gone"
    data["start"] = "2026-12-01T09:30:00"
    del data["appointment_id"]
    event, found = problems(_raw(data), fhir=False, received_at=RECEIVED)
    assert event is None
    assert {(p.reason, p.field) for p in found} >= {
        ("unknown_status", "status"),
        ("time_without_offset", "start"),
        ("missing_field", "appointment_id"),
    }
    assert all(isinstance(p, Problem) and p.reason in REASONS for p in found)
    assert "2026-12-01" not in " ".join(p.detail for p in found)  # values never echoed


def test_every_problem_of_a_fhir_event_is_listed_privacy_first() -> None:
    data = _load("appointment-fhir.json")
    data["status"] = "gone"
    data.pop("id", None)
    data.pop("identifier", None)
    data["participant"] = [
        p for p in data["participant"] if "Location" not in str(p.get("actor", {}))
    ] + [{"actor": {"identifier": {"system": "http://fhir.nl/fhir/NamingSystem/bsn"}}}]
    event, found = problems(_raw(data), fhir=True, received_at=RECEIVED)
    assert event is None
    reasons = [p.reason for p in found]
    assert reasons[0] == "bsn_like_patient_id"
    assert {"missing_field", "unknown_status"} <= set(reasons)
    fields = [p.field for p in found]
    assert "practice_id" in fields and "appointment_id" in fields
    assert len(fields) == len(set(fields))  # each field once


def test_the_domain_imports_no_framework_no_kafka_and_no_service() -> None:
    allowed = ("schemas", "services.domain.codec", "services.domain.partition", "services.domain")
    for path in (ROOT / "services" / "domain").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                module = node.module
            elif isinstance(node, ast.Import):
                module = node.names[0].name
            else:
                continue
            top = module.split(".")[0]
            assert top not in ("aiokafka", "faststream", "fastapi", "starlette", "sqlalchemy")
            if top == "services":
                assert module.startswith(allowed), f"{path.name} imports {module}"


# A JSON text with objects whose keys may repeat, colons and escapes in the strings, and
# whitespace anywhere: what the fast duplicate-key check must never get wrong.
_KEYS = st.sampled_from(["a", "b", "id", "a:b", 'q"', "\u00eb", ":"])
_TEXTS = st.text(alphabet=st.sampled_from(["a", ":", '"', "\\", " ", "\u00eb", "\n"]), max_size=6)
_SPACE = st.sampled_from(["", " ", "\n\t "])


def _escape(text: str, style: int) -> str:
    # json.dumps' own escaping, or every character as a \u escape, or ASCII only
    if style == 1:
        return '"' + "".join(f"\\u{ord(c):04x}" for c in text) + '"'
    return json.dumps(text, ensure_ascii=style == 2)


@st.composite
def _json_texts(draw: st.DrawFn, depth: int = 0) -> str:
    space = draw(_SPACE)
    if depth >= 3 or draw(st.integers(0, 3)) == 0:
        return (
            draw(st.sampled_from(["1", "null", "true", "-2.5e3"]))
            if draw(st.booleans())
            else _escape(draw(_TEXTS), draw(st.integers(0, 2)))
        )
    if draw(st.booleans()):
        items = draw(st.lists(_json_texts(depth + 1), max_size=3))
        return "[" + space + ("," + space).join(items) + "]"
    pairs = draw(st.lists(st.tuples(_KEYS, _json_texts(depth + 1)), max_size=4))
    style = draw(st.integers(0, 2))
    return (
        "{"
        + ",".join(f"{space}{_escape(k, style)}{space}:{space}{v}" for k, v in pairs)
        + space
        + "}"
    )


@settings(max_examples=400)
@given(_json_texts())
def test_the_duplicate_key_check_agrees_with_the_exact_decoder(text: str) -> None:
    try:
        json.loads(text, object_pairs_hook=no_duplicate_keys)
        exact = False
    except DuplicateKey:
        exact = True
    found = duplicate_key_problem(text.encode())
    assert (found is not None) == exact


# Where a mutation lands in the example resource, and what it puts there.
_PATHS = [
    ("id",),
    ("status",),
    ("start",),
    ("end",),
    ("meta",),
    ("meta", "versionId"),
    ("meta", "lastUpdated"),
    ("meta", "source"),
    ("meta", "tag"),
    ("meta", "tag", 0, "code"),
    ("appointmentType",),
    ("appointmentType", "coding", 0, "display"),
    ("participant",),
    ("participant", 0, "actor"),
    ("participant", 0, "actor", "reference"),
    ("participant", 0, "required"),
    ("participant", 1, "type"),
    ("participant", 3, "actor", "identifier"),
    ("participant", 3, "actor", "identifier", "value"),
    ("identifier",),
    ("resourceType",),
]
_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False),
    st.sampled_from(
        [
            "2026-12-01T09:40:00+01:00",
            "2026-12-01 09:40:00Z",
            "2026-12-01t09:40:00z",
            "2026-12-01T09:40:00",
            "2026-12-01T09:40:00+01",
            "1700000000",
            "Patient/123456782",
            "01054321",
            "booked",
            "gone",
            "",
            " x ",
            "\u2028",
            "=?utf-8?q?x?=",
        ]
    ),
    st.text(max_size=8),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.sampled_from(["code", "value", "x"]), st.text(max_size=3), max_size=2),
)


def _set(document: Any, path: tuple[str | int, ...], value: Any, delete: bool) -> None:
    for step in path[:-1]:
        try:
            document = document[step]
        except (KeyError, IndexError, TypeError):
            return
    try:
        if delete:
            del document[path[-1]]
        else:
            document[path[-1]] = value
    except (KeyError, IndexError, TypeError):
        return


@settings(max_examples=300)
@given(st.lists(st.tuples(st.sampled_from(_PATHS), _VALUES, st.booleans()), max_size=3))
def test_the_fast_fhir_decoder_gives_the_models_verdict(
    mutations: list[tuple[tuple[str | int, ...], Any, bool]],
) -> None:
    document = _load("appointment-fhir.json")
    for path, value, delete in mutations:
        _set(document, path, value, delete)
    value = _raw(document)
    fast = problems(value, fhir=True, received_at=RECEIVED)
    with patch.object(his_events, "_fast_resource", lambda _: None):
        model = problems(value, fhir=True, received_at=RECEIVED)
    assert fast == model


def test_long_references_are_read_the_same_and_not_cached() -> None:
    """The reference cache holds its keys: a long reference (a body of long ones once kept
    some 2 MB per request) is read without it, with the same verdict."""
    from services.domain import his_events

    short = "https://his.example.org/fhir/Practitioner/P-017/_history/2"
    long_ok = "https://his.example.org/" + "x/" * 2000 + "Practitioner/P-017"
    long_bad = "https://his.example.org/" + "x" * 4000
    assert (
        his_events._reference(long_ok)
        == his_events._reference(short)
        == (
            "Practitioner",
            "P-017",
        )
    )
    assert his_events._reference(long_bad) == (None, None)
    before = his_events._cached_reference.cache_info().currsize
    for n in range(20):
        his_events._reference(long_ok + str(n))
    assert his_events._cached_reference.cache_info().currsize == before
