"""The list of subcommand modules; each has ``register(subparsers)``."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from services.cli import kafka_admin, run

Register = Callable[["argparse._SubParsersAction[Any]"], None]

REGISTRY: list[Register] = [
    kafka_admin.register,
    run.register,
]
