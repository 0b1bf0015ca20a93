"""The list of subcommand modules; each has ``register(subparsers)``."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from services.cli import (
    acl_cmd,
    admin_cmd,
    check_cmd,
    config_cmd,
    db_cmd,
    demo_cmd,
    gateway_cmd,
    kafka_admin,
    publish,
    report_cmd,
    run,
)

Register = Callable[["argparse._SubParsersAction[Any]"], None]

REGISTRY: list[Register] = [
    config_cmd.register,
    demo_cmd.register,
    kafka_admin.register,
    run.register,
    publish.register,
    db_cmd.register,
    admin_cmd.register,
    gateway_cmd.register,
    report_cmd.register,
    check_cmd.register,
    acl_cmd.register,
]
