"""A process that exposes every metric of every service, as the services do, for the ops tests.

It imports each service's app module (or its metrics module while the app is not there yet),
the shared metrics and a FastStream broker per service (as
``services.common.runtime.make_broker`` builds it), marks the services ready, and serves
/metrics /healthz /readyz with the project's HealthServer on a free port. It prints one JSON
line: ``{"port": N, "metrics": {name: {"type", "labels", "service"}}}`` and runs until its
standard input closes. A separate process keeps the test process's own registry out of it.

    python tests/ops/ops_metrics_target.py
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from prometheus_client import REGISTRY  # noqa: E402
from prometheus_client.metrics import MetricWrapperBase  # noqa: E402

from services.common.health import HealthServer  # noqa: E402
from services.common.metrics import track_readiness  # noqa: E402
from services.common.runtime import make_broker  # noqa: E402
from services.common.settings import Settings  # noqa: E402

# service name (as in `reminders run` and the catalogue) -> package
SERVICES = {
    "booking-events": "services.booking_events",
    "scheduler": "services.reminder_scheduler",
    "notifier": "services.notifier",
}


def _import_services() -> dict[str, list[ModuleType]]:
    loaded: dict[str, list[ModuleType]] = {}
    for service, package in SERVICES.items():
        folder = ROOT / package.replace(".", "/")
        modules = []
        for name in ("metrics", "app"):
            if (folder / f"{name}.py").exists():
                modules.append(importlib.import_module(f"{package}.{name}"))
        loaded[service] = modules
    return loaded


def _owner(collector: object) -> str:
    for service, package in SERVICES.items():
        for name, module in list(sys.modules.items()):
            if (name == package or name.startswith(package + ".")) and any(
                value is collector for value in vars(module).values()
            ):
                return service
    return "all"


def describe() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for collector in list(REGISTRY._collector_to_names):
        families = list(collector.collect())
        for family in families:
            labels: set[str] = set()
            if isinstance(collector, MetricWrapperBase):
                labels.update(collector._labelnames)
            for sample in family.samples:
                labels.update(k for k in sample.labels if k not in ("le", "quantile"))
            name = family.name
            if family.type == "counter":
                name += "_total"
            elif family.type == "info":
                name += "_info"
            out[name] = {
                "type": family.type,
                "labels": sorted(labels),
                "service": _owner(collector),
            }
    return out


async def main() -> None:
    _import_services()
    settings = Settings()
    for service in SERVICES:
        make_broker(settings, service)
        track_readiness(service, lambda: (True, {}))
    server = HealthServer(host="127.0.0.1", port=0, readiness=lambda: (True, {}))
    await server.start()
    try:
        print(json.dumps({"port": server.port, "metrics": describe()}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    finally:
        await server.stop()


if __name__ == "__main__":
    asyncio.run(main())
