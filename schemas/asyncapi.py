"""The AsyncAPI 3.0 document of every topic, generated with FastStream, and its drift check.

A FastStream ``KafkaBroker`` that is never connected declares one operation per topic of
``Topics()``: ``receive`` for what other systems write (HIS connectors, the practice admin,
the patient portal), ``send`` for what the services write. FastStream turns the pydantic
models into the message schemas; what it cannot say yet (Kafka keys, the DLQ headers, the
FHIR alternative on ``his.appointments.v1``, topic settings) is added to its output here.

    python -m schemas.asyncapi          write schemas/asyncapi.json
    python -m schemas.asyncapi --check  exit 1 if the file is missing or out of date
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from faststream.kafka import KafkaBroker
from faststream.specification import AsyncAPI

from schemas.models import (
    Appointment,
    AppointmentEvent,
    FiredMarker,
    Outcome,
    PatientPreferences,
    PracticeConfig,
    ReminderDue,
)
from schemas.reasons import DEAD_LETTER_REASONS
from schemas.topics import Topics

__all__ = ["ASYNCAPI_PATH", "build", "drifted", "render", "write"]

ASYNCAPI_PATH = Path(__file__).parent / "asyncapi.json"

TITLE = "e-afspraken reminders"
DESCRIPTION = (
    "Kafka topics of the appointment reminder pipeline for Dutch general practices. "
    "Every topic except practice.config.v1 is partitioned by practice id (murmur2 of the "
    "practice id bytes) and all topics share one partition count. Topic names may carry a "
    "deployment prefix (REMINDERS_KAFKA__TOPIC_PREFIX). Records are JSON; times are "
    "RFC 3339 with an offset. Field names are contracts: they are extended, never renamed."
)
_BINDING_VERSION = "0.4.0"
_DLQ_HEADERS = {
    "error-reason": "why the record was refused, a short code (schemas/reasons.py)",
    "error-detail": "a human-readable detail, without personal data",
    "source-topic": "the topic the record was read from",
    "source-partition": "its partition (decimal)",
    "source-offset": "its offset (decimal)",
}


def _dlq_header(name: str, description: str) -> dict[str, Any]:
    header: dict[str, Any] = {"type": "string", "description": description}
    if name == "error-reason":
        header["enum"] = list(DEAD_LETTER_REASONS)
    return header


def _key(description: str) -> dict[str, Any]:
    return {"type": "string", "description": description}


_PRACTICE_KEY = _key("{practice_id}: the AGB code of the practice")
_APPOINTMENT_KEY = _key(
    "{practice_id}/{appointment_id}; partition set explicitly to partition_for(practice_id)"
)
_PATIENT_KEY = _key(
    "{practice_id}/{patient_id}; partition set explicitly to partition_for(practice_id)"
)


def _topics() -> list[dict[str, Any]]:
    """Each topic: name, payload model, direction, description, key, tombstone meaning."""
    t = Topics()
    return [
        {
            "topic": t.his_appointments,
            "model": AppointmentEvent,
            "receive": True,
            "key": _key("{practice_id}: any client with Kafka's default partitioner lands it"),
            "description": (
                "Appointment events from HIS connectors, native JSON (AppointmentEvent) or a "
                "FHIR R4 Appointment resource with header content-type: application/fhir+json. "
                "Read by booking_events."
            ),
        },
        {
            "topic": t.appointments,
            "model": Appointment,
            "receive": False,
            "key": _APPOINTMENT_KEY,
            "description": (
                "Current state of each appointment, written by booking_events, read by the "
                "scheduler (timers) and the notifier (state at send time). A tombstone removes "
                "an appointment that ended more than the retention ago."
            ),
        },
        {
            "topic": t.practice_config,
            "model": PracticeConfig,
            "receive": True,
            "key": _PRACTICE_KEY,
            "description": (
                "Per-practice settings, written by the practice administration. A tombstone "
                "means the defaults (reminders off). Read whole by every service; an invalid "
                "config is refused and the last valid one stays in force."
            ),
        },
        {
            "topic": t.patient_preferences,
            "model": PatientPreferences,
            "receive": True,
            "key": _PATIENT_KEY,
            "description": (
                "Patients' consent and channels, written by the patient portal. No record or "
                "a tombstone means no consent. Read by the notifier."
            ),
        },
        {
            "topic": t.reminders_due,
            "model": ReminderDue,
            "receive": False,
            "key": _APPOINTMENT_KEY,
            "description": (
                "One record per booked appointment and start time when its reminder falls "
                "due, written by the scheduler in a transaction with reminders.fired.v1. "
                "Read by the notifier."
            ),
        },
        {
            "topic": t.reminders_fired,
            "model": FiredMarker,
            "receive": False,
            "key": _APPOINTMENT_KEY,
            "description": (
                "Scheduler-internal: what fired for which start time, so a restart or a "
                "partition move does not fire twice."
            ),
        },
        {
            "topic": t.outcomes,
            "model": Outcome,
            "receive": False,
            "key": _APPOINTMENT_KEY,
            "description": (
                "Exactly one outcome per due reminder (sent, suppressed or failed, with the "
                "reason), committed by the notifier with its offsets: the ledger of what was "
                "sent, for audit and follow-up."
            ),
        },
    ]


def build() -> AsyncAPI:
    """The FastStream specification object for all topics (the broker is never connected)."""
    broker = KafkaBroker(
        "kafka:9092",
        description="the cluster's bootstrap servers (REMINDERS_KAFKA__BOOTSTRAP_SERVERS)",
    )
    for entry in _topics():
        topic = entry["topic"]
        if entry["receive"]:
            _subscribe(broker, topic, entry["model"], entry["description"])
        else:
            broker.publisher(
                topic, title=topic, schema=entry["model"], description=entry["description"]
            )
    for source in Topics().inputs():
        dlq = Topics.dlq(source)
        broker.publisher(
            dlq,
            title=dlq,
            schema=bytes,
            description=(
                f"Records refused on {source}: the original key and bytes, the reason in the "
                "headers. Written by the one service that owns invalid records of that topic."
            ),
        )
    return AsyncAPI(
        broker,
        title=TITLE,
        version=_project_version(),
        description=DESCRIPTION,
        license={"name": "EUPL-1.2", "url": "https://eupl.eu/1.2/en/"},
    )


def _subscribe(broker: KafkaBroker, topic: str, model: type[Any], description: str) -> None:
    # FastStream reads the payload schema from the handler's annotation.
    async def handler(record: Any) -> None:  # pragma: no cover - never called
        del record

    handler.__annotations__["record"] = model
    broker.subscriber(topic, title=topic, description=description)(handler)


def _project_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("e-afspraken-reminders")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0.0.0"


def _complete(doc: dict[str, Any]) -> dict[str, Any]:
    """Add what FastStream's generator does not express: keys, headers, topic settings."""
    by_topic = {entry["topic"]: entry for entry in _topics()}
    specs = {spec.name: spec.config for spec in Topics().specs()}
    messages = doc["components"]["messages"]
    for name, channel in doc["channels"].items():
        topic = channel["address"]
        channel["bindings"]["kafka"]["topicConfiguration"] = _topic_configuration(specs[topic])
        for ref in channel["messages"].values():
            message = messages[ref["$ref"].rsplit("/", 1)[1]]
            # FastStream's own correlation header: these records carry none.
            message.pop("correlationId", None)
            message["contentType"] = "application/json"
            if topic in by_topic:
                key = by_topic[topic]["key"]
            else:
                key = _key("the original record's key")
                message["contentType"] = "application/octet-stream"
                message["headers"] = {
                    "type": "object",
                    "required": sorted(_DLQ_HEADERS),
                    "properties": {h: _dlq_header(h, d) for h, d in _DLQ_HEADERS.items()},
                }
            message["bindings"] = {"kafka": {"key": key, "bindingVersion": _BINDING_VERSION}}
        if topic == Topics().his_appointments:
            fhir = f"{name}:FhirAppointment"
            messages[fhir] = {
                "title": fhir,
                "contentType": "application/fhir+json",
                "headers": {
                    "type": "object",
                    "required": ["content-type"],
                    "properties": {"content-type": {"const": "application/fhir+json"}},
                },
                "payload": {
                    "type": "object",
                    "description": (
                        "A FHIR R4 Appointment resource (https://hl7.org/fhir/R4/appointment.html)"
                        ": id/identifier, status, start, end, appointmentType/serviceType, the "
                        "Patient, Practitioner and Location participants with required, and "
                        "meta.versionId or meta.lastUpdated as the sequence."
                    ),
                    "required": ["resourceType"],
                    "properties": {"resourceType": {"const": "Appointment"}},
                },
                "bindings": {
                    "kafka": {"key": by_topic[topic]["key"], "bindingVersion": _BINDING_VERSION}
                },
            }
            channel["messages"]["FhirAppointment"] = {"$ref": f"#/components/messages/{fhir}"}
            operation = doc["operations"][name]
            operation["messages"].append({"$ref": f"#/channels/{name}/messages/FhirAppointment"})
    return doc


def _topic_configuration(config: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {"cleanup.policy": [config["cleanup.policy"]]}
    for name in ("retention.ms", "delete.retention.ms"):
        if name in config:
            out[name] = int(config[name])
    return out


def render() -> str:
    doc = _complete(build().to_specification().to_jsonable())
    return json.dumps(doc, indent=2, ensure_ascii=False, sort_keys=True) + "\n"


def write(path: Path = ASYNCAPI_PATH) -> Path:
    path.write_text(render(), encoding="utf-8")
    return path


def drifted(path: Path = ASYNCAPI_PATH) -> bool:
    return not path.exists() or path.read_text(encoding="utf-8") != render()


if __name__ == "__main__":
    if "--check" in sys.argv[1:]:
        if drifted():
            print(
                f"{ASYNCAPI_PATH} is out of date: run python -m schemas.asyncapi", file=sys.stderr
            )
            sys.exit(1)
    else:
        print(write())
