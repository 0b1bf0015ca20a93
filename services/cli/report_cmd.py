"""``reminders report --practice P [--weeks N] [--csv]``: the follow-up figures (insights).

The same figures as practice-admin's follow-up page, read from the projection that
``reminders run insights`` keeps in the database named by REMINDERS_DATABASE__URL.
"""

from __future__ import annotations

import argparse
import re
import sys
from datetime import UTC, date, datetime, time
from typing import Any

from services.cli._base import CliError, run_async
from services.common.db import SchemaOutdated, create_engine, redacted_url, require_current_schema
from services.common.followup import ZONE, build_report, report_csv, report_text
from services.common.settings import Settings

_PRACTICE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")


def register(sub: argparse._SubParsersAction[Any]) -> None:
    report = sub.add_parser(
        "report",
        help="the follow-up figures of one practice per ISO week (reach, no-show, reasons)",
        description=(
            "Appointments, reminders sent by channel, suppressed and failed by reason, reach, "
            "no-show rate with and without a reminder (by type and booking lead time) and "
            "cancellations after a reminder, per ISO week in Europe/Amsterdam. Patients choose "
            "reminders themselves: the comparison is not a trial."
        ),
    )
    report.add_argument("--practice", required=True, help="the practice id (AGB code)")
    report.add_argument(
        "--weeks", type=int, default=12, help="how many weeks, up to this one (default 12)"
    )
    report.add_argument("--csv", action="store_true", help="print CSV instead of a table")
    report.add_argument(
        "--until",
        type=date.fromisoformat,
        default=None,
        help="the last week is the one holding this date (YYYY-MM-DD; default today)",
    )
    report.set_defaults(handler=lambda args: run_async(_report(args)))


async def _report(args: argparse.Namespace) -> int:
    if not _PRACTICE.match(args.practice):
        raise CliError(f"--practice {args.practice!r}: not a practice id (letters, digits)")
    if not 1 <= args.weeks <= 104:
        raise CliError("--weeks: between 1 and 104")
    until = (
        datetime.combine(args.until, time(12), tzinfo=ZONE)
        if args.until is not None
        else datetime.now(UTC)
    )
    settings = Settings()
    engine = create_engine(settings.database)
    try:
        try:
            await require_current_schema(engine)
        except SchemaOutdated as exc:
            raise CliError(str(exc)) from exc
        except Exception as exc:
            raise CliError(f"database {redacted_url(settings.database)}: {exc}") from exc
        async with engine.connect() as connection:
            report = await build_report(connection, args.practice, until=until, weeks=args.weeks)
    finally:
        await engine.dispose()
    sys.stdout.write(report_csv(report) if args.csv else report_text(report))
    return 0
