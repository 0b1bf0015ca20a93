"""The ``reminders`` commands: which module registers each, and its one-line help.

A command's module is imported only when that command runs (or when the whole parser is
built, for ``--help`` of a command and for the tests): importing every module would load
the database, Kafka, SMTP and template libraries for every call, about two seconds before
``reminders admin user list`` or a service's ``reminders run`` could start. ``reminders
--help`` lists the commands from this table; ``test_the_command_table_is_what_the_modules_register``
keeps the table and the modules in step.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from typing import Any

Register = Callable[["argparse._SubParsersAction[Any]"], None]

# command -> (module under services.cli, help); in the order ``reminders --help`` lists them.
COMMANDS: dict[str, tuple[str, str]] = {
    "config": (
        "config_cmd",
        "check, publish and show practice configs; switch reminders on or off",
    ),
    "preferences": (
        "config_cmd",
        "publish patient preferences (consent, channels) for tests and demos",
    ),
    "preview": ("config_cmd", "show the reminder e-mail and push a patient would get"),
    "demo": ("demo_cmd", "run the whole pipeline locally with synthetic practices and patients"),
    "topics": ("kafka_admin", "create and list the Kafka topics"),
    "partition": (
        "kafka_admin",
        "the partition of a practice (for the portal's preferences publisher)",
    ),
    "run": (
        "run",
        "run one service (booking-events, his-gateway, insights, notifier, practice-admin, "
        "scheduler)",
    ),
    "publish": ("publish", "publish a record by hand (connector development, tests)"),
    "db": ("db_cmd", "the database schema (users, audit, API clients, follow-up)"),
    "admin": ("admin_cmd", "practice-admin accounts (beheerder, medewerker)"),
    "gateway": ("gateway_cmd", "his-gateway: API clients of HIS vendors"),
    "report": (
        "report_cmd",
        "the follow-up figures of one practice per ISO week (reach, no-show, reasons)",
    ),
    "check": (
        "check_cmd",
        "check brokers, topics, SMTP, the push key and the database (one line each)",
    ),
    "acl": ("acl_cmd", "least-privilege Kafka ACLs per principal (plan, apply)"),
}


def modules() -> list[str]:
    """Every command module, once each, in the table's order."""
    return list(dict.fromkeys(module for module, _ in COMMANDS.values()))


def register_of(module: str) -> Register:
    loaded = importlib.import_module(f"services.cli.{module}")
    register: Register = loaded.register
    return register


def add_commands(sub: argparse._SubParsersAction[Any], command: str | None) -> None:
    """Every command on ``sub``: in full when ``command`` is None, else only ``command``'s
    module in full and the others by name and help (enough for ``reminders --help`` and
    for argparse's errors); a ``command`` that is none of them loads no module."""
    chosen = COMMANDS.get(command or "")
    wanted = modules() if command is None else [chosen[0]] if chosen else []
    for module in wanted:
        register_of(module)(sub)
    for name, (module, help_text) in COMMANDS.items():
        if module not in wanted:
            sub.add_parser(name, help=help_text)
