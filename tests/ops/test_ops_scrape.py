"""A real Prometheus server (Debian's package) scrapes the services' /metrics and evaluates
the project's alert rules on what it scraped."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.ops.ops_support import DEPLOY, MetricsTarget

TIMEOUT = 40.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _get(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.loads(response.read().decode())
    except urllib.error.HTTPError as exc:
        # e.g. 503 while Prometheus starts; close it, or its socket leaks a ResourceWarning
        body = exc.read().decode(errors="replace")[:500]
        exc.close()
        raise ConnectionError(f"HTTP {exc.code} from {url}: {body}") from None


def _wait_for(what: str, check: Callable[[], Any], log: Path) -> Any:
    deadline = time.monotonic() + TIMEOUT
    last: object = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            result, last = None, exc
        if result:
            return result
        time.sleep(0.25)
    tail = log.read_text(errors="replace")[-3000:]
    raise AssertionError(f"Prometheus: {what} not seen in {TIMEOUT:.0f} s ({last})\n{tail}")


@pytest.fixture
def prometheus(
    prometheus_bin: str, metrics_target: MetricsTarget, tmp_path: Path
) -> Iterator[tuple[str, Path]]:
    shutil.copy(DEPLOY / "prometheus" / "alerts.yml", tmp_path / "alerts.yml")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": ["alerts.yml"],
        "scrape_configs": [
            {
                "job_name": "reminders-notifier",
                "static_configs": [
                    {
                        "targets": [f"127.0.0.1:{metrics_target.port}"],
                        "labels": {"service": "notifier"},
                    }
                ],
            }
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = _free_port()
    log = tmp_path / "prometheus.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [
                prometheus_bin,
                f"--config.file={tmp_path / 'prometheus.yml'}",
                f"--storage.tsdb.path={tmp_path / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        yield f"http://127.0.0.1:{port}", log
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_prometheus_scrapes_the_metrics_and_evaluates_the_rules(
    prometheus: tuple[str, Path],
) -> None:
    url, log = prometheus

    def target_up() -> dict[str, Any] | None:
        targets = _get(f"{url}/api/v1/targets")["data"]["activeTargets"]
        return next((t for t in targets if t["health"] == "up"), None)

    target = _wait_for("the target up", target_up, log)
    assert target["labels"]["job"] == "reminders-notifier"
    assert target["lastError"] == ""

    def query(expr: str) -> list[dict[str, Any]]:
        q = urllib.parse.urlencode({"query": expr})
        result: list[dict[str, Any]] = _get(f"{url}/api/v1/query?{q}")["data"]["result"]
        return result

    ready = _wait_for(
        "reminders_service_ready", lambda: query('reminders_service_ready{service="notifier"}'), log
    )
    assert ready[0]["value"][1] == "1"
    assert ready[0]["metric"]["job"] == "reminders-notifier"
    assert query("reminders_build_info")[0]["value"][1] == "1"
    names = {r["metric"]["__name__"] for r in query('{__name__=~"reminders_.+"}')}
    # Series of every service and the shared metrics arrived (unlabelled ones exist at 0).
    for prefix in ("reminders_booking_", "reminders_scheduler_", "reminders_notifier_"):
        assert any(n.startswith(prefix) for n in names), (prefix, sorted(names))

    # Every query of the dashboard is valid PromQL and runs on the scraped data.
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "reminders.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$__rate_interval", "1m")
            q = urllib.parse.urlencode({"query": expr})
            answer = _get(f"{url}/api/v1/query?{q}")
            assert answer["status"] == "success", (panel["title"], expr, answer)

    def rules_evaluated() -> list[dict[str, Any]] | None:
        groups = _get(f"{url}/api/v1/rules")["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        if rules and all(r.get("lastEvaluation", "").startswith("0001") is False for r in rules):
            return rules
        return None

    rules = _wait_for("the rules evaluated", rules_evaluated, log)
    expected = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    assert len(rules) == sum(len(g["rules"]) for g in expected["groups"])
    unhealthy = [(r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"]
    assert not unhealthy, unhealthy
    # Everything is ready and nothing failed: no alert is pending or firing.
    alerts = _get(f"{url}/api/v1/alerts")["data"]["alerts"]
    assert alerts == [], alerts
