"""The list of subcommand modules; each has ``register(subparsers)``."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from services.cli import config_cmd, demo_cmd, kafka_admin, publish, run

Register = Callable[["argparse._SubParsersAction[Any]"], None]

REGISTRY: list[Register] = [
    config_cmd.register,
    demo_cmd.register,
    kafka_admin.register,
    run.register,
    publish.register,
]
