"""deploy/prometheus: promtool checks, the alert unit tests, and the rules' references."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.ops.ops_support import DEPLOY, ROOT, CatalogueEntry

PROMETHEUS = DEPLOY / "prometheus"
OPERATIONS = ROOT / "docs" / "operations.md"

# What the issue asks the alerts to catch, and the alert that does.
REQUIRED_ALERTS = {
    "consumer lag growing": "RemindersConsumerLagGrowing",
    "reminders firing late": "RemindersFiringLate",
    "pending timers falling suddenly": "RemindersPendingTimersDropped",
    "notifier failures rising": "RemindersNotifierFailuresRising",
    "records arriving in a DLQ": "RemindersDeadLetters",
    "a service not ready": "RemindersServiceNotReady",
}
_PROMQL_NAME = re.compile(r"\b((?:reminders|faststream|process|python)_[a-z0-9_]+|up)\b")
_HISTOGRAM_SERIES = re.compile(r"_(bucket|sum|count)$")


def _promtool(promtool: str, *args: str, cwd: Path = PROMETHEUS) -> str:
    result = subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return output


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text(encoding="utf-8"))
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_promtool_check_config(promtool: str) -> None:
    output = _promtool(promtool, "check", "config", "prometheus.yml")
    assert "SUCCESS" in output


def test_promtool_check_rules(promtool: str) -> None:
    output = _promtool(promtool, "check", "rules", "alerts.yml")
    assert f"SUCCESS: {len(_rules())} rules found" in output


def test_promtool_alert_unit_tests(promtool: str) -> None:
    output = _promtool(promtool, "test", "rules", "alerts_test.yml")
    assert "SUCCESS" in output


def test_every_alert_is_unit_tested() -> None:
    tests = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text(encoding="utf-8"))
    firing = {
        case["alertname"]
        for test in tests["tests"]
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    alerts = {rule["alert"] for rule in _rules() if "alert" in rule}
    assert alerts - firing == set(), "alerts without a test in which they fire"


def test_the_required_alerts_exist() -> None:
    alerts = {rule["alert"] for rule in _rules() if "alert" in rule}
    missing = {what: name for what, name in REQUIRED_ALERTS.items() if name not in alerts}
    assert not missing


def test_alerts_have_severity_summary_and_a_runbook_section() -> None:
    text = OPERATIONS.read_text(encoding="utf-8")
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", heading.lower()).replace(" ", "-")
        for heading in re.findall(r"^#+\s+(.+?)\s*$", text, flags=re.MULTILINE)
    }
    for rule in _rules():
        if "alert" not in rule:
            continue
        name = rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), name
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], name
        path, _, anchor = annotations["runbook"].partition("#")
        assert path == "docs/operations.md", name
        assert anchor in anchors, f"{name}: no section #{anchor} in docs/operations.md"


def test_rules_refer_only_to_catalogued_metrics(catalogue: dict[str, CatalogueEntry]) -> None:
    recorded = {rule["record"] for rule in _rules() if "record" in rule}
    unknown = set()
    for rule in _rules():
        for name in _PROMQL_NAME.findall(rule["expr"]):
            base = _HISTOGRAM_SERIES.sub("", name)
            if name == "up" or name in catalogue or name in recorded:
                continue
            if base in catalogue and catalogue[base].type == "histogram":
                continue
            unknown.add(name)
    assert not unknown, f"alert rules use metrics that no service exposes: {sorted(unknown)}"


def test_rule_labels_exist_on_the_metrics(catalogue: dict[str, CatalogueEntry]) -> None:
    # `by (x)` and `{x=...}` must name labels the metric has (or Prometheus' own).
    own = {"job", "instance", "le"}
    for rule in _rules():
        expr = rule["expr"]
        for name, selector in re.findall(r"\b(reminders_[a-z0-9_]+)\{([^}]*)\}", expr):
            base = _HISTOGRAM_SERIES.sub("", name)
            entry = catalogue.get(name) or catalogue.get(base)
            assert entry is not None, name
            for label in re.findall(r"([a-z_]+)\s*=~?", selector):
                assert label in entry.labels | own, f"{name} has no label {label}"
