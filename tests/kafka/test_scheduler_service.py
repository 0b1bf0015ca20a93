"""The scheduler against the real broker, in-process (the fault tests run it as a process).

Records are published straight onto appointments.v1 and practice.config.v1; what the
scheduler committed is read back from reminders.due.v1 with read_committed. The real
clock covers "fires at its due time" (an appointment a few seconds past the 24-hour
mark); a FakeClock walks days for the rest.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from schemas.models import FiredMarker, ReminderDue, reminder_id_for
from schemas.topics import Topics
from services.common.clock import Clock, FakeClock
from services.common.kafka import PartitionMismatch, create_topics, make_producer
from services.common.settings import KafkaSettings, MetricsSettings, SchedulerSettings, Settings
from services.common.table import Table
from services.domain.codec import decode, encode
from services.domain.partition import partition_for
from services.notifier.samples import sample_config
from services.reminder_scheduler.samples import appointment_value, publish, read_committed
from services.reminder_scheduler.service import SchedulerService

pytestmark = pytest.mark.kafka

# Practices on each of the 3 test partitions (partition_for(practice, 3)).
PRACTICES = {partition_for(f"0{n:07d}", 3): f"0{n:07d}" for n in range(1000, 1100)}
P0, P1, P2 = PRACTICES[0], PRACTICES[1], PRACTICES[2]
T0 = datetime(2026, 6, 1, 9, 0, tzinfo=UTC)
T_DAY = timedelta(days=1)


def scheduler_settings(kafka: KafkaSettings, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "tick_seconds": 0.1,
        "session_timeout_ms": 6000,
        "heartbeat_interval_ms": 500,
        "retention_scan_seconds": 0.2,
        "fenced_retry_seconds": 2,
    }
    base.update(overrides)
    return Settings(
        kafka=kafka, metrics=MetricsSettings(port=0), scheduler=SchedulerSettings(**base)
    )


@dataclass
class World:
    kafka: KafkaSettings
    topics: Topics
    producer: AIOKafkaProducer
    services: list[SchedulerService] = field(default_factory=list)

    async def appointment(self, practice_id: str, appointment_id: str, **fields: Any) -> None:
        value = appointment_value(practice_id, appointment_id, **fields)
        await self.send_appointment(practice_id, appointment_id, value)

    async def send_appointment(
        self, practice_id: str, appointment_id: str, value: bytes | None
    ) -> None:
        await publish(
            self.producer,
            self.topics.appointments,
            [(f"{practice_id}/{appointment_id}", value)],
            partitions=self.kafka.partitions,
        )

    async def config(self, practice_id: str, **overrides: Any) -> None:
        value = encode(sample_config(practice_id, **overrides))
        await self.producer.send_and_wait(
            self.topics.practice_config,
            value,
            practice_id.encode(),
            partition=partition_for(practice_id, self.kafka.partitions),
        )

    async def start(self, clock: Clock | None = None, **overrides: Any) -> SchedulerService:
        service = SchedulerService(scheduler_settings(self.kafka, **overrides), clock)
        self.services.append(service)
        await service.start()
        return service

    async def dues(self, expect: int, timeout: float = 30, settle: float = 2) -> list[ReminderDue]:
        records = await read_committed(
            self.kafka, self.topics.reminders_due, expect=expect, timeout=timeout, settle=settle
        )
        return [decode(ReminderDue, r.value) for r in records]


@pytest.fixture
async def world(kafka_settings: KafkaSettings) -> AsyncIterator[World]:
    await create_topics(kafka_settings)
    producer = make_producer(kafka_settings)
    await producer.start()
    w = World(kafka_settings, Topics(kafka_settings.topic_prefix), producer)
    try:
        yield w
    finally:
        for service in w.services:
            await service.stop()
        await producer.stop()


async def eventually(check: Callable[[], bool], timeout: float = 30, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        await asyncio.sleep(0.05)


def ready(service: SchedulerService) -> bool:
    return service.readiness()[0]


# --------------------------------------------------------------------------- real clock


async def test_a_reminder_fires_once_at_its_due_time(world: World) -> None:
    await world.config(P1, quiet_hours=None)
    start = (datetime.now(UTC) + timedelta(hours=24, seconds=6)).replace(microsecond=0)
    await world.appointment(P1, "a-1", start=start, patient_id="pat-1")
    service = await world.start()
    assert not ready(service)  # nothing assigned and loaded yet
    await eventually(lambda: ready(service), what="scheduler ready")
    ready_at = datetime.now(UTC)
    assert service.readiness()[1]["partitions"] == {"0": "loaded", "1": "loaded", "2": "loaded"}
    (due,) = await world.dues(expect=1, settle=3)
    assert due.reminder_id == reminder_id_for(P1, "a-1", start)
    assert due.due_at == start - timedelta(hours=24)
    assert due.reason is None and due.patient_id == "pat-1" and due.start == start
    # at its due time: never early; the bound only catches a wrong moment (the lateness
    # itself is measured by bench/scheduler.py, not asserted here)
    # (on a loaded machine the service may only be ready after the due time: then it fires
    # right after loading)
    assert due.fired_at >= due.due_at
    lateness = (due.fired_at - max(due.due_at, ready_at)).total_seconds()
    assert lateness < 5, lateness
    fired = await read_committed(world.kafka, world.topics.reminders_fired, expect=1, settle=0)
    (marker,) = [decode(FiredMarker, r.value) for r in fired]
    assert marker.reminder_id == due.reminder_id and fired[0].partition == 1
    assert fired[0].key == f"{P1}/a-1"


# --------------------------------------------------------------------------- fake clock


async def test_reschedule_cancel_policy_change_meeting_and_switched_off(world: World) -> None:
    clock = FakeClock(T0)
    day = timedelta(days=1)
    await world.config(P0, quiet_hours=None)
    await world.config(P1, quiet_hours=None)
    await world.config(P2, quiet_hours=None, reminders_enabled=False, phone=None, sender=None)
    start = T0 + 3 * day  # 2026-06-04 09:00 UTC
    await world.appointment(P0, "moved", start=start, booked_at=T0 - day)
    await world.appointment(P0, "cancelled", start=start, booked_at=T0 - day)
    await world.appointment(P1, "policy", start=start, booked_at=T0 - day)
    await world.appointment(P0, "meeting", start=start, booked_at=T0 - day, meeting=True)
    await world.appointment(P2, "off", start=start, booked_at=T0 - day)
    service = await world.start(clock)
    await eventually(lambda: ready(service))
    worker0, worker1 = service.workers[0], service.workers[1]
    assert worker0.planner.timers.pending == 3 and worker1.planner.timers.pending == 1

    moved = start + day
    await world.appointment(P0, "moved", start=moved, booked_at=T0 - day, sequence=2)
    await world.appointment(P0, "cancelled", start=start, status="cancelled", sequence=2)
    # 11:00 in Amsterdam; from "24 hours before" to "the day before at 18:00"
    await world.config(
        P1, quiet_hours=None, send={"policy": "day_before_at", "time": "18:00"}, version=2
    )
    key = f"{P1}/policy".encode()

    def replanned() -> bool:
        timer = worker1.planner.timers.get(key)
        return timer is not None and timer.due_ms % 86_400_000 == 16 * 3_600_000

    await eventually(lambda: worker0.planner.timers.pending == 2 and replanned())

    clock.set(start - day)  # the 24-hour mark of the original start
    dues = await world.dues(expect=2)
    assert Counter(d.appointment_id for d in dues) == {"meeting": 1, "off": 1}
    assert all(d.fired_at == start - day == d.due_at for d in dues)

    clock.set(datetime(2026, 6, 3, 16, 0, tzinfo=UTC))  # 18:00 in Amsterdam
    dues = await world.dues(expect=3)
    # (the dues come from several partitions: their order in the list is not the firing order)
    assert Counter(d.appointment_id for d in dues) == {"meeting": 1, "off": 1, "policy": 1}
    (policy_due,) = [d for d in dues if d.appointment_id == "policy"]
    assert policy_due.due_at == clock.now()

    clock.set(moved - day)
    dues = await world.dues(expect=4)
    assert Counter(d.appointment_id for d in dues) == {
        "meeting": 1,
        "off": 1,
        "policy": 1,
        "moved": 1,
    }
    (moved_due,) = [d for d in dues if d.appointment_id == "moved"]
    assert moved_due.start == moved and moved_due.sequence == 2
    assert all(w.planner.timers.pending == 0 for w in service.workers.values())

    # one more day: nothing else; past retention the fired markers are tombstoned
    clock.set(moved + 9 * day)
    assert len(await world.dues(expect=5, timeout=2)) == 4

    def tombstoned() -> bool:
        return all(w.planner.timers.markers == 0 for w in service.workers.values())

    await eventually(tombstoned, what="marker tombstones")
    fired = await read_committed(world.kafka, world.topics.reminders_fired, expect=8)
    latest = {r.key: r.value for r in fired}
    assert len(latest) == 4 and all(v is None for v in latest.values())


async def test_missed_timers_fire_after_loading(world: World) -> None:
    """Down over the due time: fire at once, too_late when less than min_lead is left."""
    await world.config(P0, quiet_hours=None)
    clock = FakeClock(T0)
    start = T0 + timedelta(days=2)
    await world.appointment(P0, "ahead", start=start, booked_at=T0 - timedelta(days=9))
    await world.appointment(
        P0, "soon", start=T0 + timedelta(hours=24, minutes=30), booked_at=T0 - timedelta(days=9)
    )
    await world.appointment(
        P0, "begun", start=T0 - timedelta(hours=2), booked_at=T0 - timedelta(days=9)
    )
    clock.set(T0 + timedelta(hours=24))  # "ahead" was due 15 hours ago
    service = await world.start(clock)
    dues = {d.appointment_id: d for d in await world.dues(expect=3)}
    assert set(dues) == {"ahead", "soon", "begun"}
    assert dues["ahead"].reason is None
    assert dues["ahead"].due_at == start - timedelta(hours=24)
    assert dues["ahead"].fired_at == clock.now()
    assert dues["soon"].reason == "too_late"
    assert dues["begun"].reason == "too_late"
    assert ready(service)


async def test_appointments_wait_for_a_slow_config_topic(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The group join and fencing go on while the configs load; no appointment is
    planned before its practice's policy is known, however slowly the configs come."""
    clock = FakeClock(T0)
    start = T0 + timedelta(days=3)  # 2026-06-04 09:00 UTC
    await world.config(P0, quiet_hours=None, send={"policy": "day_before_at", "time": "18:00"})
    await world.appointment(P0, "a-1", start=start, booked_at=T0 - timedelta(days=1))
    follow, wait_loaded = Table.start, Table.wait_loaded
    late: list[asyncio.Task[None]] = []

    async def start_late(self: Table[Any], partitions: Any = None) -> None:
        async def later() -> None:
            await asyncio.sleep(3)  # the workers are assigned and fenced by then
            await follow(self, partitions)

        late.append(asyncio.create_task(later()))

    async def wait_late(self: Table[Any], partitions: Any = None) -> None:
        await asyncio.gather(*late)
        await wait_loaded(self, partitions)

    monkeypatch.setattr(Table, "start", start_late)
    monkeypatch.setattr(Table, "wait_loaded", wait_late)
    service = await world.start(clock)
    assert service.workers, "assigned before the configs were read"
    await eventually(lambda: ready(service))
    clock.set(start - timedelta(hours=2))
    (due,) = await world.dues(expect=1)
    # the day before at 18:00 in Amsterdam (16:00 UTC), not the default 24 hours before
    assert due.due_at == datetime(2026, 6, 3, 16, 0, tzinfo=UTC)


async def test_a_config_table_that_fails_while_loading_stops_the_start(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The group was joined while the configs loaded: a failed load leaves it again."""

    async def failed(self: Table[Any], partitions: Any = None) -> None:
        raise RuntimeError("practice-config stopped: broken")

    monkeypatch.setattr(Table, "wait_loaded", failed)
    service = SchedulerService(scheduler_settings(world.kafka))
    with pytest.raises(RuntimeError, match="practice-config stopped"):
        await service.start()
    assert service._member is None and service._configs is None and not service.workers


async def test_a_restart_neither_loses_nor_repeats(world: World) -> None:
    await world.config(P2, quiet_hours=None)
    clock = FakeClock(T0)
    for n in range(20):
        start = T0 + timedelta(hours=25 + n)
        await world.appointment(P2, f"a-{n}", start=start, booked_at=T0 - timedelta(days=3))
    first = await world.start(clock)
    await eventually(lambda: ready(first))
    clock.set(T0 + timedelta(hours=10, minutes=30))  # half of them due
    assert len(await world.dues(expect=10)) == 10
    await first.stop()
    world.services.remove(first)
    clock.set(T0 + timedelta(hours=30))
    second = await world.start(clock)
    dues = await world.dues(expect=20)
    assert sorted(d.appointment_id for d in dues) == sorted(f"a-{n}" for n in range(20))
    await eventually(lambda: ready(second))


async def test_two_instances_with_a_rebalance_in_the_middle(world: World) -> None:
    """Timers keep falling due while a second instance joins and the first one leaves."""
    clock = FakeClock(T0)
    ids: list[str] = []
    for practice in (P0, P1, P2):
        await world.config(practice, quiet_hours=None)
        for n in range(40):
            appointment_id = f"r-{n}"
            start = T0 + timedelta(hours=24, minutes=2 * n)
            await world.appointment(practice, appointment_id, start=start, booked_at=T0)
            ids.append(f"{practice}/{appointment_id}")
    first = await world.start(clock)
    await eventually(lambda: ready(first))

    async def walk(minutes: int) -> None:
        for _ in range(minutes):
            clock.advance(timedelta(minutes=1))
            await asyncio.sleep(0.05)

    await walk(20)
    second_task = asyncio.create_task(world.start(clock))
    await walk(20)  # firing goes on while the group rebalances
    second = await second_task
    await eventually(lambda: ready(first) and ready(second), what="both ready")
    assert set(first.workers).isdisjoint(second.workers)
    assert set(first.workers) | set(second.workers) == {0, 1, 2}
    await walk(20)
    await first.stop()  # leaves the group: the second takes every partition
    world.services.remove(first)
    await walk(30)
    await eventually(lambda: ready(second) and len(second.workers) == 3, what="takeover")
    dues = await world.dues(expect=len(ids))
    counted = Counter(f"{d.practice_id}/{d.appointment_id}" for d in dues)
    assert counted == dict.fromkeys(ids, 1)


# --------------------------------------------------------------------------- bad input


async def test_bad_records_go_to_the_dlq_once(world: World) -> None:
    clock = FakeClock(T0)
    await world.config(P0, quiet_hours=None)
    await world.send_appointment(P0, "junk", b"{not json")
    await world.send_appointment(P0, "other", appointment_value(P0, "else", start=T0 + 2 * T_DAY))
    await world.appointment(P0, "good", start=T0 + 2 * T_DAY)
    first = await world.start(clock)
    await eventually(lambda: ready(first))
    await first.stop()
    world.services.remove(first)
    second = await world.start(clock)  # reads the partition again: no second dead letter
    await eventually(lambda: ready(second))
    letters = await read_committed(
        world.kafka, Topics.dlq(world.topics.appointments), expect=2, settle=2
    )
    assert [r.key for r in letters] == [f"{P0}/junk", f"{P0}/other"]
    assert second.workers[0].planner.timers.pending == 1


async def test_refuses_topics_that_disagree(kafka_settings: KafkaSettings) -> None:
    topics = Topics(kafka_settings.topic_prefix)
    await create_topics(
        kafka_settings, [s for s in topics.specs() if s.name != topics.reminders_fired]
    )
    odd = kafka_settings.model_copy(update={"partitions": 2})
    await create_topics(odd, [s for s in topics.specs() if s.name == topics.reminders_fired])
    service = SchedulerService(scheduler_settings(kafka_settings))
    with pytest.raises(PartitionMismatch, match="same partition count"):
        await service.start()
    await service.stop()
