"""``reminders run SERVICE``: run one service until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import sys
from datetime import UTC, datetime
from typing import Any

from services.cli._base import CliError
from services.common.logs import setup_logging
from services.common.runtime import EXIT_REFUSED
from services.common.settings import SettingsInvalid, load_settings

# name -> module with ``create_app(settings) -> FastStream``
SERVICES = {
    "booking-events": "services.booking_events.app",
    "scheduler": "services.reminder_scheduler.app",
    "notifier": "services.notifier.app",
    "insights": "services.insights.app",
    "practice-admin": "services.practice_admin.app",
    "his-gateway": "services.his_gateway.app",
}


def register(sub: argparse._SubParsersAction[Any]) -> None:
    run = sub.add_parser(
        "run",
        help="run one service (" + ", ".join(sorted(SERVICES)) + ")",
        description=(
            "Run one service until interrupted. It serves /metrics, /healthz and /readyz on "
            "REMINDERS_METRICS__HOST:REMINDERS_METRICS__PORT."
        ),
    )
    run.add_argument("service", choices=sorted(SERVICES), metavar="SERVICE")
    run.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings()
    except SettingsInvalid as exc:
        # Logging is not set up yet (its format is a setting): write the one JSON line here.
        line = {
            "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "level": "error",
            "logger": "services.cli.run",
            "msg": str(exc),
            "service": args.service,
            "exit_code": EXIT_REFUSED,
        }
        print(json.dumps(line, ensure_ascii=False), file=sys.stderr)
        return EXIT_REFUSED
    setup_logging(settings.log_level, settings.log_format)
    try:
        module = importlib.import_module(SERVICES[args.service])
    except ImportError as exc:
        raise CliError(f"service {args.service} is not available: {exc}") from exc
    app = module.create_app(settings)
    # A service may name its event loop (the gateway runs on uvloop); else asyncio's.
    with asyncio.Runner(loop_factory=getattr(app, "loop_factory", None)) as runner:
        runner.run(app.run())
    return int(getattr(app, "exit_code", 0))
