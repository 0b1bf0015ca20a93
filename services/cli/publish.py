"""``reminders publish appointment FILE``: the kit for HIS connector developers.

Validates one event (native AppointmentEvent JSON or a FHIR R4 Appointment) with exactly
the code booking_events runs, prints the verdict, and publishes it to
``his.appointments.v1`` keyed by the practice id (FHIR with the header
``content-type: application/fhir+json``), so a vendor can try their output against a
test cluster. An invalid event is not published: the reason is printed and the exit
status is 2. Examples: ``deploy/examples/his/``.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from services.cli._base import CliError, add_kafka_options, run_async, settings_from

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[Any]) -> None:
    publish = sub.add_parser(
        "publish",
        help="publish a record by hand (connector development, tests)",
    )
    psub = publish.add_subparsers(dest="publish_command", metavar="RECORD", required=True)
    appointment = psub.add_parser(
        "appointment",
        help="validate an HIS appointment event and publish it to his.appointments.v1",
        description=(
            "Validate FILE (native AppointmentEvent JSON, or a FHIR R4 Appointment: detected "
            "by resourceType, or --fhir) exactly as booking_events would, then publish it to "
            "his.appointments.v1 with the practice id as key. Exit status 2 and the reason "
            "when the event would be refused. FILE '-' reads standard input."
        ),
    )
    appointment.add_argument("file", metavar="FILE", help="the event as JSON ('-': stdin)")
    appointment.add_argument(
        "--fhir", action="store_true", help="treat FILE as a FHIR R4 Appointment"
    )
    appointment.add_argument(
        "--dry-run", action="store_true", help="validate and print, do not publish"
    )
    add_kafka_options(appointment)
    appointment.set_defaults(handler=_appointment)


def _read(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from exc


def _looks_fhir(value: bytes) -> bool:
    try:
        document = json.loads(value)
    except ValueError:
        return False
    return isinstance(document, dict) and document.get("resourceType") == "Appointment"


def _appointment(args: argparse.Namespace) -> int:
    from services.domain.classify import classify
    from services.domain.codec import DecodeError
    from services.domain.his_events import FHIR_CONTENT_TYPE, parse_event
    from services.domain.partition import partition_for

    settings = settings_from(args)
    value = _read(args.file)
    fhir = bool(args.fhir) or _looks_fhir(value)
    try:
        event = parse_event(value, fhir=fhir, received_at=datetime.now(UTC))
    except DecodeError as exc:
        print(f"invalid ({exc.reason}): {exc.detail}", file=sys.stderr)
        return 2
    meeting = classify(event, None)
    kind = "FHIR R4 Appointment" if fhir else "AppointmentEvent"
    print(
        f"valid {kind}: practice {event.practice_id}, appointment {event.appointment_id}, "
        f"sequence {event.sequence}, status {event.status}"
    )
    if meeting.is_meeting:
        print(f"classified as a meeting (rule {meeting.rule}: {meeting.matched}): never reminded")
    if args.dry_run:
        return 0

    topic = f"{settings.kafka.topic_prefix}his.appointments.v1"
    headers = [("content-type", FHIR_CONTENT_TYPE.encode())] if fhir else []

    async def go() -> int:
        from aiokafka.errors import KafkaError

        from services.common.kafka import make_producer

        producer = make_producer(settings.kafka, request_timeout_ms=15000)
        try:
            await producer.start()
            partitions = await producer.partitions_for(topic)
            if not partitions:
                raise CliError(f"topic {topic} does not exist; run `reminders topics create`")
            # Key only: Kafka's default partitioner puts the event on its practice's
            # partition, as any HIS connector's client does.
            metadata = await producer.send_and_wait(
                topic, value, key=event.practice_id.encode("utf-8"), headers=headers
            )
        except KafkaError as exc:
            raise CliError(
                f"cannot publish to Kafka at {settings.kafka.bootstrap_servers}: {exc}", code=1
            ) from exc
        finally:
            await producer.stop()
        expected = partition_for(event.practice_id, len(partitions))
        print(
            f"published to {topic} partition {metadata.partition} offset {metadata.offset} "
            f"(key {event.practice_id})"
        )
        if metadata.partition != expected:
            raise CliError(
                f"the event landed on partition {metadata.partition}, not {expected}", code=1
            )
        return 0

    return run_async(go())
