"""Is this agenda entry a meeting about the patient? (DESIGN.md, Classification of meetings)

Pure: no Kafka, no clock. booking_events stores the answer on the appointment (the first
line of defence); the notifier calls :func:`classify` again at send time with the
practice's current rules (the second line).

Any one rule makes an entry a meeting, checked in this order so that the record names
the most specific reason:

1. ``kind``: the connector says ``kind: meeting``;
2. ``information_only``: the patient participant is ``information-only`` (discussed, not
   attending);
3. ``agenda_id`` / ``appointment_type_code``: listed in the practice's ``meeting_rules``;
4. ``keyword``: a keyword (:data:`DEFAULT_KEYWORDS` plus the practice's own) in the type's
   code or display, or the agenda's display or id.

Keyword matching folds case and strips accents (NFKD). Words of five letters or more
("overleg", "bespreking") match anywhere, also inside Dutch compounds ("Teamoverleg",
"patiëntenbespreking"). Acronyms (at most four letters, or written in capitals: "MDO",
"PaTz", "HAGRO") match as whole words only, so "Fto-overleg" and "MDO2" match but
"softonic" does not. Word boundaries are anything that is not a letter or digit, and
also a change between letters and digits. Boundaries never depend on case (no camel-case
splitting), so changing the case of a text can never change its classification.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal, Protocol

from schemas.models import MeetingInfo, MeetingRules

__all__ = [
    "DEFAULT_KEYWORDS",
    "MeetingFields",
    "classify",
    "fold",
    "is_acronym",
    "keyword_match",
]

DEFAULT_KEYWORDS: tuple[str, ...] = (
    "overleg",
    "bespreking",
    "intervisie",
    "MDO",
    "PaTz",
    "FTO",
    "HAGRO",
)

# A keyword this short is matched as a whole word: as a substring it would hit too often.
_ACRONYM_MAX_LETTERS = 4


class _Coded(Protocol):
    @property
    def code(self) -> str: ...

    @property
    def display(self) -> str: ...


class _Agenda(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def display(self) -> str: ...


class _Patient(Protocol):
    @property
    def required(self) -> Literal["required", "optional", "information-only"]: ...


class MeetingFields(Protocol):
    """The fields the rules read; AppointmentEvent and Appointment both have them."""

    @property
    def kind(self) -> Literal["consult", "meeting"] | None: ...

    @property
    def patient(self) -> _Patient: ...

    @property
    def agenda(self) -> _Agenda: ...

    @property
    def appointment_type(self) -> _Coded: ...


_NOT_A_MEETING = MeetingInfo(is_meeting=False)


def classify(fields: MeetingFields, rules: MeetingRules | None) -> MeetingInfo:
    """The first rule that makes this entry a meeting, or ``is_meeting=False``."""
    if fields.kind == "meeting":
        return _meeting("kind", "meeting")
    if fields.patient.required == "information-only":
        return _meeting("information_only", "information-only")
    agenda = fields.agenda
    kind = fields.appointment_type
    extra: tuple[str, ...] = ()
    if rules is not None:
        agenda_ids, type_codes = _listed(
            tuple(rules.agenda_ids), tuple(rules.appointment_type_codes)
        )
        if fold(agenda.id).strip() in agenda_ids:
            return _meeting("agenda_id", agenda.id)
        if fold(kind.code).strip() in type_codes:
            return _meeting("appointment_type_code", kind.code)
        extra = tuple(rules.keywords)
    found = _search_texts(_matcher(extra), (kind.code, kind.display, agenda.display, agenda.id))
    return _NOT_A_MEETING if found is None else _meeting("keyword", found)


def keyword_match(text: str, keywords: Iterable[str] = ()) -> str | None:
    """The keyword (defaults plus ``keywords``) found in ``text``, if any."""
    return _matcher(tuple(keywords)).search(text)


@lru_cache(maxsize=128)
def _listed(
    agenda_ids: tuple[str, ...], type_codes: tuple[str, ...]
) -> tuple[frozenset[str], frozenset[str]]:
    # Ids are compared without case or accents: "ag-mdo" in the config names "AG-MDO".
    return (
        frozenset(fold(i).strip() for i in agenda_ids),
        frozenset(fold(c).strip() for c in type_codes),
    )


@lru_cache(maxsize=1024)
def _meeting(rule: str, matched: str) -> MeetingInfo:
    return MeetingInfo.model_validate({"is_meeting": True, "rule": rule, "matched": matched})


# --------------------------------------------------------------------------- matching


def fold(text: str) -> str:
    """Lower case without accents: ``"Patiëntbespreking"`` -> ``"patientbespreking"``."""
    if text.isascii():
        return text.casefold()
    stripped = "".join(
        c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c)
    )
    # casefold may produce new combining marks (e.g. "İ"), so strip once more after it.
    folded = unicodedata.normalize("NFKD", stripped.casefold())
    return "".join(c for c in folded if not unicodedata.combining(c))


def _strip_accents(text: str) -> str:
    if text.isascii():
        return text
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def is_acronym(keyword: str) -> bool:
    """Acronyms match as whole words; longer words also inside compounds."""
    letters = [c for c in _strip_accents(keyword) if c.isalnum()]
    if len(letters) <= _ACRONYM_MAX_LETTERS:
        return True
    return all(c.isupper() or c.isdigit() for c in letters)


_SEPARATORS = re.compile(r"[^0-9a-z]+")
_RUNS = re.compile(r"[a-z]+|[0-9]+")


def _words(folded: str) -> set[str]:
    """Whole words of folded text: split at separators, and also between letters and
    digits ("mdo2" holds "mdo"), so that a number glued to an acronym does not hide it."""
    words = set(_SEPARATORS.split(folded))
    words.update(_RUNS.findall(folded))
    words.discard("")
    return words


# Compared by identity (matchers are cached per keyword list): hashing is on the hot path.
@dataclass(frozen=True, eq=False)
class _Matcher:
    # folded keyword (words joined by one space) -> as written
    inner: tuple[tuple[str, str], ...]  # match anywhere inside a word
    whole: tuple[tuple[str, str], ...]  # match whole words only

    def search(self, text: str) -> str | None:
        if not text:
            return None
        return _search(self, text)


def _spaced(folded: str) -> str:
    return " ".join(w for w in _SEPARATORS.split(folded) if w)


@lru_cache(maxsize=128)
def _matcher(extra: tuple[str, ...]) -> _Matcher:
    inner: list[tuple[str, str]] = []
    whole: list[tuple[str, str]] = []
    seen: set[str] = set()
    for keyword in (*DEFAULT_KEYWORDS, *extra):
        needle = _spaced(fold(keyword))
        if not needle or needle in seen:
            continue
        seen.add(needle)
        (whole if is_acronym(keyword) else inner).append((needle, keyword))
    return _Matcher(inner=tuple(inner), whole=tuple(whole))


@lru_cache(maxsize=8192)
def _search_texts(matcher: _Matcher, texts: tuple[str, ...]) -> str | None:
    for text in texts:
        if text:
            found = _search(matcher, text)
            if found is not None:
                return found
    return None


def _search(matcher: _Matcher, text: str) -> str | None:
    folded = fold(text)
    spaced = _spaced(folded)
    for needle, keyword in matcher.inner:
        if needle in spaced:
            return keyword
    if matcher.whole:
        words = _words(folded)
        padded = f" {spaced} "
        for needle, keyword in matcher.whole:
            if needle in words or (" " in needle and f" {needle} " in padded):
                return keyword
    return None
