"""One Kafka broker per test session, and per-test topic prefixes for isolation.

Broker, in this order: REMINDERS_TEST_KAFKA_BOOTSTRAP; else the project's local broker
(deploy/kafka/kafka-local, official jars from Maven Central); else testcontainers' Kafka
where a Docker engine answers. With CI=true a test that needs Kafka fails when none can
be had; it never skips.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest

from services.common.kafka import create_topics
from services.common.settings import KafkaSettings
from services.common.topics import Topics

TEST_PARTITIONS = 3


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _docker_answers() -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env().ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    external = os.environ.get("REMINDERS_TEST_KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    errors: list[str] = []
    try:
        from services.common.local_kafka import LocalKafka

        broker = LocalKafka()
        bootstrap = broker.start()
    except Exception as exc:
        errors.append(f"local broker: {exc}")
    else:
        try:
            yield bootstrap
        finally:
            broker.stop()
        return
    if _docker_answers():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer().with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    errors.append("testcontainers: no Docker engine answers")
    message = "no Kafka broker for the tests: " + "; ".join(errors)
    if _in_ci():
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@pytest.fixture
def topic_prefix() -> str:
    """A fresh prefix per test, so tests share the broker but never each other's data."""
    return f"t{uuid.uuid4().hex[:10]}."


@pytest.fixture
def kafka_settings(kafka_bootstrap: str, topic_prefix: str) -> KafkaSettings:
    return KafkaSettings(
        bootstrap_servers=kafka_bootstrap,
        topic_prefix=topic_prefix,
        partitions=TEST_PARTITIONS,
        client_id="reminders-test",
    )


@pytest.fixture
def topics(kafka_settings: KafkaSettings) -> Topics:
    return Topics(kafka_settings.topic_prefix)


@pytest.fixture
async def kafka_topics(kafka_settings: KafkaSettings) -> AsyncIterator[Topics]:
    """Every topic of the design, created under this test's prefix."""
    await create_topics(kafka_settings)
    yield Topics(kafka_settings.topic_prefix)


WaitFor = Callable[[Callable[[], bool], float], Awaitable[None]]
