"""The partition rule must agree with Kafka's default partitioner, byte for byte."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given
from hypothesis import strategies as st

from services.domain.partition import murmur2, partition_for

# Known values of Kafka's Java murmur2 (from the Kafka client's own unit test).
JAVA_MURMUR2 = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


def test_murmur2_matches_the_java_client() -> None:
    for data, expected in JAVA_MURMUR2.items():
        assert murmur2(data) == expected


@given(st.text(max_size=40), st.sampled_from([1, 3, 6, 12, 24, 100]))
def test_partition_matches_aiokafka_default_partitioner(practice_id: str, n: int) -> None:
    key = practice_id.encode()
    expected = DefaultPartitioner()(key, list(range(n)), list(range(n)))
    assert partition_for(practice_id, n) == expected


def test_known_practices_land_where_kafka_puts_them() -> None:
    # AGB-like practice codes and the partition Kafka's default partitioner gives them.
    partitioner = DefaultPartitioner()
    for practice in ("01999001", "01999002", "01999003", "practice-a"):
        parts = list(range(12))
        assert partition_for(practice, 12) == partitioner(practice.encode(), parts, parts)
