"""What every subcommand module shares."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Coroutine
from typing import Any

from services.common.settings import Settings, SettingsInvalid, load_settings

__all__ = ["CliError", "Subparsers", "run_async", "settings_from"]

Subparsers = "argparse._SubParsersAction[argparse.ArgumentParser]"


class CliError(Exception):
    """An error a user can act on: printed as one line, exit code 2 (or ``code``)."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def run_async(coro: Coroutine[Any, Any, int | None]) -> int:
    return asyncio.run(coro) or 0


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings from the environment, with ``--bootstrap`` and ``--partitions`` on top."""
    try:
        settings = load_settings()
    except SettingsInvalid as exc:
        raise CliError(str(exc)) from None
    bootstrap = getattr(args, "bootstrap", None)
    partitions = getattr(args, "partitions", None)
    prefix = getattr(args, "topic_prefix", None)
    updates: dict[str, Any] = {}
    if bootstrap:
        updates["bootstrap_servers"] = bootstrap
    if partitions:
        updates["partitions"] = partitions
    if prefix is not None:
        updates["topic_prefix"] = prefix
    if updates:
        settings = settings.model_copy(update={"kafka": settings.kafka.model_copy(update=updates)})
    return settings


def add_kafka_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--bootstrap",
        metavar="HOST:PORT",
        help="Kafka bootstrap servers (default: REMINDERS_KAFKA__BOOTSTRAP_SERVERS)",
    )
    parser.add_argument(
        "--topic-prefix",
        metavar="PREFIX",
        default=None,
        help="topic name prefix (default: REMINDERS_KAFKA__TOPIC_PREFIX)",
    )
