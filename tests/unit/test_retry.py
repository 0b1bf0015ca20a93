"""retry_transient and backoff_delays: what is retried, how long it waits."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.domain.errors import (
    PermanentSendError,
    SubscriptionGone,
    TransientSendError,
)
from services.notifier.retry import RetryPolicy, backoff_delays, retry_transient


class _Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.calls.append(delay)


class _Flaky:
    """Fails with the given exceptions in order, then returns "ok"."""

    def __init__(self, *failures: Exception) -> None:
        self.failures = list(failures)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "ok"


def test_delays_without_jitter_double_and_cap() -> None:
    policy = RetryPolicy(attempts=8, base_delay=0.5, max_delay=10.0, jitter=0.0)
    assert backoff_delays(policy, random.Random(1)) == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0, 10.0]


def test_one_attempt_means_no_delays() -> None:
    assert backoff_delays(RetryPolicy(attempts=1), random.Random(1)) == []


def test_delays_are_reproducible_with_a_seeded_rng() -> None:
    policy = RetryPolicy()
    assert backoff_delays(policy, random.Random(7)) == backoff_delays(policy, random.Random(7))


@given(
    attempts=st.integers(1, 40),
    base=st.floats(0.0, 5.0),
    cap=st.floats(0.0, 60.0),
    jitter=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**32),
)
def test_delays_stay_within_the_jitter_band(
    attempts: int, base: float, cap: float, jitter: float, seed: int
) -> None:
    policy = RetryPolicy(attempts=attempts, base_delay=base, max_delay=cap, jitter=jitter)
    delays = backoff_delays(policy, random.Random(seed))
    assert len(delays) == attempts - 1
    for i, delay in enumerate(delays):
        ceiling = min(cap, base * 2.0**i)
        assert ceiling * (1 - jitter) - 1e-9 <= delay <= ceiling + 1e-9


@pytest.mark.parametrize(
    "kwargs", [{"attempts": 0}, {"jitter": 1.5}, {"jitter": -0.1}, {"base_delay": -1.0}]
)
def test_policy_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


async def test_success_first_time_does_not_sleep() -> None:
    sleeps = _Sleeps()
    fn = _Flaky()
    assert await retry_transient(fn, RetryPolicy(), sleep=sleeps) == "ok"
    assert fn.calls == 1
    assert sleeps.calls == []


async def test_transient_errors_are_retried_with_backoff() -> None:
    sleeps = _Sleeps()
    fn = _Flaky(TransientSendError("smtp_4xx"), TransientSendError("timeout"))
    policy = RetryPolicy(attempts=5, base_delay=0.5, max_delay=30, jitter=0.0)
    assert await retry_transient(fn, policy, sleep=sleeps) == "ok"
    assert fn.calls == 3
    assert sleeps.calls == [0.5, 1.0]


async def test_last_transient_error_is_raised_after_all_attempts() -> None:
    sleeps = _Sleeps()
    errors = [TransientSendError("smtp_unavailable", str(i)) for i in range(3)]
    fn = _Flaky(*errors)
    with pytest.raises(TransientSendError) as info:
        await retry_transient(fn, RetryPolicy(attempts=3, jitter=0.0), sleep=sleeps)
    assert info.value is errors[-1]
    assert fn.calls == 3
    assert len(sleeps.calls) == 2


@pytest.mark.parametrize(
    "error",
    [PermanentSendError("recipient_refused"), SubscriptionGone("subscription_gone")],
)
async def test_permanent_errors_pass_straight_through(error: PermanentSendError) -> None:
    sleeps = _Sleeps()
    fn = _Flaky(error)
    with pytest.raises(PermanentSendError) as info:
        await retry_transient(fn, RetryPolicy(), sleep=sleeps)
    assert info.value is error
    assert fn.calls == 1
    assert sleeps.calls == []


async def test_permanent_after_transient_stops_retrying() -> None:
    sleeps = _Sleeps()
    fn = _Flaky(TransientSendError("push_5xx"), PermanentSendError("push_4xx"))
    with pytest.raises(PermanentSendError):
        await retry_transient(fn, RetryPolicy(attempts=5), sleep=sleeps)
    assert fn.calls == 2
    assert len(sleeps.calls) == 1


async def test_other_exceptions_are_not_retried() -> None:
    fn = _Flaky(RuntimeError("bug"))
    with pytest.raises(RuntimeError):
        await retry_transient(fn, RetryPolicy(), sleep=_Sleeps())
    assert fn.calls == 1


async def test_retry_after_lengthens_the_delay_up_to_max_delay() -> None:
    sleeps = _Sleeps()
    fn = _Flaky(
        TransientSendError("push_rate_limited", retry_after=7.0),
        TransientSendError("push_rate_limited", retry_after=3600.0),
        TransientSendError("push_rate_limited", retry_after=0.0),
    )
    policy = RetryPolicy(attempts=5, base_delay=0.5, max_delay=30.0, jitter=0.0)
    assert await retry_transient(fn, policy, sleep=sleeps) == "ok"
    assert sleeps.calls == [7.0, 30.0, 2.0]


async def test_jittered_delays_come_from_the_given_rng() -> None:
    sleeps = _Sleeps()
    policy = RetryPolicy(attempts=4, jitter=1.0)
    fn = _Flaky(*(TransientSendError("timeout") for _ in range(3)))
    await retry_transient(fn, policy, sleep=sleeps, rng=random.Random(3))
    assert sleeps.calls == backoff_delays(policy, random.Random(3))


async def test_every_attempt_after_the_first_is_reported_as_a_retry() -> None:
    flaky = _Flaky(TransientSendError("smtp_4xx", "451"), TransientSendError("smtp_4xx", "451"))
    retries: list[int] = []
    policy = RetryPolicy(attempts=5, base_delay=0.01, max_delay=0.01)
    result = await retry_transient(
        flaky, policy, sleep=_Sleeps(), rng=random.Random(1), on_retry=lambda: retries.append(1)
    )
    assert result == "ok"
    assert flaky.calls == 3
    assert len(retries) == 2
