"""Scan log lines for personal data: e-mail addresses, BSN-like numbers, patient names.

Rule 5 of DESIGN.md: never a patient's e-mail, name or BSN in logs. An end-to-end run
collects every log line of every service and passes them here with the synthetic patients'
names and addresses; any finding fails the test.

A line is searched as written and also decoded (JSON ``\\uXXXX`` escapes, URL escapes),
names ignoring case and accents, so ``Zo\\u00eb`` and ``jan%40example.org`` are found too.
"""

from __future__ import annotations

import json
import logging
import re
import unicodedata
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from urllib.parse import unquote

from services.common.logs import JsonFormatter

__all__ = ["EMAIL", "bsn_like", "captured_json_logs", "eleven_test", "scan_logs"]

# The local part as addresses are written in practice (RFC 5322 allows more, such as "/" and
# "=", but then every URL query before an address would be part of it).
EMAIL = re.compile(
    r"[A-Za-z0-9._+-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}"
)

# Nine digits standing alone (a BSN, 11-proef valid or not), or in the written form
# 1234.56.789. Not part of a longer number, a word, an id or a decimal fraction: epoch
# timestamps (10+ digits), nanoseconds after a dot, ports and small offsets do not match.
_BSN = re.compile(r"(?<![\w.])(?:\d{9}|\d{4}\.\d{2}\.\d{3})(?![\w]|\.\d)")


def eleven_test(digits: str) -> bool:
    """The Dutch 11-proef for a 9-digit BSN (weights 9..2 and -1)."""
    if len(digits) != 9 or not digits.isdigit():
        return False
    weights = (9, 8, 7, 6, 5, 4, 3, 2, -1)
    total = sum(int(d) * w for d, w in zip(digits, weights, strict=True))
    return total % 11 == 0 and total != 0


def bsn_like(text: str) -> list[str]:
    """Every BSN-like number in ``text`` (valid under the 11-proef or not)."""
    return [m.group(0) for m in _BSN.finditer(text)]


def _fold(text: str) -> str:
    """Lower case without accents, whitespace collapsed: how names are compared."""
    decomposed = unicodedata.normalize("NFKD", text)
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(bare.casefold().split())


_JSON_ESCAPE = re.compile(r"\\u[0-9a-fA-F]{4}")


def _decodings(line: str) -> list[str]:
    forms = [line]
    if _JSON_ESCAPE.search(line):
        unescaped = _JSON_ESCAPE.sub(lambda m: json.loads(f'"{m.group(0)}"'), line)
        forms.append(unescaped)
    for form in list(forms):
        if "%" in form:
            decoded = unquote(form)
            if decoded != form:
                forms.append(decoded)
    return forms


def scan_logs(
    lines: Iterable[str],
    forbidden_names: Iterable[str],
    forbidden_emails: Iterable[str],
    *,
    allowed_emails: Iterable[str] = (),
    allowed_domains: Iterable[str] = (),
) -> list[str]:
    """Findings, one string per hit: ``line N: <kind> <what>``. Empty means clean.

    Every e-mail address is a finding (patients' addresses named in ``forbidden_emails``
    are reported as such) except those in ``allowed_emails`` (e.g. a practice's sender
    address or the VAPID contact) and those at ``allowed_domains`` (e.g. the Message-ID
    domain: a Message-ID looks like an address). A patient's own address is reported
    whatever the domain. Names match as whole words, ignoring case and accents.
    """
    allowed = {e.casefold() for e in allowed_emails}
    domains = {d.casefold().lstrip("@") for d in allowed_domains}
    emails = {e.casefold() for e in forbidden_emails if e}
    names = sorted({_fold(n) for n in forbidden_names if n.strip()}, key=len, reverse=True)
    name_patterns = [(n, re.compile(rf"(?<!\w){re.escape(n)}(?!\w)")) for n in names]
    findings: list[str] = []
    for number, raw in enumerate(lines, start=1):
        seen: set[str] = set()

        def report(kind: str, what: str, number: int = number, seen: set[str] = seen) -> None:
            entry = f"line {number}: {kind} {what!r}"
            if entry not in seen:
                seen.add(entry)
                findings.append(entry)

        for form in _decodings(raw):
            for match in EMAIL.finditer(form):
                address = match.group(0).casefold()
                if address not in emails and (
                    address in allowed or address.rpartition("@")[2] in domains
                ):
                    continue
                kind = "patient e-mail address" if address in emails else "e-mail address"
                report(kind, match.group(0))
            lowered = form.casefold()
            for address in emails:
                if address in lowered:
                    report("patient e-mail address", address)
            for digits in bsn_like(form):
                valid = eleven_test(digits.replace(".", ""))
                report("BSN (11-proef valid)" if valid else "BSN-like number", digits)
            folded = _fold(form)
            for name, pattern in name_patterns:
                if pattern.search(folded):
                    report("patient name", name)
    return findings


class _Collect(logging.Handler):
    def __init__(self, lines: list[str], level: int) -> None:
        super().__init__(level)
        self.lines = lines
        self.setFormatter(JsonFormatter())

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@contextmanager
def captured_json_logs(level: int = logging.DEBUG) -> Iterator[list[str]]:
    """Every log record of this process while inside, as the services' JSON lines.

    For services run in-process; for services run as processes, scan their stderr.
    DEBUG by default: a leak at any level is a leak.
    """
    lines: list[str] = []
    handler = _Collect(lines, level)
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(min(previous, level) if previous else level)
    try:
        yield lines
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
