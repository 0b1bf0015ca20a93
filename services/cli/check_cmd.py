"""reminders check: one line per thing the settings name."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Not built yet."""
