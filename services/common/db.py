"""The database every web service shares: users, sessions, audit, HIS API clients, follow-up.

One SQLAlchemy 2 (async) engine per process from ``REMINDERS_DATABASE__URL``: the embedded
default ``sqlite+aiosqlite:///var/reminders.sqlite3`` needs nothing installed; production
uses ``postgresql+asyncpg://...``. The schema is Alembic's: ``reminders db upgrade`` applies
every branch (``upgrade heads``), and a service that finds an older schema refuses to start
with :class:`SchemaOutdated`, which names that command.

Each package adds its tables as its own Alembic branch on the baseline ``core_0001``
(``admin_0001``, ``gateway_0001``, ``insights_0001``), so packages never edit each other's
migrations. Never a patient's e-mail address, name or BSN in here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, MetaData, event, make_url
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase

from services.common.settings import DatabaseSettings

__all__ = [
    "Base",
    "SchemaOutdated",
    "SchemaStatus",
    "alembic_config",
    "check_database",
    "create_engine",
    "redacted_url",
    "require_current_schema",
    "schema_status",
    "session_factory",
    "upgrade",
]

MIGRATIONS = Path(__file__).resolve().parent / "migrations"

# Constraint names that are the same on every backend, so migrations can name them.
_NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """The declarative base of every table."""

    metadata = MetaData(naming_convention=_NAMING)


class SchemaOutdated(RuntimeError):
    """The database's schema is not the code's: the message says which command to run."""


@dataclass(frozen=True)
class SchemaStatus:
    current: frozenset[str]
    expected: frozenset[str]

    @property
    def ok(self) -> bool:
        return self.current == self.expected

    def describe(self) -> str:
        if self.ok:
            return f"schema current ({', '.join(sorted(self.current))})"
        if not self.current:
            return "no schema yet: run `reminders db upgrade`"
        missing = sorted(self.expected - self.current)
        unknown = sorted(self.current - self.expected)
        if unknown and not missing:
            return (
                f"schema is newer than this code ({', '.join(unknown)}): run the matching release"
            )
        missing_list = ", ".join(missing)
        return f"schema is older than the code (missing {missing_list}): run `reminders db upgrade`"


def _url_of(url_or_settings: str | URL | DatabaseSettings) -> URL:
    if isinstance(url_or_settings, DatabaseSettings):
        return make_url(url_or_settings.url.get_secret_value())
    return make_url(url_or_settings)


def redacted_url(url_or_settings: str | URL | DatabaseSettings) -> str:
    """The URL without its password, for logs and ``reminders check``."""
    return _url_of(url_or_settings).render_as_string(hide_password=True)


def create_engine(
    url_or_settings: str | URL | DatabaseSettings, *, echo: bool = False
) -> AsyncEngine:
    """An async engine; for SQLite, the file's folder is created and foreign keys enforced."""
    url = _url_of(url_or_settings)
    if isinstance(url_or_settings, DatabaseSettings):
        echo = echo or url_or_settings.echo
    kwargs: dict[str, Any] = {"echo": echo}
    if url.get_backend_name() == "sqlite":
        database = url.database or ""
        if database and database != ":memory:" and not database.startswith("file:"):
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        kwargs["connect_args"] = {"timeout": 30}
    else:
        kwargs["pool_pre_ping"] = True
    engine = create_async_engine(url, **kwargs)
    if url.get_backend_name() == "sqlite":
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


def alembic_config(attributes: Mapping[str, Any] | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("path_separator", "os")
    config.set_main_option("version_locations", str(MIGRATIONS / "versions"))
    config.attributes.update(attributes or {})
    return config


def _expected_heads() -> frozenset[str]:
    return frozenset(ScriptDirectory.from_config(alembic_config()).get_heads())


def _current_heads(connection: Connection) -> frozenset[str]:
    return frozenset(MigrationContext.configure(connection).get_current_heads())


def _upgrade(connection: Connection) -> None:
    from alembic import command

    command.upgrade(alembic_config({"connection": connection}), "heads")


async def upgrade(engine: AsyncEngine) -> SchemaStatus:
    """Applies every migration branch up to its head; idempotent."""
    async with engine.begin() as connection:
        await connection.run_sync(_upgrade)
    return await schema_status(engine)


async def schema_status(engine: AsyncEngine) -> SchemaStatus:
    async with engine.connect() as connection:
        current = await connection.run_sync(_current_heads)
    expected = await asyncio.to_thread(_expected_heads)
    return SchemaStatus(current=current, expected=expected)


async def require_current_schema(engine: AsyncEngine) -> None:
    """Raises :class:`SchemaOutdated` unless the database has exactly the code's schema."""
    status = await schema_status(engine)
    if not status.ok:
        raise SchemaOutdated(f"database {redacted_url(engine.url)}: {status.describe()}")


async def check_database(settings: DatabaseSettings) -> tuple[bool, str]:
    """For ``reminders check``: (ok, one line) without printing a password."""
    engine = create_engine(settings)
    try:
        status = await schema_status(engine)
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        password = _url_of(settings).password
        if password:
            reason = reason.replace(str(password), "***")
        return False, f"database {redacted_url(settings)}: cannot connect ({reason})"
    finally:
        await engine.dispose()
    return status.ok, f"database {redacted_url(settings)}: {status.describe()}"
