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

from schemas.topics import Topics
from services.common.kafka import create_topics
from services.common.settings import KafkaSettings
from tests.support.ci import unavailable

TEST_PARTITIONS = 3


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
        from devkit.local_kafka import LocalKafka

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
    unavailable(message)


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


# --- the database: every DB test runs on SQLite and on a real PostgreSQL -------------------


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[object]:
    """One local PostgreSQL per test session (Debian's package, deploy/postgres/pg-local),
    or REMINDERS_TEST_POSTGRES_URL (an asyncpg URL of a superuser's database)."""
    external = os.environ.get("REMINDERS_TEST_POSTGRES_URL")
    if external:
        yield external
        return
    from devkit.local_postgres import LocalPostgres

    server = LocalPostgres()
    try:
        server.start()
    except Exception as exc:
        message = f"no PostgreSQL for the tests: {exc}"
        unavailable(message)
    try:
        yield server
    finally:
        server.stop()


def _fresh_postgres_database(server: object) -> str:
    from devkit.local_postgres import LocalPostgres

    name = f"t_{uuid.uuid4().hex[:12]}"
    if isinstance(server, LocalPostgres):
        return server.create_database(name)
    import asyncio

    import asyncpg  # type: ignore[import-untyped]
    from sqlalchemy import make_url

    admin = make_url(str(server))

    async def create() -> None:
        conn = await asyncpg.connect(
            host=admin.host,
            port=admin.port,
            user=admin.username,
            password=admin.password,
            database=admin.database,
        )
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    asyncio.run(create())
    return admin.set(database=name).render_as_string(hide_password=False)


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_db_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The URL of a new, empty database (no schema), on each backend."""
    request.applymarker(pytest.mark.db)
    if request.param == "sqlite":
        path = tmp_path_factory.mktemp("db") / "reminders.sqlite3"
        return f"sqlite+aiosqlite:///{path}"
    server = request.getfixturevalue("postgres_server")
    return _fresh_postgres_database(server)


@pytest.fixture
async def db_engine(empty_db_url: str) -> AsyncIterator[object]:
    """An engine on a fresh database with every migration applied."""
    from services.common.db import create_engine, upgrade

    engine = create_engine(empty_db_url)
    await upgrade(engine)
    try:
        yield engine
    finally:
        await engine.dispose()


@pytest.fixture
def db_url(empty_db_url: str, db_engine: object) -> str:
    """The URL of a fresh database with every migration applied (same one as db_engine)."""
    return empty_db_url
