"""``reminders demo``: the whole system on this machine with synthetic practices."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from services.cli._base import CliError


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def register(sub: argparse._SubParsersAction[Any]) -> None:
    demo = sub.add_parser(
        "demo",
        help="run the whole pipeline locally with synthetic practices and patients",
        description=(
            "Start a local Kafka (unless REMINDERS_KAFKA__BOOTSTRAP_SERVERS is set), create the "
            "topics, publish synthetic practice configs and patient preferences, run the three "
            "services, play a morning of HIS bookings whose reminders fall due within a minute, "
            "and check what a local SMTP and Web Push sink received. Exit code 0 when every "
            "number matches."
        ),
    )
    demo.add_argument("--practices", type=_positive, default=3, help="practices (default 3)")
    demo.add_argument(
        "--patients", type=_positive, default=20, help="patients per practice (default 20)"
    )
    demo.add_argument(
        "--appointments", type=_positive, default=25, help="appointments per practice (default 25)"
    )
    demo.add_argument("--partitions", type=_positive, default=3, help="partitions (default 3)")
    demo.add_argument("--seed", type=int, default=7, help="seed of the synthetic workload")
    demo.add_argument(
        "--out", type=Path, default=None, help="output folder (default demo-out/<timestamp>)"
    )
    demo.add_argument(
        "--keep-running",
        action="store_true",
        help="leave the services up after the summary (for Prometheus); Ctrl-C stops",
    )
    demo.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace) -> int:
    try:
        from devkit.demo.run import DemoOptions, main
        from devkit.local_kafka import KafkaUnavailableError
    except ModuleNotFoundError as exc:
        # A production install has no devkit extra (aiosmtpd, the demo's mail sink).
        print(
            f"reminders demo needs the devkit extra ({exc.name} is missing): "
            "pip install 'e-afspraken-reminders[devkit]', or run ./dev demo",
            file=sys.stderr,
        )
        return 2

    options = DemoOptions(
        practices=args.practices,
        patients=args.patients,
        appointments=args.appointments,
        partitions=args.partitions,
        keep_running=args.keep_running,
        out_dir=args.out,
        seed=args.seed,
    )
    try:
        return main(options)
    except KafkaUnavailableError as exc:
        raise CliError(str(exc)) from exc
