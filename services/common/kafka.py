"""Kafka plumbing shared by the services: clients, topic creation, checks, the DLQ."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.conn import create_conn
from aiokafka.errors import KafkaError, SaslAuthenticationFailed, UnsupportedSaslMechanismError

from schemas.topics import Topics, TopicSpec
from services.common.settings import KafkaSettings
from services.domain.codec import DecodeError

__all__ = [
    "DeadLetter",
    "KafkaUnavailable",
    "PartitionMismatch",
    "TopicsResult",
    "admin_client",
    "check_partitions",
    "create_topics",
    "dead_letter_headers",
    "describe_partitions",
    "explain_unreachable",
    "keep_trying_broker",
    "make_consumer",
    "make_producer",
    "note_dead_letter",
    "send_dead_letter",
    "transactional_id",
    "wait_for_broker",
]

log = logging.getLogger(__name__)

_TOPIC_ALREADY_EXISTS = 36


class KafkaUnavailable(RuntimeError):
    """The broker could not be reached or refused the request."""


class PartitionMismatch(RuntimeError):
    """Topics disagree on their partition count, so practices would be split wrongly."""


def _first_host(bootstrap: str) -> tuple[str, int]:
    first = bootstrap.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    return host.strip("[]") or first, int(port) if port.isdigit() else 9092


async def explain_unreachable(settings: KafkaSettings, exc: BaseException | None = None) -> str:
    """One line on why the brokers do not answer, naming the setting to look at.

    The client only says "Unable to bootstrap"; one direct connection to the first
    bootstrap server shows what actually failed (refused, TLS, SASL). Never a password.
    """
    where = settings.bootstrap_servers
    host, port = _first_host(where)
    params = settings.aiokafka_params()
    params.pop("bootstrap_servers", None)
    cause: BaseException | None = None
    try:
        conn = await asyncio.wait_for(
            create_conn(
                host, port, client_id=settings.client_id, request_timeout_ms=5000, **params
            ),
            timeout=10,
        )
        conn.close()
    except (OSError, KafkaError, TimeoutError, ssl.SSLError, ValueError) as error:
        cause = error
    if cause is None:
        if exc is None:
            return f"Kafka at {where} answers"
        return f"Kafka at {where} did not answer the request ({type(exc).__name__}: {exc})"
    user = settings.sasl_username or ""
    chain: list[BaseException] = []
    current: BaseException | None = cause
    while current is not None and len(chain) < 6:
        chain.append(current)
        current = current.__cause__ or current.__context__
    if any(isinstance(e, SaslAuthenticationFailed) for e in chain):
        return (
            f"Kafka at {where} rejected the SASL credentials of user {user!r} "
            f"({settings.sasl_mechanism}): check REMINDERS_KAFKA__SASL_USERNAME and "
            "REMINDERS_KAFKA__SASL_PASSWORD"
        )
    if any(isinstance(e, UnsupportedSaslMechanismError) for e in chain):
        return (
            f"Kafka at {where} does not offer SASL mechanism {settings.sasl_mechanism}: "
            "check REMINDERS_KAFKA__SASL_MECHANISM"
        )
    cert = next((e for e in chain if isinstance(e, ssl.SSLCertVerificationError)), None)
    if cert is not None:
        return (
            f"TLS certificate of Kafka at {where} is not trusted ({cert.verify_message}): "
            "set REMINDERS_KAFKA__SSL_CAFILE to the CA that signed it"
        )
    if any(isinstance(e, ssl.SSLError) for e in chain):
        return (
            f"TLS with Kafka at {where} failed: check REMINDERS_KAFKA__SECURITY_PROTOCOL "
            f"({settings.security_protocol}) against the listener on that port"
        )
    if any(isinstance(e, ConnectionRefusedError) for e in chain) or "refused" in str(cause):
        return (
            f"cannot reach Kafka at {where}: connection refused; check "
            "REMINDERS_KAFKA__BOOTSTRAP_SERVERS and that the broker runs"
        )
    return (
        f"cannot reach Kafka at {where} ({type(cause).__name__}: {cause}); check "
        "REMINDERS_KAFKA__BOOTSTRAP_SERVERS and REMINDERS_KAFKA__SECURITY_PROTOCOL"
    )


async def _answers(settings: KafkaSettings) -> None:
    admin = admin_client(settings)
    try:
        await admin.start()
        await admin.describe_cluster()
    finally:
        await admin.close()


async def keep_trying_broker(
    settings: KafkaSettings,
    on_failure: Callable[[str], None],
    *,
    first_delay: float = 1.0,
    max_delay: float = 30.0,
) -> None:
    """Wait until the brokers answer, however long: back off from `first_delay` to
    `max_delay` and report each failure's reason (an orchestrator restarts nothing)."""
    delay = first_delay
    while True:
        try:
            await _answers(settings)
            return
        except (KafkaError, OSError, TimeoutError) as exc:
            on_failure(await explain_unreachable(settings, exc))
        await asyncio.sleep(delay)
        delay = min(max_delay, delay * 2)


def transactional_id(settings: KafkaSettings, group_id: str, partition: int) -> str:
    """The transactional id of the producer that owns `partition` for a service:
    ``{topic_prefix}{group_id}-p{partition}``, where `group_id` is the service's
    configured group id (``REMINDERS_<SERVICE>__GROUP_ID``, without the prefix).

    Every service derives it here, so instances with the same settings fence each other
    (and only each other), and the prefixed ``transactional_id`` ACL on the consumer
    group's name (kafka_acl.py) covers it."""
    return f"{settings.topic_prefix}{group_id}-p{partition}"


def make_producer(settings: KafkaSettings, **overrides: Any) -> AIOKafkaProducer:
    """An idempotent producer (acks=all): retries never write a record twice."""
    params: dict[str, Any] = {
        **settings.aiokafka_params(),
        "client_id": settings.client_id,
        "enable_idempotence": True,
        "acks": "all",
        "linger_ms": 5,
    }
    params.update(overrides)
    return AIOKafkaProducer(**params)


def make_consumer(
    settings: KafkaSettings, *topics: str, group_id: str | None = None, **overrides: Any
) -> AIOKafkaConsumer:
    """A consumer that only sees committed transactional data and commits by hand."""
    params: dict[str, Any] = {
        **settings.aiokafka_params(),
        "client_id": settings.client_id,
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "isolation_level": "read_committed",
    }
    params.update(overrides)
    return AIOKafkaConsumer(*topics, **params)


def admin_client(settings: KafkaSettings) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(**settings.aiokafka_params(), client_id=settings.client_id)


@dataclass
class TopicsResult:
    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    # Existing topics whose partition count is not the one asked for: name -> count.
    disagreeing: dict[str, int] = field(default_factory=dict)


async def create_topics(
    settings: KafkaSettings, specs: Sequence[TopicSpec] | None = None
) -> TopicsResult:
    """Create every topic of DESIGN.md; topics that exist already are left as they are."""
    specs = list(specs if specs is not None else Topics(settings.topic_prefix).specs())
    admin = admin_client(settings)
    result = TopicsResult()
    try:
        await admin.start()
        response = await admin.create_topics(
            [
                NewTopic(
                    name=s.name,
                    num_partitions=settings.partitions,
                    replication_factor=settings.replication_factor,
                    topic_configs=s.config,
                )
                for s in specs
            ]
        )
        for topic_error in response.topic_errors:
            name, code = topic_error[0], topic_error[1]
            message = topic_error[2] if len(topic_error) > 2 else ""
            if code == 0:
                result.created.append(name)
            elif code == _TOPIC_ALREADY_EXISTS:
                result.existing.append(name)
            else:
                raise KafkaUnavailable(f"creating topic {name} failed: error {code} {message}")
    except KafkaError as exc:
        raise KafkaUnavailable(
            f"cannot reach Kafka at {settings.bootstrap_servers}: {exc}"
        ) from exc
    finally:
        await admin.close()
    if result.existing:
        counts = await describe_partitions(settings, result.existing)
        result.disagreeing = {
            name: n for name, n in counts.items() if n and n != settings.partitions
        }
    return result


async def describe_partitions(settings: KafkaSettings, topics: Iterable[str]) -> dict[str, int]:
    """Partition count per topic; a missing topic has 0."""
    admin = admin_client(settings)
    try:
        await admin.start()
        described = await admin.describe_topics(list(topics))
    except KafkaError as exc:
        raise KafkaUnavailable(
            f"cannot reach Kafka at {settings.bootstrap_servers}: {exc}"
        ) from exc
    finally:
        await admin.close()
    # Error 3 is UNKNOWN_TOPIC_OR_PARTITION; others (e.g. a leader still being elected just
    # after creation) still list the partitions.
    return {t["topic"]: (0 if t["error_code"] == 3 else len(t["partitions"])) for t in described}


async def check_partitions(settings: KafkaSettings, topics: Iterable[str]) -> int:
    """Refuse to run when topics are missing or disagree on their partition count."""
    names = list(topics)
    counts = await describe_partitions(settings, names)
    # Metadata of a topic created a moment ago may not have reached the broker yet.
    for _ in range(20):
        if all(counts.values()):
            break
        await asyncio.sleep(0.25)
        counts = await describe_partitions(settings, names)
    missing = sorted(t for t, n in counts.items() if n == 0)
    if missing:
        raise PartitionMismatch(
            f"topics missing: {', '.join(missing)}; run `reminders topics create` first"
        )
    distinct = set(counts.values())
    if len(distinct) != 1:
        listing = ", ".join(f"{t}={n}" for t, n in sorted(counts.items()))
        raise PartitionMismatch(
            "topics must all have the same partition count, so that partition p holds the same "
            f"practices everywhere; found {listing}"
        )
    return distinct.pop()


@dataclass(frozen=True)
class DeadLetter:
    source_topic: str
    source_partition: int
    source_offset: int
    key: bytes | None
    value: bytes | None
    reason: str
    detail: str

    @classmethod
    def of(cls, record: ConsumerRecord[bytes, bytes], error: DecodeError) -> DeadLetter:
        """The dead letter for a record that could not be accepted, with the reason."""
        return cls(
            source_topic=record.topic,
            source_partition=record.partition,
            source_offset=record.offset,
            key=record.key,
            value=record.value,
            reason=error.reason,
            detail=error.detail,
        )


def dead_letter_headers(letter: DeadLetter) -> list[tuple[str, bytes]]:
    return [
        ("error-reason", letter.reason.encode()),
        ("error-detail", letter.detail[:2000].encode("utf-8", "replace")),
        ("source-topic", letter.source_topic.encode()),
        ("source-partition", str(letter.source_partition).encode()),
        ("source-offset", str(letter.source_offset).encode()),
    ]


async def send_dead_letter(producer: AIOKafkaProducer, letter: DeadLetter) -> None:
    """Park a bad record with its reason; it keeps its key and lands on the same partition."""
    await producer.send_and_wait(
        Topics.dlq(letter.source_topic),
        value=letter.value,
        key=letter.key,
        partition=letter.source_partition,
        headers=dead_letter_headers(letter),
    )
    note_dead_letter(letter)


def note_dead_letter(letter: DeadLetter) -> None:
    """Count and log a record parked in a DLQ (ids and the reason, never the contents)."""
    # Imported here: the metrics module imports this one (for its lag monitor).
    from services.common.metrics import count_dead_letter

    count_dead_letter(letter.source_topic, letter.reason)
    log.warning(
        "record sent to dead-letter topic",
        extra={
            "source_topic": letter.source_topic,
            "source_partition": letter.source_partition,
            "source_offset": letter.source_offset,
            "error_reason": letter.reason,
        },
    )


async def wait_for_broker(settings: KafkaSettings, timeout: float = 60.0) -> None:
    """Wait until the broker answers a metadata request."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        admin = admin_client(settings)
        try:
            await admin.start()
            await admin.list_topics()
            return
        except KafkaError as exc:
            if asyncio.get_running_loop().time() > deadline:
                raise KafkaUnavailable(
                    f"Kafka at {settings.bootstrap_servers} did not answer: {exc}"
                ) from exc
            await asyncio.sleep(0.5)
        finally:
            await admin.close()
