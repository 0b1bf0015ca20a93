"""Retry with exponential backoff and jitter, for transient send failures only."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from services.domain.errors import TransientSendError

__all__ = ["RetryPolicy", "backoff_delays", "retry_transient"]

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to retry.

    `attempts` counts the first try. `jitter` is the randomised fraction of each delay:
    0 gives plain exponential backoff, 1 "full jitter", 0.5 "equal jitter".
    """

    attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 30.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("attempts must be at least 1")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("delays must not be negative")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError("jitter must be between 0 and 1")


def backoff_delays(policy: RetryPolicy, rng: random.Random) -> list[float]:
    """The sleeps between attempts (attempts - 1 of them), capped at max_delay."""
    delays: list[float] = []
    for i in range(policy.attempts - 1):
        # min() before the power would overflow for absurd attempt counts.
        cap = min(policy.max_delay, policy.base_delay * 2.0 ** min(i, 62))
        fixed = cap * (1.0 - policy.jitter)
        delays.append(fixed + rng.uniform(0.0, cap - fixed))
    return delays


async def retry_transient(
    fn: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    rng: random.Random | None = None,
    on_retry: Callable[[], object] | None = None,
) -> T:
    """Await `fn()`, retrying TransientSendError; anything else propagates at once.

    A server's Retry-After (`exc.retry_after`) lengthens a delay, but never past
    max_delay: a consumer must not sit on its partition for an hour. `on_retry` is called
    before every attempt after the first (the retries metric).
    """
    # Drawn at the first failure only: nearly every send succeeds at once, and drawing
    # the delays (and seeding a Random) for each was a visible part of a send's CPU.
    delays: list[float] | None = None
    for attempt in range(policy.attempts):
        try:
            return await fn()
        except TransientSendError as exc:
            if attempt == policy.attempts - 1:
                raise
            if delays is None:
                delays = backoff_delays(policy, rng if rng is not None else random.Random())
            delay = delays[attempt]
            if exc.retry_after is not None:
                delay = min(max(delay, exc.retry_after), policy.max_delay)
            await sleep(delay)
            if on_retry is not None:
                on_retry()
    raise AssertionError("unreachable")  # pragma: no cover
