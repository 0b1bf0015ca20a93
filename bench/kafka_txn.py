"""What one Kafka transaction costs the broker's CPU, at a given pace.

    .venv/bin/python bench/kafka_txn.py --bootstrap HOST:PORT --broker-pid PID
                                        [--records 20] [--per-second 0,55] [--count 480]
                                        [--follower]

A floor for bench/notifier.py's "broker CPU per reminder": twelve transactional producers
(one per partition, as the notifier has) each run transactions of ``--records`` records of
300 bytes to their own partition plus a consumer-offset commit, the steps of the
notifier's commit (AddPartitionsToTxn, Produce, AddOffsetsToTxn, TxnOffsetCommit, EndTxn)
without its fetches and end-offset lookups. ``--per-second`` paces them (0: as fast as
they go); the notifier at batch 20 commits 50-65 transactions a second. One line per
pace: transactions per second, the broker's CPU per transaction and per record.
``--follower`` adds a read_committed consumer reading the twelve partitions back while
they are written, as the notifier's outcomes follower reads its own outcomes (2026-12-03:
it changed nothing, 2.1-3.4 ms per transaction unpaced with it, 2.8-4.7 without).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
import uuid
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `services` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import NewTopic

from bench.proc import cpu_seconds
from services.common.kafka import admin_client, make_consumer, make_producer
from services.common.settings import KafkaSettings

PARTITIONS = 12


async def _transactions(
    producers: list[AIOKafkaProducer], topic: str, records: int, count: int, pace: float
) -> None:
    """``count`` transactions spread over the producers; ``pace`` a second in all (0: free)."""
    gap = len(producers) / pace if pace else 0.0
    value = b"x" * 300

    async def one_partition(partition: int, producer: AIOKafkaProducer) -> None:
        for n in range(count // len(producers)):
            began = time.perf_counter()
            await producer.begin_transaction()
            sent = [
                await producer.send(topic, value, key=b"k", partition=partition)
                for _ in range(records)
            ]
            await producer.send_offsets_to_transaction(
                {TopicPartition(topic, partition): n + 1}, f"{topic}-group"
            )
            await asyncio.gather(*sent)
            await producer.commit_transaction()
            if gap:
                await asyncio.sleep(max(0.0, gap - (time.perf_counter() - began)))

    await asyncio.gather(*(one_partition(p, pr) for p, pr in enumerate(producers)))


async def _follow(consumer: AIOKafkaConsumer, stop: asyncio.Event) -> int:
    """Read the written partitions back (read_committed) until ``stop``: the records."""
    read = 0
    while not stop.is_set():
        batches = await consumer.getmany(timeout_ms=200)
        read += sum(len(records) for records in batches.values())
    return read


async def run(
    bootstrap: str,
    broker_pid: int,
    records: int,
    paces: list[float],
    count: int,
    follower: bool = False,
) -> None:

    settings = KafkaSettings(bootstrap_servers=bootstrap)
    topic = f"bench-txn-{uuid.uuid4().hex[:8]}"
    admin = admin_client(settings)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    finally:
        await admin.close()
    producers = [
        make_producer(settings, transactional_id=f"{topic}-{p}", linger_ms=0)
        for p in range(PARTITIONS)
    ]
    for producer in producers:
        await producer.start()
    consumer = None
    if follower:
        consumer = make_consumer(settings, group_id=None)
        await consumer.start()
        consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
    try:
        # warm-up: leaders, coordinators, the broker's JIT
        await _transactions(producers, topic, records, 5 * PARTITIONS, 0)
        for pace in paces:
            stop = asyncio.Event()
            following = asyncio.create_task(_follow(consumer, stop)) if consumer else None
            before = cpu_seconds(broker_pid)
            began = time.perf_counter()
            await _transactions(producers, topic, records, count, pace)
            elapsed = time.perf_counter() - began
            broker = cpu_seconds(broker_pid) - before
            stop.set()
            if following is not None:
                await following
            done = count // PARTITIONS * PARTITIONS
            print(
                f"{'unpaced' if not pace else f'paced at {pace:.0f}/s'}: {done / elapsed:,.0f} "
                f"transactions/s of {records} records; broker CPU {broker / done * 1e3:.2f} ms "
                f"per transaction, {broker / (done * records) * 1e3:.3f} ms per record",
                flush=True,
            )
    finally:
        if consumer is not None:
            await consumer.stop()
        for producer in producers:
            await producer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--broker-pid", type=int, required=True)
    parser.add_argument("--records", type=int, default=20)
    parser.add_argument("--per-second", default="0,55", help="paces, comma-separated")
    parser.add_argument("--count", type=int, default=480, help="transactions per pace")
    parser.add_argument(
        "--follower",
        action="store_true",
        help="a read_committed consumer reads the partitions back meanwhile (as the "
        "notifier's outcomes follower does)",
    )
    args = parser.parse_args()
    paces = [float(p) for p in args.per_second.split(",")]
    asyncio.run(
        run(args.bootstrap, args.broker_pid, args.records, paces, args.count, args.follower)
    )


if __name__ == "__main__":
    main()
