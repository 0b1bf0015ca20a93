"""The scheduler service: the handler of a group member on appointments.v1, with one
worker per partition.

Start-up: check that the topics agree on their partition count (refuse otherwise), load
``practice.config.v1`` whole (the policies), then join the consumer group
``{prefix}{scheduler.group_id}`` on ``appointments.v1`` through the partition-ownership
runtime (services/common/partitions.py: membership, rebalance listener, fetch loop). For
each assigned partition a :class:`PartitionWorker` fences, loads and fires (see
firing.py). Revoked partitions stop firing, drop their timers and close their producer
before the group hands them to another instance.

The group consumer never commits offsets: every assignment reads the partition from its
beginning (the topic is compacted and bounded by booking_events' retention). Records it
cannot use go to the DLQ in a transaction of the partition's producer; the DLQ watermark
keeps a later owner from parking them again.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from datetime import datetime
from typing import Final

from aiokafka import AIOKafkaConsumer, ConsumerRecord
from faststream.kafka import KafkaBroker

from schemas.models import PracticeConfig
from schemas.topics import Topics
from services.common.clock import Clock, SystemClock
from services.common.health import loops_alive
from services.common.kafka import check_partitions, make_consumer
from services.common.partitions import Batches, GroupMember
from services.common.practice_config import practice_config_table
from services.common.runtime import make_broker
from services.common.settings import Settings
from services.common.table import Table
from services.domain.partition import partition_for
from services.reminder_scheduler.due_time import DEFAULT_POLICY, Policy
from services.reminder_scheduler.firing import PartitionWorker, SchedulerContext

__all__ = ["FETCH_SIZES", "NAME", "SchedulerService"]

log = logging.getLogger(__name__)

# The service's name: its default group id, its transactional ids and its labels.
NAME: Final = "reminder-scheduler"
_RETRY_SECONDS = 1.0
# How the appointment consumer fetches (a reload reads whole partitions); bench/ reads its
# raw floor with the same sizes.
FETCH_SIZES: Final = {
    "max_poll_records": 5000,
    "fetch_max_bytes": 32 * 1024 * 1024,
    "max_partition_fetch_bytes": 8 * 1024 * 1024,
}


# A reload and a firing burst allocate millions of short-lived tracked objects (fetched
# records, timers, outgoing records) that live for one batch of thousands: collected
# every 700 allocations (the default) they were scanned again and again.
_YOUNG_COLLECTION_EVERY = 50_000


def freeze_heap() -> None:
    """Move what lives now into the collector's permanent generation: a full collection
    then scans only what was allocated since (a reload and a firing burst allocate
    millions of short-lived objects; each full collection scanned the whole heap).
    What an earlier freeze kept is looked at again first: a revoked partition's
    structures, cyclic through their tasks, are collected rather than kept for good."""
    gc.unfreeze()
    gc.collect()  # nothing unreachable goes into the frozen generation
    gc.freeze()
    young, older, oldest = gc.get_threshold()
    gc.set_threshold(max(young, _YOUNG_COLLECTION_EVERY), older, oldest)


class SchedulerService:
    """Holds one durable timer per booked appointment of the partitions it owns; the
    :class:`~services.common.partitions.PartitionHandler` of its group member."""

    name = NAME

    def __init__(self, settings: Settings, clock: Clock | None = None) -> None:
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self.topics = Topics(settings.kafka.topic_prefix)
        self.broker: KafkaBroker = make_broker(settings, NAME)
        self.group_id = f"{settings.kafka.topic_prefix}{settings.scheduler.group_id}"
        self.workers: dict[int, PartitionWorker] = {}
        self._policies: dict[str, Policy] = {}
        self._interned: dict[Policy, Policy] = {DEFAULT_POLICY: DEFAULT_POLICY}
        self._configs: Table[PracticeConfig] | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._member: GroupMember | None = None
        self._ctx: SchedulerContext | None = None
        self._partitions = 0
        self._configs_loaded = False
        self._assigned = False

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        kafka = self.settings.kafka
        topics = self.topics
        self._partitions = await check_partitions(
            kafka,
            [
                topics.appointments,
                topics.practice_config,
                topics.reminders_due,
                topics.reminders_fired,
                Topics.dlq(topics.appointments),
            ],
        )
        self._configs = practice_config_table(kafka, on_change=self._config_changed)
        await self._configs.start()
        # The group join and each partition's fencing and markers go on while the
        # configs load (about half a second for a few thousand practices); the workers
        # read no appointment before every practice's policy is known.
        self._consumer = make_consumer(
            kafka,
            group_id=self.group_id,
            session_timeout_ms=self.settings.scheduler.session_timeout_ms,
            heartbeat_interval_ms=self.settings.scheduler.heartbeat_interval_ms,
            **FETCH_SIZES,
        )
        self._ctx = SchedulerContext(
            settings=self.settings,
            topics=topics,
            clock=self.clock,
            partitions=self._partitions,
            consumer=self._consumer,
            policy_of=self.policy_of,
            on_loaded=self._partition_loaded,
        )
        self._member = GroupMember(
            self._consumer, [topics.appointments], self, name=NAME, retry_seconds=_RETRY_SECONDS
        )
        await self._member.start()
        try:
            await self._configs.wait_loaded()
        except BaseException:
            await self.stop()  # leave the group: nothing of it may go on without configs
            raise
        self._configs_loaded = True
        self._ctx.configs_loaded.set()
        freeze_heap()  # the modules, clients and configs: not scanned again by the load
        log.info(
            "scheduler started",
            extra={"group_id": self.group_id, "partitions": self._partitions},
        )

    async def stop(self) -> None:
        member = self._member
        if member is not None:
            member.cancel()
        await self.revoked(set(self.workers))
        if member is not None:
            await member.stop()
            self._member = self._consumer = None
        if self._configs is not None:
            await self._configs.stop()
            self._configs = None

    @property
    def failed(self) -> BaseException | None:
        return self._member.failed if self._member is not None else None

    def readiness(self) -> tuple[bool, dict[str, object]]:
        states = {str(p): w.state for p, w in sorted(self.workers.items())}
        ready = (
            self.failed is None
            and self._configs_loaded
            and self._assigned
            and all(w.state == "loaded" for w in self.workers.values())
        )
        details: dict[str, object] = {
            "practice_config_loaded": self._configs_loaded,
            "assigned": self._assigned,
            "partitions": states,
        }
        if self.failed is not None:
            details["error"] = str(self.failed)
        return ready, details

    def liveness(self) -> tuple[bool, dict[str, object]]:
        """/healthz: fails once the appointment consumer or the config table has died."""
        config = self._configs
        return loops_alive(
            {
                "appointments": self.failed,
                "practice-config": config.follower.failed if config is not None else None,
            }
        )

    def _partition_loaded(self) -> None:
        """Once every owned partition is loaded, what the load built (timers, caches,
        the clients) lives until the next reload: frozen out of the collector's way, the
        full collections of a firing burst scan only what the burst itself allocates
        (they took about a fifth of a burst's CPU, 0.1 s each, scanning the whole heap)."""
        if not any(worker.loading for worker in self.workers.values()):
            freeze_heap()

    # ------------------------------------------------------------------ policies
    def policy_of(self, practice_id: str) -> Policy:
        return self._policies.get(practice_id, DEFAULT_POLICY)

    def _config_changed(
        self, practice_id: str, old: PracticeConfig | None, new: PracticeConfig | None
    ) -> None:
        # Equal policies are one object, so the planners' caches share their entries.
        policy = Policy.from_config(new)
        policy = self._interned.setdefault(policy, policy)
        if policy == self.policy_of(practice_id):
            return
        if new is None:
            self._policies.pop(practice_id, None)
        else:
            self._policies[practice_id] = policy
        if not self._configs_loaded:
            return  # still loading the configs: nothing is planned yet
        worker = self.workers.get(partition_for(practice_id, self._partitions))
        if worker is not None:
            worker.replan_practice(practice_id)

    # ------------------------------------------------------------------ the handler
    def fetch_timeout_ms(self) -> int:
        return 100

    async def assigned(self, partitions: set[int]) -> None:
        ctx = self._ctx
        assert ctx is not None
        self._assigned = True
        for partition in sorted(partitions - set(self.workers)):
            worker = PartitionWorker(partition, ctx)
            ctx.consumer.pause(worker.tp)  # the worker fences before it reads
            self.workers[partition] = worker
            worker.start()
        log.info("partitions assigned", extra={"partitions": sorted(partitions)})

    async def revoked(self, partitions: set[int]) -> None:
        workers = [self.workers.pop(p) for p in sorted(partitions) if p in self.workers]
        await asyncio.gather(*(w.stop() for w in workers))
        if workers:
            gc.unfreeze()  # their structures may sit in the frozen generation: collectable
            log.info("partitions revoked", extra={"partitions": [w.partition for w in workers]})

    async def handle(self, batches: Batches) -> None:
        now = self.clock.now()
        for tp, records in batches.items():
            worker = self.workers.get(tp.partition)
            if worker is not None:
                await self._apply(worker, records, now)
        for worker in list(self.workers.values()):
            if worker.loading:
                await worker.check_loaded()

    async def _apply(
        self, worker: PartitionWorker, records: list[ConsumerRecord[bytes, bytes]], now: datetime
    ) -> None:
        letters = worker.apply_many(records, now)
        if letters:
            await worker.park(letters)
        worker.update_gauges()
        worker.wake()
