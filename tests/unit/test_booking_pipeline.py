"""booking_events' pipeline without a broker: batches in through the handler, a fake
transactional partition and a fake group member, and what is committed, applied and
read again."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from aiokafka import ConsumerRecord, TopicPartition

from services.booking_events.app import BookingEventsService
from services.booking_events.ledger import Ledger
from services.common.clock import FakeClock
from services.common.kafka import DeadLetter
from services.common.partitions import Output, PartitionBroken, PartitionFenced
from services.common.settings import Settings

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "his"
TOPIC = "his.appointments.v1"
TP = TopicPartition(TOPIC, 0)
KEY = "01054321/A-2026-118734"


class FakePartition:
    """A transactional partition: records each commit, or raises the armed error."""

    def __init__(self) -> None:
        self.commits: list[tuple[list[Output], dict[TopicPartition, int], list[DeadLetter]]] = []
        self.fail: Exception | None = None
        self.closed = False

    async def commit(
        self,
        outputs: Sequence[Output],
        offsets: Mapping[TopicPartition, int] | None = None,
        dead_letters: Sequence[DeadLetter] = (),
    ) -> None:
        await asyncio.sleep(0)
        if self.fail is not None:
            raise self.fail
        self.commits.append((list(outputs), dict(offsets or {}), list(dead_letters)))

    async def close(self) -> None:
        self.closed = True


class FakeConsumer:
    def __init__(self) -> None:
        self.paused: list[TopicPartition] = []

    def assignment(self) -> set[TopicPartition]:
        return {TP}

    def pause(self, *tps: TopicPartition) -> None:
        self.paused += tps


class FakeMember:
    def __init__(self) -> None:
        self.consumer = FakeConsumer()
        self.lock = asyncio.Lock()
        self.generation = 0
        self.seeks: list[dict[TopicPartition, int]] = []

    def seek(self, offsets: Mapping[TopicPartition, int]) -> None:
        self.seeks.append(dict(offsets))


class Pipeline:
    def __init__(self) -> None:
        self.service = BookingEventsService(
            Settings(), clock=FakeClock(datetime(2026, 11, 28, 12, 0, tzinfo=UTC))
        )
        self.member = FakeMember()
        self.partition = FakePartition()
        self.ledger = Ledger()
        service = cast(Any, self.service)
        service._member = self.member
        service._partitions = 1
        service._owned[0] = self.partition
        service._ledgers[0] = self.ledger
        self.offset = 0

    def records(self, *values: bytes) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        batch = []
        for value in values:
            batch.append(
                ConsumerRecord(
                    topic=TOPIC,
                    partition=0,
                    offset=self.offset,
                    timestamp=0,
                    timestamp_type=0,
                    key=b"01054321",
                    value=value,
                    checksum=None,
                    serialized_key_size=8,
                    serialized_value_size=len(value),
                    headers=[],
                )
            )
            self.offset += 1
        return {TP: batch}

    async def settle(self) -> None:
        await cast(Any, self.service)._settle_and_rewind()


def _event(sequence: int, **changes: Any) -> bytes:
    data = json.loads((EXAMPLES / "appointment-native.json").read_text())
    data.update(event_id=str(uuid.uuid4()), sequence=sequence, **changes)
    return json.dumps(data).encode()


async def test_a_batch_commits_its_states_letters_and_offsets_in_one_transaction() -> None:
    p = Pipeline()
    await p.service.handle(p.records(_event(1), b"not json", _event(2, status="cancelled")))
    await p.settle()
    [(outputs, offsets, letters)] = p.partition.commits
    assert [(o.topic, o.partition, o.key) for o in outputs] == [
        ("appointments.v1", 0, KEY.encode())
    ] * 2
    assert offsets == {TP: 3}
    assert [(letter.source_offset, letter.reason) for letter in letters] == [(1, "not_json")]
    # Applied to the last-seen state only once committed: a redelivery is a duplicate.
    assert p.ledger.get(KEY) is not None
    await p.service.handle(p.records(_event(2, status="cancelled")))
    await p.settle()
    assert p.partition.commits[-1][0] == []
    assert p.partition.commits[-1][1] == {TP: 4}


async def test_a_batch_is_built_on_the_one_in_flight_before_that_commits() -> None:
    p = Pipeline()
    await p.service.handle(p.records(_event(1)))
    await p.service.handle(p.records(_event(1), _event(2)))  # built while the first commits
    await p.settle()
    first, second = p.partition.commits
    assert len(first[0]) == 1
    assert len(second[0]) == 1  # sequence 1 again is a duplicate of the pending state
    assert p.ledger.get(KEY) is not None
    assert p.ledger.get(KEY).sequence == 2  # type: ignore[union-attr]


async def test_a_commit_that_cannot_go_on_applies_nothing_and_reads_the_batch_again() -> None:
    p = Pipeline()
    p.partition.fail = PartitionBroken(0, RuntimeError("abort failed"))
    await p.service.handle(p.records(_event(1), _event(2)))
    await p.settle()
    assert p.ledger.get(KEY) is None
    assert {TP: 0} in p.member.seeks  # from the batch's first record
    # The partition is given up (its producer closed) and paused until it is reloaded.
    assert p.partition.closed and TP in p.member.consumer.paused
    assert 0 not in p.service.owned


async def test_a_fenced_partition_is_left_to_its_new_owner() -> None:
    p = Pipeline()
    p.partition.fail = PartitionFenced(0)
    await p.service.handle(p.records(_event(1)))
    await p.settle()
    assert p.partition.closed and TP in p.member.consumer.paused
    assert 0 not in p.service.owned
    # The next batch of that partition is not decided without its state: read again.
    await p.service.handle(p.records(_event(2)))
    assert p.member.seeks[-1] == {TP: 1}
