"""Shared pieces of the operations tests: tool lookup, the catalogue parser, the target."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support.ci import unavailable

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CATALOGUE = ROOT / "docs" / "metrics.md"
TARGET_SCRIPT = Path(__file__).with_name("ops_metrics_target.py")


def need_tool(name: str) -> str:
    """The path of a system tool; skip without it, or fail with CI=true."""
    path = shutil.which(name)
    if path is None:
        message = (
            f"{name} not found: run deploy/ci/install-system-deps.sh "
            "(Debian's prometheus package provides prometheus and promtool; "
            "kubectl is Debian's kubectl package)"
        )
        unavailable(message)
    return path


@dataclass(frozen=True)
class CatalogueEntry:
    name: str
    type: str
    labels: frozenset[str]
    service: str
    meaning: str
    action: str


_ROW = re.compile(r"^\|\s*`(?P<name>[a-z_:][a-z0-9_:]*)`\s*\|(?P<rest>.*)\|\s*$")


def parse_catalogue(text: str) -> dict[str, CatalogueEntry]:
    """The rows of docs/metrics.md whose first cell is a metric name in backticks."""
    entries: dict[str, CatalogueEntry] = {}
    for line in text.splitlines():
        match = _ROW.match(line.strip())
        if not match:
            continue
        cells = [c.strip() for c in match.group("rest").split("|")]
        assert len(cells) == 5, f"catalogue row needs 6 cells: {line}"
        kind, labels, service, meaning, action = cells
        name = match.group("name")
        assert name not in entries, f"{name} is catalogued twice"
        entries[name] = CatalogueEntry(
            name=name,
            type=kind,
            labels=frozenset(
                label.strip() for label in labels.split(",") if label.strip() not in ("", "—")
            ),
            service=service,
            meaning=meaning,
            action=action,
        )
    return entries


@dataclass(frozen=True)
class MetricsTarget:
    """A process serving every service's metrics, as the services register them."""

    url: str
    port: int
    metrics: dict[str, dict[str, Any]]
