"""Meeting classification (DESIGN.md, Classification of meetings): every rule, and the
keyword matching properties."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from typing import Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.models import MeetingRules
from services.domain.classify import (
    DEFAULT_KEYWORDS,
    classify,
    fold,
    is_acronym,
    keyword_match,
)


@dataclass(frozen=True)
class _Coded:
    code: str = "C10"
    display: str = "1 klacht, 10 minuten"


@dataclass(frozen=True)
class _Agenda:
    id: str = "AG-1"
    display: str = "Spreekuur dr. Jansen"


@dataclass(frozen=True)
class _Patient:
    required: Literal["required", "optional", "information-only"] = "required"


@dataclass(frozen=True)
class _Fields:
    kind: Literal["consult", "meeting"] | None = None
    patient: _Patient = field(default_factory=_Patient)
    agenda: _Agenda = field(default_factory=_Agenda)
    appointment_type: _Coded = field(default_factory=_Coded)


def test_an_ordinary_consult_is_not_a_meeting() -> None:
    info = classify(_Fields(), None)
    assert not info.is_meeting
    assert info.rule is None and info.matched is None


def test_the_connector_flag_makes_a_meeting() -> None:
    info = classify(_Fields(kind="meeting"), None)
    assert (info.is_meeting, info.rule) == (True, "kind")


def test_an_information_only_patient_makes_a_meeting() -> None:
    info = classify(_Fields(patient=_Patient("information-only")), None)
    assert (info.is_meeting, info.rule, info.matched) == (
        True,
        "information_only",
        "information-only",
    )


def test_the_practices_agenda_ids_make_a_meeting() -> None:
    rules = MeetingRules(agenda_ids=["AG-HAGRO-1"])
    info = classify(_Fields(agenda=_Agenda(id="AG-HAGRO-1", display="Dinsdagochtend")), rules)
    assert (info.rule, info.matched) == ("agenda_id", "AG-HAGRO-1")
    # ids compare without case
    again = classify(_Fields(agenda=_Agenda(id="ag-hagro-1", display="Dinsdagochtend")), rules)
    assert again.rule == "agenda_id"


def test_the_practices_type_codes_make_a_meeting() -> None:
    rules = MeetingRules(appointment_type_codes=["X99"])
    info = classify(_Fields(appointment_type=_Coded(code="X99", display="Dinsdag")), rules)
    assert (info.rule, info.matched) == ("appointment_type_code", "X99")


def test_rules_are_checked_in_order_and_the_first_match_is_kept() -> None:
    rules = MeetingRules(agenda_ids=["AG-1"])
    fields = _Fields(kind="meeting", patient=_Patient("information-only"))
    assert classify(fields, rules).rule == "kind"
    assert classify(_Fields(patient=_Patient("information-only")), rules).rule == (
        "information_only"
    )
    overleg = _Fields(appointment_type=_Coded(display="Teamoverleg"))
    assert classify(overleg, rules).rule == "agenda_id"
    assert classify(overleg, None).rule == "keyword"


@pytest.mark.parametrize(
    ("text", "keyword"),
    [
        ("Teamoverleg", "overleg"),
        ("patiëntenbespreking", "bespreking"),
        ("Patiëntbespreking ouderenzorg", "bespreking"),
        ("MDO-overleg", "overleg"),
        ("MDO ouderenzorg", "MDO"),
        ("Fto", "FTO"),
        ("FTO farmacotherapie", "FTO"),
        ("Intervisie", "intervisie"),
        ("PATZ", "PaTz"),
        ("PáTz (palliatief)", "PaTz"),
        ("hagro vergadering", "HAGRO"),
        ("MDO2", "MDO"),
        ("2e FTO van het jaar", "FTO"),
        ("OVERLEG", "overleg"),
    ],
)
def test_default_keywords_match(text: str, keyword: str) -> None:
    assert keyword_match(text) == keyword
    info = classify(_Fields(appointment_type=_Coded(code="Q1", display=text)), None)
    assert (info.rule, info.matched) == ("keyword", keyword)


@pytest.mark.parametrize(
    "text",
    [
        "softonic",  # "fto" inside a word is not the acronym
        "Spreekuur",
        "1 klacht, 10 minuten",
        "Oren uitspuiten",
        "Mdonald",  # an acronym matches whole words only
        "Hagrowth",
        "Opatzi",
        "Over leg",  # a long word does not span a word boundary
        "",
    ],
)
def test_non_meetings_do_not_match(text: str) -> None:
    assert keyword_match(text) is None


def test_keywords_are_looked_for_in_type_code_type_display_agenda_display_and_agenda_id() -> None:
    assert classify(_Fields(appointment_type=_Coded(code="MDO")), None).matched == "MDO"
    assert classify(_Fields(agenda=_Agenda(display="Agenda HAGRO")), None).matched == "HAGRO"
    assert classify(_Fields(agenda=_Agenda(id="FTO-2026", display="")), None).matched == "FTO"
    practitioner_only = _Fields(agenda=_Agenda(display="dr. Fto Jansen"))
    assert classify(practitioner_only, None).is_meeting  # errs towards "meeting"


def test_a_practice_adds_keywords_to_the_defaults() -> None:
    rules = MeetingRules(keywords=["vergadering", "KNO"])
    vergadering = _Fields(appointment_type=_Coded(display="Praktijkvergadering"))
    assert classify(vergadering, rules).matched == "vergadering"
    assert not classify(vergadering, None).is_meeting
    kno = _Fields(agenda=_Agenda(display="KNO-overleg"))
    assert classify(kno, rules).is_meeting
    assert keyword_match("knoop", ["KNO"]) is None  # short: whole words only
    assert keyword_match("Teamoverleg", ["vergadering"]) == "overleg"  # defaults stay


def test_a_phrase_keyword_matches_across_any_separators() -> None:
    assert keyword_match("Team -- lunch", ["team lunch"]) == "team lunch"
    assert keyword_match("Lunch team", ["team lunch"]) is None


def test_acronyms_and_words() -> None:
    assert all(is_acronym(k) for k in ("MDO", "PaTz", "FTO", "HAGRO", "KNO", "ab"))
    assert not any(is_acronym(k) for k in ("overleg", "bespreking", "Intervisie"))


def test_fold_strips_accents_and_case() -> None:
    assert fold("Patiëntbespreking") == "patientbespreking"
    assert fold("ÉÉN") == "een"
    assert fold("İstanbul") == "istanbul"


# --------------------------------------------------------------------------- properties

_LETTERS = "abcdefghijklmnopqrstuvwxyzëéèïöüáàç"
_ACCENTS = ["\u0301", "\u0300", "\u0308", "\u0302", "\u0327"]
_LONG = [k for k in DEFAULT_KEYWORDS if not is_acronym(k)]
_SHORT = [k for k in DEFAULT_KEYWORDS if is_acronym(k)]

_words = st.text(alphabet=_LETTERS, min_size=0, max_size=12)
_separators = st.text(alphabet=" -_/.,()0123456789", min_size=1, max_size=3)


@st.composite
def _meeting_texts(draw: st.DrawFn) -> str:
    """A text that holds a default keyword: a long word inside a compound, or an acronym
    as a whole word between separators."""
    if draw(st.booleans()):
        word = draw(_words) + draw(st.sampled_from(_LONG)) + draw(_words)
    else:
        word = draw(st.sampled_from(_SHORT))
    before = draw(_words)
    after = draw(_words)
    return f"{before}{draw(_separators)}{word}{draw(_separators)}{after}"


@st.composite
def _disguised(draw: st.DrawFn, text: str) -> str:
    """The same text with random case changes and accents added to letters."""
    out = []
    for char in text:
        if char.isalpha():
            if draw(st.booleans()):
                char = char.upper() if draw(st.booleans()) else char.lower()
            if draw(st.integers(0, 3)) == 0:
                char += draw(st.sampled_from(_ACCENTS))
        out.append(char)
    return unicodedata.normalize(draw(st.sampled_from(["NFC", "NFD"])), "".join(out))


@given(st.data())
def test_case_and_accents_never_turn_a_meeting_into_a_non_meeting(data: st.DataObject) -> None:
    text = data.draw(st.text(alphabet=_LETTERS + " -", max_size=30) | _meeting_texts())
    if keyword_match(text) is None:
        return
    disguised = data.draw(_disguised(text))
    assert keyword_match(disguised) is not None, (text, disguised)
    fields = _Fields(appointment_type=_Coded(code="Q1", display=disguised))
    assert classify(fields, None).is_meeting


@given(_meeting_texts())
def test_a_keyword_in_any_compound_or_as_a_word_matches(text: str) -> None:
    assert keyword_match(text) is not None, text


@given(
    prefix=_words,
    suffix=_words,
    keyword=st.sampled_from(_LONG),
)
def test_a_long_keyword_embedded_in_any_compound_matches(
    prefix: str, suffix: str, keyword: str
) -> None:
    assert keyword_match(prefix + keyword + suffix) is not None
    assert keyword_match((prefix + keyword + suffix).upper()) is not None


@given(
    text=st.text(max_size=40),
    rules_keywords=st.lists(st.text(alphabet=_LETTERS + "ABCDEF -", min_size=2, max_size=12)),
)
def test_a_practices_keywords_only_add_meetings(text: str, rules_keywords: list[str]) -> None:
    rules = MeetingRules(keywords=[k for k in rules_keywords if len(k.strip()) >= 2])
    fields = _Fields(appointment_type=_Coded(code="Q1", display=text))
    if classify(fields, None).is_meeting:
        assert classify(fields, rules).is_meeting
