"""The shared database: migrations on SQLite and PostgreSQL, and refusing an old schema."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.db import (
    SchemaOutdated,
    check_database,
    create_engine,
    require_current_schema,
    schema_status,
    upgrade,
)
from services.common.settings import DatabaseSettings

pytestmark = pytest.mark.db


async def test_upgrade_is_idempotent_and_makes_the_schema_current(empty_db_url: str) -> None:
    engine = create_engine(empty_db_url)
    try:
        before = await schema_status(engine)
        assert not before.ok and "reminders db upgrade" in before.describe()
        first = await upgrade(engine)
        second = await upgrade(engine)
        assert first.ok and second.ok
        assert first.current == second.current == first.expected
        await require_current_schema(engine)
    finally:
        await engine.dispose()


async def test_a_service_refuses_an_older_schema_and_names_the_command(
    db_engine: AsyncEngine,
) -> None:
    async with db_engine.begin() as conn:
        await conn.execute(text("DELETE FROM alembic_version"))
    with pytest.raises(SchemaOutdated, match=r"reminders db upgrade"):
        await require_current_schema(db_engine)


async def test_check_database_reports_without_the_password(empty_db_url: str) -> None:
    ok, line = await check_database(DatabaseSettings(url=empty_db_url))  # type: ignore[arg-type]
    assert not ok and "reminders db upgrade" in line
    bad = "postgresql+asyncpg://someone:s3cret-pw@127.0.0.1:1/nothing"
    ok, line = await check_database(DatabaseSettings(url=bad))  # type: ignore[arg-type]
    assert not ok and "cannot connect" in line and "s3cret-pw" not in line


def test_cli_db_upgrade_then_status(empty_db_url: str) -> None:
    env = {**os.environ, "REMINDERS_DATABASE__URL": empty_db_url}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "services.cli", "db", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    status = cli("status")
    assert status.returncode == 1 and "reminders db upgrade" in status.stdout
    up = cli("upgrade")
    assert up.returncode == 0, up.stderr
    assert "schema current" in up.stdout
    assert cli("upgrade").returncode == 0
    assert cli("status").returncode == 0
