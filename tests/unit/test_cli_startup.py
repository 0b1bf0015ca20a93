"""The ``reminders`` command loads only what the command it runs needs.

Every call of the CLI (an operator's ``reminders admin user list``, each service's
``reminders run ...``, a restart after a crash) used to import every command's libraries
first: about two seconds before anything happened.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

from services.cli import _commands, build_parser


def _top_level(parser: argparse.ArgumentParser) -> dict[str, str | None]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            sub: argparse._SubParsersAction[Any] = action
            return {choice.dest: choice.help for choice in sub._choices_actions}
    raise AssertionError("no commands")


def test_the_command_table_is_what_the_modules_register() -> None:
    registered: dict[str, tuple[str, str | None]] = {}
    for module in _commands.modules():
        parser = argparse.ArgumentParser()
        sub = parser.add_subparsers()
        _commands.register_of(module)(sub)
        for name, help_text in _top_level(parser).items():
            registered[name] = (module, help_text)
    assert registered == _commands.COMMANDS
    # The listing in `reminders --help` is the same with and without the modules loaded.
    assert _top_level(build_parser("")) == _top_level(build_parser())


def _modules_loaded_by(argv: list[str]) -> set[str]:
    script = (
        "import json, sys\n"
        "from services.cli import _command_in, build_parser\n"
        f"parser = build_parser(_command_in({argv!r}))\n"
        f"if {argv!r}: parser.parse_args({argv!r})\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    return set(json.loads(done.stdout))


def test_a_command_loads_only_its_own_module() -> None:
    heavy = {"sqlalchemy", "alembic", "aiokafka", "jinja2", "aiosmtplib", "services.notifier"}
    top = _modules_loaded_by([])  # what `reminders --help` loads
    assert not heavy & top
    assert not {m for m in top if m.startswith("services.cli.") and m.endswith("_cmd")}

    admin = _modules_loaded_by(["admin", "user", "list"])
    assert "services.cli.admin_cmd" in admin
    assert not {"services.notifier", "aiokafka", "services.cli.config_cmd"} & admin

    run = _modules_loaded_by(["run", "notifier"])
    assert "services.cli.run" in run
    assert not {"services.cli.check_cmd", "services.cli.admin_cmd", "sqlalchemy"} & run
