"""``reminders admin user add|list|remove``: practice-admin accounts.

A ``beheerder`` changes a practice's settings and texts; a ``medewerker`` reads the send
log and the follow-up. One person may belong to several practices. Needs the database
at the current schema (``reminders db upgrade``); signing in needs no password: the
person gets a one-time code by e-mail.
"""

from __future__ import annotations

import argparse
from typing import Any

from services.cli._base import CliError, run_async
from services.common.clock import SystemClock
from services.common.db import (
    SchemaOutdated,
    create_engine,
    redacted_url,
    require_current_schema,
    session_factory,
)
from services.common.settings import Settings
from services.practice_admin.accounts import AccountError, add_user, list_users, remove_user
from services.practice_admin.models import ROLES

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[Any]) -> None:
    admin = sub.add_parser(
        "admin",
        help="practice-admin accounts (beheerder, medewerker)",
        description="Accounts of the beheeromgeving, in the database (REMINDERS_DATABASE__URL).",
        epilog=(
            "examples:\n"
            "  reminders admin user add --email assistent@praktijk.nl --practice 01999001 "
            "--role beheerder\n"
            "  reminders admin user list --practice 01999001\n"
            "  reminders admin user remove --email assistent@praktijk.nl --practice 01999001"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    asub = admin.add_subparsers(dest="admin_command", metavar="OBJECT", required=True)
    user = asub.add_parser("user", help="add, list or remove a user")
    usub = user.add_subparsers(dest="user_command", metavar="ACTION", required=True)

    add = usub.add_parser(
        "add",
        help="give an e-mail address a role in a practice",
        description=(
            "Creates the account if needed and gives it ROLE in PRACTICE; an existing "
            "membership gets the new role. The person signs in at /login with a code sent "
            "to this address."
        ),
    )
    add.add_argument("--email", required=True, metavar="E", help="the person's e-mail address")
    add.add_argument("--practice", required=True, metavar="P", help="practice id (AGB code)")
    add.add_argument("--role", required=True, choices=ROLES, help="beheerder or medewerker")
    add.set_defaults(handler=lambda args: run_async(_add(args)))

    ls = usub.add_parser("list", help="list users and their roles")
    ls.add_argument("--practice", metavar="P", help="only this practice")
    ls.set_defaults(handler=lambda args: run_async(_list(args)))

    rm = usub.add_parser(
        "remove",
        help="remove a user from a practice (or from all)",
        description=(
            "Removes the membership in PRACTICE, or every membership without --practice. "
            "An account left without practices is deleted, and its sessions end."
        ),
    )
    rm.add_argument("--email", required=True, metavar="E")
    rm.add_argument("--practice", metavar="P", help="only this practice")
    rm.set_defaults(handler=lambda args: run_async(_remove(args)))


async def _with_session(action: Any) -> int:
    settings = Settings()
    engine = create_engine(settings.database)
    try:
        try:
            await require_current_schema(engine)
        except SchemaOutdated as exc:
            raise CliError(str(exc), 1) from exc
        except Exception as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise CliError(f"database {redacted_url(settings.database)}: {first}", 1) from exc
        async with session_factory(engine).begin() as session:
            result: int = await action(session)
            return result
    finally:
        await engine.dispose()


async def _add(args: argparse.Namespace) -> int:
    async def go(session: Any) -> int:
        try:
            changed = await add_user(
                session, args.email, args.practice, args.role, SystemClock().now()
            )
        except AccountError as exc:
            raise CliError(str(exc)) from exc
        state = "added" if changed else "unchanged"
        print(f"{state}: {args.email.strip().lower()} is {args.role} of {args.practice}")
        return 0

    return await _with_session(go)


async def _list(args: argparse.Namespace) -> int:
    async def go(session: Any) -> int:
        rows = await list_users(session, args.practice)
        for row in rows:
            print(f"{row.practice_id}\t{row.role}\t{row.email}")
        if not rows:
            print("no users")
        return 0

    return await _with_session(go)


async def _remove(args: argparse.Namespace) -> int:
    async def go(session: Any) -> int:
        removed = await remove_user(session, args.email, args.practice)
        if not removed:
            raise CliError(f"{args.email} has no membership to remove", 1)
        print(f"removed {removed} membership(s) of {args.email.strip().lower()}")
        return 0

    return await _with_session(go)
