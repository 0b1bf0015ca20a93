"""Publishing keyed records on their practice's partition: the CLI and practice-admin."""

from __future__ import annotations

from collections.abc import Sequence

from aiokafka import AIOKafkaProducer

from services.domain.partition import partition_for

__all__ = ["publish_on_practice_partitions"]


async def publish_on_practice_partitions(
    producer: AIOKafkaProducer,
    topic: str,
    partitions: int,
    records: Sequence[tuple[str, str, bytes | None]],
) -> dict[str, int]:
    """Sends (practice_id, key, value) records and waits for each; returns key -> partition.

    ``value`` None is a tombstone. The partition is the practice's (DESIGN.md,
    Partitioning), so every topic keeps a practice's records together.
    """
    placed: dict[str, int] = {}
    for practice_id, key, value in records:
        partition = partition_for(practice_id, partitions)
        await producer.send_and_wait(
            topic, key=key.encode("utf-8"), value=value, partition=partition
        )
        placed[key] = partition
    return placed
