"""A real Prometheus (Debian's package) scrapes the three running services of a pipeline
while reminders flow, and sees every target up, ready, and the domain counters move."""

from __future__ import annotations

import asyncio
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from devkit.demo.pipeline import Pipeline, free_port
from devkit.demo.workload import generate
from services.common.settings import KafkaSettings
from tests.ops.test_ops_scrape import _get

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

JOBS = {
    "booking-events": "reminders-booking-events",
    "scheduler": "reminders-scheduler",
    "notifier": "reminders-notifier",
}


def _query(url: str, expr: str) -> list[dict[str, Any]]:
    import urllib.parse

    q = urllib.parse.urlencode({"query": expr})
    result: list[dict[str, Any]] = _get(f"{url}/api/v1/query?{q}")["data"]["result"]
    return result


async def _until(what: str, check: Any, timeout: float = 90.0) -> Any:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            result = check()
        except (OSError, ConnectionError, KeyError) as exc:
            result, last = None, exc
        if result:
            return result
        await asyncio.sleep(0.5)
    raise AssertionError(f"{what} not seen in {timeout:.0f} s ({last})")


async def test_prometheus_scrapes_the_running_services(
    prometheus_bin: str, kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    pipeline = Pipeline(kafka=kafka_settings, out_dir=tmp_path / "pipeline")
    process: subprocess.Popen[bytes] | None = None
    try:
        await pipeline.start_infrastructure()
        workload = generate(
            now=datetime.now(UTC),
            practices=2,
            patients=8,
            appointments=8,
            lead=(5.0, 15.0),
            push_factory=None,
            messy=False,
        )
        await pipeline.publish_configs(workload.practices)
        await pipeline.publish_preferences(workload.preferences)
        pipeline.start_services()
        await pipeline.wait_ready()

        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {
                    "job_name": job,
                    "static_configs": [
                        {"targets": [f"127.0.0.1:{pipeline.services[name].metrics_port}"]}
                    ],
                }
                for name, job in JOBS.items()
            ],
        }
        (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with (tmp_path / "prometheus.log").open("w") as log:
            process = subprocess.Popen(
                [
                    prometheus_bin,
                    f"--config.file={tmp_path / 'prometheus.yml'}",
                    f"--storage.tsdb.path={tmp_path / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

        def all_up() -> bool:
            targets = _get(f"{url}/api/v1/targets")["data"]["activeTargets"]
            return len(targets) == 3 and all(t["health"] == "up" for t in targets)

        await _until("three targets up", all_up)
        await pipeline.publish_events(workload.events)

        def ready() -> bool:
            rows = _query(url, "reminders_service_ready")
            return len(rows) == 3 and all(r["value"][1] == "1" for r in rows)

        await _until("every service ready", ready)
        await _until(
            "booking events counted",
            lambda: _query(url, 'sum(reminders_booking_events_total{result="accepted"}) > 0'),
        )
        await _until(
            "reminders fired",
            lambda: _query(url, 'sum(reminders_scheduler_timers_total{event="fired"}) > 0'),
        )
        await _until(
            "outcomes counted",
            lambda: _query(url, "sum(reminders_notifier_outcomes_total) > 0"),
        )
        lag = _query(url, "reminders_consumer_lag_records")
        assert {r["metric"]["job"] for r in lag} <= {JOBS["booking-events"], JOBS["notifier"]}
    finally:
        if process is not None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        await pipeline.stop()
