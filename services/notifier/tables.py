"""The state the notifier joins with each due reminder, read from Kafka.

- ``practice.config.v1``: every practice, all partitions, validated (templates checked
  in the sandbox); a refused config keeps the practice's last valid one in force.
- ``patient.preferences.v1`` and ``appointments.v1``: the owned partitions only.
- ``notifications.outcomes.v1``: the owned partitions, into the ledger.

Partitions assigned together are added to the followers together (within a short
window), because adding a partition to a follower costs a round of fetching for all.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from schemas.models import Appointment, PatientPreferences, PracticeConfig
from schemas.topics import Topics
from services.common.clock import Clock
from services.common.practice_config import practice_config_table
from services.common.settings import KafkaSettings
from services.common.table import EndOffsets, Table, TopicFollower
from services.notifier.dead_letters import PreferencesDeadLetters
from services.notifier.ledger import Ledger, LedgerBook

__all__ = ["NotifierTables"]

_Stoppable = Table[PracticeConfig] | Table[Appointment] | Table[PatientPreferences] | TopicFollower

# Partitions whose loads start within this window are added to the followers at once.
_COALESCE_SECONDS = 0.05


class NotifierTables:
    def __init__(
        self,
        settings: KafkaSettings,
        topics: Topics,
        clock: Clock,
        *,
        dead_letter_producer: AIOKafkaProducer,
        probe: AIOKafkaConsumer,
    ) -> None:
        self.letters = PreferencesDeadLetters(topics, dead_letter_producer, probe)
        # The same validation as everywhere (templates included); booking_events logs and
        # dead-letters rejected configs, so this table only keeps the last valid one.
        self.configs: Table[PracticeConfig] = practice_config_table(settings, log_rejections=False)
        self.preferences: Table[PatientPreferences] = Table(
            settings,
            topics.patient_preferences,
            PatientPreferences,
            key_of=lambda p: p.key,
            on_invalid=self.letters,
            name="notifier-preferences",
        )
        self.appointments: Table[Appointment] = Table(
            settings,
            topics.appointments,
            Appointment,
            key_of=lambda a: a.key,
            name="notifier-appointments",
        )
        self.ledgers = LedgerBook(clock.now)
        self.outcomes = TopicFollower(
            settings, topics.outcomes, self.ledgers.apply, name="notifier-ledger"
        )
        # One ListOffsets per round for the catch-up of all three tables (every batch of
        # every owned partition asks), instead of one per table and batch.
        ends = EndOffsets(settings)
        for follower in (
            self.configs.follower,
            self.preferences.follower,
            self.appointments.follower,
            self.outcomes,
        ):
            follower.share_end_offsets(ends)
        self._pending: dict[int, asyncio.Future[None]] = {}
        self._flusher: asyncio.Task[None] | None = None
        self._started: list[
            Table[PracticeConfig] | Table[Appointment] | Table[PatientPreferences] | TopicFollower
        ] = []

    async def start(self) -> None:
        """Start following; returns once every practice config is loaded."""
        await self.configs.start(None)
        self._started.append(self.configs)
        for table in (self.preferences, self.appointments):
            await table.start([])
            self._started.append(table)
        await self.outcomes.start()
        self._started.append(self.outcomes)
        await self.configs.wait_loaded()

    async def stop(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        for table in reversed(self._started):
            await table.stop()
        self._started.clear()

    def failures(self) -> dict[str, BaseException | None]:
        """The failure of each table's follower loop (None while it runs)."""
        return {
            "practice-config": self.configs.follower.failed,
            "preferences": self.preferences.follower.failed,
            "appointments": self.appointments.follower.failed,
            "outcomes": self.outcomes.failed,
        }

    # ------------------------------------------------------------------ partitions
    async def follow(self, partition: int, committed_offset: int, timeout: float) -> Ledger:
        """Follow the partition's preferences, appointments and outcomes; wait until
        they are loaded. Returns its ledger."""
        ledger = self.ledgers.get(partition)
        if ledger is None:
            ledger = self.ledgers.open(partition, committed_offset)
        else:
            ledger.committed(max(0, committed_offset))
        if partition not in self.outcomes.partitions:
            future = self._pending.get(partition)
            if future is None:
                future = asyncio.get_running_loop().create_future()
                self._pending[partition] = future
            if self._flusher is None or self._flusher.done():
                self._flusher = asyncio.create_task(self._flush(), name="notifier-tables-add")
            await asyncio.shield(future)
        await asyncio.gather(
            self.outcomes.wait_loaded([partition]),
            self.preferences.wait_loaded([partition]),
            self.appointments.wait_loaded([partition]),
        )
        # A ledger kept from an earlier assignment: take in what others committed since.
        await self.outcomes.catch_up([partition], timeout=timeout)
        return ledger

    async def unfollow(self, partitions: Iterable[int]) -> None:
        gone = set(partitions)
        await self.preferences.remove_partitions(gone)
        await self.appointments.remove_partitions(gone)
        await self.outcomes.remove(gone)
        for p in gone:
            self.ledgers.close(p)

    async def _flush(self) -> None:
        await asyncio.sleep(_COALESCE_SECONDS)
        batch, self._pending = self._pending, {}
        partitions = sorted(batch)
        try:
            for p in partitions:
                if p not in self.preferences.follower.partitions:
                    await self.letters.prepare(p)
            await self.preferences.add_partitions(partitions)
            await self.appointments.add_partitions(partitions)
            await self.outcomes.add(partitions)
        except Exception as exc:
            for future in batch.values():
                if not future.done():
                    future.set_exception(exc)
            return
        for future in batch.values():
            if not future.done():
                future.set_result(None)
        if self._pending:  # arrived while adding: another round
            self._flusher = asyncio.create_task(self._flush(), name="notifier-tables-add")

    async def catch_up(self, partition: int, timeout: float) -> bool:
        """Apply everything committed by now to the tables the decision reads."""
        results = await asyncio.gather(
            self.appointments.follower.catch_up([partition], timeout=timeout),
            self.preferences.follower.catch_up([partition], timeout=timeout),
            self.configs.follower.catch_up(self.configs.follower.partitions, timeout=timeout),
        )
        return all(results)
