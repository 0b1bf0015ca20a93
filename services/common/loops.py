"""The event loop a service runs on: uvloop where it is installed (a dependency, except on
Windows), else asyncio's. ``reminders run`` reads the app's ``loop_factory``."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

__all__ = ["LoopFactory", "preferred_loop"]

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def preferred_loop() -> LoopFactory | None:
    """uvloop's loop factory, or None for asyncio's own loop."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - Windows
        return None
    factory: LoopFactory = uvloop.new_event_loop
    return factory
