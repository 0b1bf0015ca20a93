"""reminders acl plan|apply: least-privilege Kafka ACLs."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Not built yet."""
