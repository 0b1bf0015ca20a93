"""practice-admin accounts on SQLite and PostgreSQL: the CLI and the rules behind it."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.db import SchemaOutdated, session_factory
from services.common.settings import Settings
from services.practice_admin.accounts import (
    AccountError,
    add_user,
    list_users,
    memberships_of,
    remove_user,
)
from services.practice_admin.app import AdminService, MissingSecret
from services.practice_admin.models import User, WebSession
from services.practice_admin.signin import SignIn

pytestmark = pytest.mark.db

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def _cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "REMINDERS_DATABASE__URL": url}
    return subprocess.run(
        [sys.executable, "-m", "services.cli", "admin", "user", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_user_add_list_remove(db_url: str) -> None:
    added = _cli(
        db_url,
        "add",
        "--email",
        "A@Praktijk.example",
        "--practice",
        "01999001",
        "--role",
        "beheerder",
    )
    assert added.returncode == 0 and "added: a@praktijk.example" in added.stdout
    again = _cli(
        db_url,
        "add",
        "--email",
        "a@praktijk.example",
        "--practice",
        "01999001",
        "--role",
        "beheerder",
    )
    assert "unchanged" in again.stdout
    _cli(
        db_url,
        "add",
        "--email",
        "a@praktijk.example",
        "--practice",
        "01999002",
        "--role",
        "medewerker",
    )
    listed = _cli(db_url, "list")
    assert listed.stdout.splitlines() == [
        "01999001\tbeheerder\ta@praktijk.example",
        "01999002\tmedewerker\ta@praktijk.example",
    ]
    only = _cli(db_url, "list", "--practice", "01999002")
    assert only.stdout.splitlines() == ["01999002\tmedewerker\ta@praktijk.example"]
    bad_role = _cli(db_url, "add", "--email", "b@x.example", "--practice", "1", "--role", "baas")
    assert bad_role.returncode == 2
    bad_mail = _cli(db_url, "add", "--email", "nope", "--practice", "1", "--role", "medewerker")
    assert bad_mail.returncode == 2 and "e-mail" in bad_mail.stderr
    removed = _cli(db_url, "remove", "--email", "a@praktijk.example", "--practice", "01999001")
    assert removed.returncode == 0
    assert _cli(db_url, "list").stdout.splitlines() == ["01999002\tmedewerker\ta@praktijk.example"]
    assert _cli(db_url, "remove", "--email", "a@praktijk.example").returncode == 0
    assert _cli(db_url, "list").stdout.strip() == "no users"
    assert _cli(db_url, "remove", "--email", "a@praktijk.example").returncode == 1


def test_cli_refuses_an_old_schema_and_names_the_command(empty_db_url: str) -> None:
    answer = _cli(empty_db_url, "list")
    assert answer.returncode == 1 and "reminders db upgrade" in answer.stderr


async def test_removing_the_last_membership_deletes_the_user_and_ends_sessions(
    db_engine: AsyncEngine,
) -> None:
    db = session_factory(db_engine)
    async with db.begin() as session:
        await add_user(session, "x@praktijk.example", "01999001", "beheerder", NOW)
        user = (await session.execute(select(User))).scalar_one()
    signin = SignIn(db, b"k" * 32)
    token = await signin.start_session(user.id, NOW)
    assert await signin.session_for(token, NOW) is not None
    async with db.begin() as session:
        assert await remove_user(session, "x@praktijk.example") == 1
    assert await signin.session_for(token, NOW) is None
    async with db() as session:
        assert await session.scalar(select(func.count()).select_from(WebSession)) == 0
        assert await list_users(session) == []


async def test_a_role_changes_in_place_and_bad_input_is_refused(db_engine: AsyncEngine) -> None:
    db = session_factory(db_engine)
    async with db.begin() as session:
        await add_user(session, "x@praktijk.example", "01999001", "medewerker", NOW)
        assert await add_user(session, "X@praktijk.example ", "01999001", "beheerder", NOW)
        user = (await session.execute(select(User))).scalar_one()
        assert await memberships_of(session, user.id) == {"01999001": "beheerder"}
        for email, practice, role in (
            ("x@praktijk.example", "01999001", "admin"),
            ("x@praktijk.example", "bad practice", "beheerder"),
            ("x", "01999001", "beheerder"),
        ):
            with pytest.raises(AccountError):
                await add_user(session, email, practice, role, NOW)
    async with db_engine.connect() as conn:
        # The database itself holds the roles to the two the design names.
        with pytest.raises(Exception, match=r"(?i)check|constraint"):
            await conn.execute(
                text(
                    "INSERT INTO admin_memberships (user_id, practice_id, role) "
                    f"VALUES ({user.id}, '01999003', 'god')"
                )
            )


async def test_the_service_refuses_an_old_schema_and_a_missing_secret(empty_db_url: str) -> None:
    with pytest.raises(MissingSecret, match="REMINDERS_ADMIN__SECRET_KEY"):
        AdminService(Settings(database={"url": empty_db_url}))  # type: ignore[arg-type]
    service = AdminService(
        Settings(database={"url": empty_db_url}, admin={"secret_key": "s" * 40})  # type: ignore[arg-type]
    )
    try:
        with pytest.raises(SchemaOutdated, match="reminders db upgrade"):
            await service.start()
    finally:
        await service.engine.dispose()
