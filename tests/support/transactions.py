"""A fake transactional producer for tests of the partition-ownership runtime and of the
services on it: it records what it is asked to do, and fails commits on demand."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiokafka.errors import IllegalStateError, KafkaError, RequestTimedOutError

__all__ = ["FakeProducer"]


class _Batch:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    def append(self, *, key: Any, value: Any, timestamp: Any, headers: Any) -> object:
        self.records.append({"key": key, "value": value, "headers": headers})
        return object()


class FakeProducer:
    """A transactional producer whose first `fail_commits` commits raise `error`. The
    empty transaction that fences earlier owners when a partition is opened is recorded
    as "fence" (not as begin/commit) and never fails."""

    def __init__(
        self,
        fail_commits: int = 0,
        error: Callable[[], KafkaError] = RequestTimedOutError,
        abort_fails: bool = False,
    ) -> None:
        self.fail_commits = fail_commits
        self.error = error
        self.abort_fails = abort_fails
        self.calls: list[str] = []
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.committed_sends: list[tuple[str, dict[str, Any]]] = []
        self._open: list[tuple[str, dict[str, Any]]] = []
        self._offsets_sent = False
        self.offsets: list[tuple[dict[Any, int], str]] = []

    async def start(self) -> None:
        self.calls.append("start")

    async def stop(self) -> None:
        self.calls.append("stop")

    async def begin_transaction(self) -> None:
        self.calls.append("begin")
        self._open = []
        self._offsets_sent = False

    def create_batch(self) -> _Batch:
        return _Batch()

    async def send_batch(self, batch: _Batch, topic: str, *, partition: int) -> Any:
        for record in batch.records:
            await self.send(topic, partition=partition, **record)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    async def send(self, topic: str, **kwargs: Any) -> asyncio.Future[None]:
        self.sent.append((topic, kwargs))
        self._open.append((topic, kwargs))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    async def send_offsets_to_transaction(self, offsets: Any, group_id: str) -> None:
        self.calls.append("offsets")
        self.offsets.append((dict(offsets), group_id))
        self._offsets_sent = True

    async def commit_transaction(self) -> None:
        if not self._open and not self._offsets_sent and self.calls[-1:] == ["begin"]:
            self.calls[-1] = "fence"
            return
        self.calls.append("commit")
        if self.fail_commits:
            self.fail_commits -= 1
            raise self.error()
        self.committed_sends += self._open

    async def abort_transaction(self) -> None:
        self.calls.append("abort")
        if self.abort_fails:
            raise IllegalStateError("transaction in a fatal state")
        self._open = []
