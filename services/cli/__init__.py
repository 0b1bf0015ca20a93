"""The ``reminders`` command: one entry point for operators, practices and developers."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence

from pydantic import ValidationError
from pydantic_settings import SettingsError

from services.cli import _commands
from services.cli._base import CliError, run_async
from services.common.settings import SettingsInvalid

__all__ = ["CliError", "main", "run_async"]


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or with ``command`` only that command's module loaded."""
    parser = argparse.ArgumentParser(
        prog="reminders",
        description=(
            "Appointment reminders for general practices (e-afspraken). Settings come from "
            "REMINDERS_* environment variables or a .env file, e.g. "
            "REMINDERS_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:9092."
        ),
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _commands.add_commands(sub, command)
    return parser


def _command_in(argv: Sequence[str]) -> str:
    """The command ``argv`` names ("" for none: the top level's help, or an error)."""
    for arg in argv:
        if not arg.startswith("-"):
            return arg
    return ""


def main(argv: Sequence[str] | None = None) -> int:
    given = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_command_in(given))
    args = parser.parse_args(given)
    # Commands speak for themselves in one line; client libraries stay quiet unless asked.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except CliError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.code
    except SettingsInvalid as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (ValidationError, SettingsError) as exc:
        # Settings built by a command itself; pydantic's own text would show the input.
        print(f"error: {SettingsInvalid.of(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
