"""The practice configs as every service holds them, and publishing a new version.

The compacted ``practice.config.v1`` is read whole into the shared config table
(:func:`services.common.practice_config.practice_config_table`), so a page shows exactly
the config in force. A save publishes the next version on the practice's partition and
waits until the table has read it back, so the page after the save shows the save.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from aiokafka import AIOKafkaProducer

from schemas.models import PracticeConfig
from schemas.topics import Topics
from services.common.kafka import make_producer
from services.common.practice_config import practice_config_table
from services.common.publishing import publish_on_practice_partitions
from services.common.settings import KafkaSettings
from services.common.table import Table
from services.domain.codec import encode

__all__ = ["ConfigSource", "KafkaConfigStore", "VersionConflict"]


class VersionConflict(RuntimeError):
    """The save was made on an older version than the one in force."""

    def __init__(self, current: int) -> None:
        super().__init__(f"the config is at version {current}")
        self.current = current


class ConfigSource(Protocol):
    def get(self, practice_id: str) -> PracticeConfig | None: ...

    async def publish(self, config: PracticeConfig, based_on: int | None) -> PracticeConfig: ...

    def ready(self) -> bool: ...


class KafkaConfigStore:
    def __init__(self, settings: KafkaSettings, *, read_back_seconds: float = 15.0) -> None:
        self._settings = settings
        self._topic = Topics(settings.topic_prefix).practice_config
        self._table: Table[PracticeConfig] = practice_config_table(settings)
        self._producer: AIOKafkaProducer | None = None
        self._partitions = 0
        self._loaded = False
        self._read_back = read_back_seconds
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        await self._table.start()
        self._partitions = await self._table.follower.partition_count()
        self._producer = make_producer(self._settings)
        await self._producer.start()
        await self._table.wait_loaded()
        self._loaded = True

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
        await self._table.stop()

    def ready(self) -> bool:
        return self._loaded

    def get(self, practice_id: str) -> PracticeConfig | None:
        return self._table.get(practice_id)

    async def publish(self, config: PracticeConfig, based_on: int | None) -> PracticeConfig:
        """Publishes ``config`` as the version after ``based_on``, which must be in force.

        ``based_on`` None: the practice has no config yet (and must still have none).
        """
        assert self._producer is not None, "start() first"
        async with self._lock:
            current = self.get(config.practice_id)
            current_version = current.version if current is not None else None
            if current_version != based_on:
                raise VersionConflict(current_version or 0)
            version = (based_on if based_on is not None else 0) + 1
            new = config.model_copy(update={"version": version})
            await publish_on_practice_partitions(
                self._producer,
                self._topic,
                self._partitions,
                [(new.practice_id, new.practice_id, encode(new))],
            )
            await self._wait_for(new.practice_id, version)
            return new

    async def _wait_for(self, practice_id: str, version: int) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._read_back
        while loop.time() < deadline:
            found = self.get(practice_id)
            if found is not None and found.version >= version:
                return
            await asyncio.sleep(0.05)
        raise TimeoutError(f"the new config was not read back within {self._read_back:.0f} s")
