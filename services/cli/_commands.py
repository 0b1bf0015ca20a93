"""The list of subcommand modules; each has ``register(subparsers)``."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from services.cli import demo_cmd, kafka_admin, run

Register = Callable[["argparse._SubParsersAction[Any]"], None]

REGISTRY: list[Register] = [
    demo_cmd.register,
    kafka_admin.register,
    run.register,
]
