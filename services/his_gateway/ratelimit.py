"""Failed token requests are rate-limited, per client id and per remote address.

After ``limit`` failures inside ``window_seconds`` the key is refused (429) until the
oldest failure leaves the window, without checking the secret at all, so guessing a
secret costs hours rather than seconds. Successes do not count. In memory, per process.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

__all__ = ["FailureLimiter"]


class FailureLimiter:
    def __init__(
        self,
        *,
        limit: int = 10,
        window_seconds: float = 60.0,
        monotonic: Callable[[], float] = time.monotonic,
        max_keys: int = 100_000,
    ) -> None:
        self._limit = limit
        self._window = window_seconds
        self._monotonic = monotonic
        self._max_keys = max_keys
        self._failures: dict[str, deque[float]] = {}

    def retry_after(self, *keys: str) -> float:
        """Seconds until each key may try again; 0 when none is blocked."""
        now = self._monotonic()
        wait = 0.0
        for key in keys:
            failures = self._prune(key, now)
            if failures is not None and len(failures) >= self._limit:
                wait = max(wait, failures[0] + self._window - now)
        return wait

    def failed(self, *keys: str) -> None:
        now = self._monotonic()
        if len(self._failures) >= self._max_keys:
            self._evict(now)
        for key in keys:
            self._failures.setdefault(key, deque()).append(now)

    def _prune(self, key: str, now: float) -> deque[float] | None:
        failures = self._failures.get(key)
        if failures is None:
            return None
        while failures and failures[0] <= now - self._window:
            failures.popleft()
        if not failures:
            del self._failures[key]
            return None
        return failures

    def _evict(self, now: float) -> None:
        for key in list(self._failures):
            self._prune(key, now)
        if len(self._failures) >= self._max_keys:
            self._failures.clear()
