"""``reminders db upgrade|status``: the shared database's schema (Alembic)."""

from __future__ import annotations

import argparse
from typing import Any

from services.cli._base import CliError, run_async
from services.common.db import create_engine, redacted_url, schema_status, upgrade
from services.common.settings import Settings


def register(sub: argparse._SubParsersAction[Any]) -> None:
    db = sub.add_parser(
        "db",
        help="the database schema (users, audit, API clients, follow-up)",
        description="The database named by REMINDERS_DATABASE__URL (SQLite by default).",
    )
    dsub = db.add_subparsers(dest="db_command", metavar="COMMAND", required=True)
    up = dsub.add_parser("upgrade", help="create or upgrade the schema (idempotent)")
    up.set_defaults(handler=lambda args: run_async(_upgrade()))
    status = dsub.add_parser("status", help="say whether the schema is current; exit 1 if not")
    status.set_defaults(handler=lambda args: run_async(_status()))


async def _upgrade() -> int:
    settings = Settings()
    engine = create_engine(settings.database)
    try:
        status = await upgrade(engine)
    except Exception as exc:
        raise CliError(f"database {redacted_url(settings.database)}: {_first_line(exc)}") from exc
    finally:
        await engine.dispose()
    print(f"database {redacted_url(settings.database)}: {status.describe()}")
    return 0


async def _status() -> int:
    settings = Settings()
    engine = create_engine(settings.database)
    try:
        status = await schema_status(engine)
    except Exception as exc:
        raise CliError(f"database {redacted_url(settings.database)}: {_first_line(exc)}") from exc
    finally:
        await engine.dispose()
    print(f"database {redacted_url(settings.database)}: {status.describe()}")
    return 0 if status.ok else 1


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
