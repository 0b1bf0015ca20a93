"""``reminders topics ...`` and ``reminders partition``: Kafka administration."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from schemas.topics import Topics
from services.cli._base import CliError, add_kafka_options, run_async, settings_from
from services.common.kafka import KafkaUnavailable, create_topics, describe_partitions
from services.common.settings import KafkaSettings
from services.domain.partition import partition_for

_PROBE_SECONDS = 10.0


def register(sub: argparse._SubParsersAction[Any]) -> None:
    topics = sub.add_parser("topics", help="create and list the Kafka topics")
    tsub = topics.add_subparsers(dest="topics_command", metavar="ACTION", required=True)

    create = tsub.add_parser(
        "create",
        help="create every topic of the design (idempotent)",
        description=(
            "Create every topic with its cleanup policy and retention. Topics that exist "
            "already are left as they are and listed as existing."
        ),
    )
    add_kafka_options(create)
    create.add_argument(
        "--partitions",
        type=int,
        help="partitions per topic (default: REMINDERS_KAFKA__PARTITIONS, 12)",
    )
    create.set_defaults(handler=_create)

    listing = tsub.add_parser("list", help="list the topics of the design and their partitions")
    add_kafka_options(listing)
    listing.set_defaults(handler=_list)

    part = sub.add_parser(
        "partition",
        help="the partition of a practice (for the portal's preferences publisher)",
        description=(
            "Print the partition that every record of PRACTICE_ID belongs to: Kafka's murmur2 "
            "default partitioner applied to the practice id."
        ),
    )
    part.add_argument("practice_id", metavar="PRACTICE_ID")
    part.add_argument(
        "--partitions",
        type=int,
        help=(
            "partition count (default: the count of the topics on the broker, or "
            "REMINDERS_KAFKA__PARTITIONS when the broker cannot be reached)"
        ),
    )
    add_kafka_options(part)
    part.set_defaults(handler=_partition)


def _create(args: argparse.Namespace) -> int:
    settings = settings_from(args)

    async def go() -> int:
        try:
            result = await create_topics(settings.kafka)
        except KafkaUnavailable as exc:
            raise CliError(str(exc), code=1) from exc
        asked = settings.kafka.partitions
        for name in result.created:
            print(f"created  {name} ({asked} partitions)")
        for name in result.existing:
            if name in result.disagreeing:
                print(f"DIFFERS  {name} has {result.disagreeing[name]} partitions, not {asked}")
            else:
                print(f"existing {name} ({asked} partitions)")
        if result.disagreeing:
            counts = sorted(set(result.disagreeing.values()))
            raise CliError(
                f"{len(result.disagreeing)} existing topics have "
                f"{' or '.join(map(str, counts))} partitions, not the {asked} asked for; Kafka "
                "cannot shrink a topic and growing one moves practices to other partitions: "
                f"use --partitions {counts[0]} (or REMINDERS_KAFKA__PARTITIONS), or recreate "
                "the topics",
                code=1,
            )
        return 0

    return run_async(go())


def _list(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    names = [s.name for s in Topics(settings.kafka.topic_prefix).specs()]

    async def go() -> int:
        try:
            counts = await describe_partitions(settings.kafka, names)
        except KafkaUnavailable as exc:
            raise CliError(str(exc), code=1) from exc
        print(json.dumps(counts, indent=2))
        return 0 if all(counts.get(n, 0) for n in names) else 1

    return run_async(go())


def _partition(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    practice_id = args.practice_id.strip()
    if not practice_id:
        raise CliError("PRACTICE_ID is empty")
    count = args.partitions or run_async(_topic_partitions(settings.kafka))
    print(partition_for(practice_id, count))
    return 0


async def _topic_partitions(kafka: KafkaSettings) -> int:
    """The partition count of the topics on the broker; the setting when it cannot say."""
    topics = Topics(kafka.topic_prefix)
    try:
        async with asyncio.timeout(_PROBE_SECONDS):
            counts = await describe_partitions(
                kafka, [topics.appointments, topics.his_appointments, topics.reminders_due]
            )
    except (KafkaUnavailable, TimeoutError):
        print(
            f"note: Kafka at {kafka.bootstrap_servers} did not answer; using "
            f"REMINDERS_KAFKA__PARTITIONS={kafka.partitions}",
            file=sys.stderr,
        )
        return kafka.partitions
    distinct = {n for n in counts.values() if n}
    if len(distinct) == 1:
        return distinct.pop()
    if not distinct:
        print(
            f"note: the topics do not exist yet; using REMINDERS_KAFKA__PARTITIONS="
            f"{kafka.partitions}",
            file=sys.stderr,
        )
        return kafka.partitions
    listing = ", ".join(f"{t}={n}" for t, n in sorted(counts.items()))
    raise CliError(f"the topics disagree on their partition count ({listing}): fix that first")
