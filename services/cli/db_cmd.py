"""reminders db ...: database migrations (owned by the database foundation)."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Not built yet."""
