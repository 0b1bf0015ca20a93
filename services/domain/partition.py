"""The partition rule: a practice is the unit of sharding.

Every topic except ``practice.config.v1`` is partitioned by the practice id with Kafka's
default partitioner (murmur2 of the key bytes), so any Kafka client's default
partitioner lands an HIS event keyed by the practice id on the same partition as this
function computes for the practice's compacted records.
"""

from __future__ import annotations

from functools import lru_cache

__all__ = ["murmur2", "partition_for"]

_M = 0x5BD1E995
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 (seed 0x9747b28c), as a signed 32-bit int like the Java client."""
    length = len(data)
    h = (0x9747B28C ^ length) & _MASK
    rounded = length & ~3
    for i in range(0, rounded, 4):
        k = data[i] | (data[i + 1] << 8) | (data[i + 2] << 16) | (data[i + 3] << 24)
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = (h * _M) & _MASK
        h ^= k
    extra = length & 3
    if extra == 3:
        h ^= data[rounded + 2] << 16
    if extra >= 2:
        h ^= data[rounded + 1] << 8
    if extra >= 1:
        h ^= data[rounded]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


# Practices are few and every record names one: murmur2 in Python is kept per practice.
@lru_cache(maxsize=65_536)
def partition_for(practice_id: str, partitions: int) -> int:
    """The partition of every record of this practice (Kafka's ``toPositive(murmur2) % n``)."""
    if partitions < 1:
        raise ValueError("partitions must be at least 1")
    return (murmur2(practice_id.encode("utf-8")) & 0x7FFFFFFF) % partitions
