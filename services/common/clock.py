"""Time is injected, so rules and timers can be walked across DST and midnight in tests."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Protocol

__all__ = ["Clock", "FakeClock", "SystemClock"]


class Clock(Protocol):
    def now(self) -> datetime:
        """The current moment, timezone-aware (UTC)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait; a fake clock may return at once."""
        ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


class FakeClock:
    """A clock that tests move by hand; sleeping yields briefly in real time."""

    def __init__(self, start: datetime, real_sleep: float = 0.01) -> None:
        if start.tzinfo is None:
            raise ValueError("FakeClock needs an aware datetime")
        self._now = start.astimezone(UTC)
        self._real_sleep = real_sleep

    def now(self) -> datetime:
        return self._now

    def set(self, moment: datetime) -> None:
        self._now = moment.astimezone(UTC)

    def advance(self, delta: timedelta | float) -> None:
        self._now += delta if isinstance(delta, timedelta) else timedelta(seconds=delta)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(min(max(0.0, seconds), self._real_sleep))
