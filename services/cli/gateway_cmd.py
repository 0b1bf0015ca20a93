"""``reminders gateway client add|list|revoke``: his-gateway API clients.

``add`` prints the client id and its secret once (only an argon2 hash is stored); a client
may write only for the practices named here. ``revoke`` stops its tokens within seconds.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import Any

from services.cli._base import CliError, run_async
from services.common.settings import Settings

__all__ = ["register"]


def register(sub: argparse._SubParsersAction[Any]) -> None:
    gateway = sub.add_parser(
        "gateway",
        help="his-gateway: API clients of HIS vendors",
        description="The clients of his-gateway, in the database of REMINDERS_DATABASE__URL.",
    )
    gsub = gateway.add_subparsers(dest="gateway_command", metavar="COMMAND", required=True)
    client = gsub.add_parser("client", help="add, list or revoke API clients")
    csub = client.add_subparsers(dest="client_command", metavar="ACTION", required=True)

    add = csub.add_parser(
        "add",
        help="create a client; prints its id and secret once",
        description=(
            "Create an API client for an HIS vendor's installation. The secret is printed "
            "once and stored only as a hash: hand it over securely."
        ),
    )
    add.add_argument("--name", required=True, help="who the client is (e.g. 'Medicom, Utrecht')")
    add.add_argument(
        "--practices",
        required=True,
        metavar="AGB[,AGB...]",
        help="the practices (AGB codes) this client may write for",
    )
    add.set_defaults(handler=lambda args: _with_store(lambda store: _add(store, args)))

    listing = csub.add_parser("list", help="list clients (never their secrets)")
    listing.set_defaults(handler=lambda args: _with_store(_list))

    revoke = csub.add_parser("revoke", help="revoke a client: its tokens stop working")
    revoke.add_argument("client_id", metavar="CLIENT_ID")
    revoke.set_defaults(handler=lambda args: _with_store(lambda store: _revoke(store, args)))


def _with_store(action: Callable[[Any], Awaitable[int]]) -> int:
    from services.common.db import (
        SchemaOutdated,
        create_engine,
        require_current_schema,
        session_factory,
    )
    from services.his_gateway.clients import SqlClientStore

    async def go() -> int:
        settings = Settings()
        engine = create_engine(settings.database)
        try:
            try:
                await require_current_schema(engine)
            except SchemaOutdated as exc:
                raise CliError(str(exc)) from exc
            except Exception as exc:
                line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise CliError(f"cannot open the database: {line}") from exc
            return await action(SqlClientStore(session_factory(engine)))
        finally:
            await engine.dispose()

    return run_async(go())


async def _add(store: Any, args: argparse.Namespace) -> int:
    from services.his_gateway.clients import InvalidClient

    try:
        record, secret = await store.add(args.name, args.practices.split(","))
    except InvalidClient as exc:
        raise CliError(str(exc)) from exc
    print(f"client_id:     {record.client_id}")
    print(f"client_secret: {secret}")
    print(f"practices:     {','.join(sorted(record.practices))}")
    print("The secret is shown only now; store it in the HIS connector's configuration.")
    return 0


async def _list(store: Any) -> int:
    clients = await store.list()
    if not clients:
        print("no clients (add one with `reminders gateway client add`)")
        return 0
    for record in clients:
        state = "active" if record.revoked_at is None else f"revoked {record.revoked_at:%Y-%m-%d}"
        print(f"{record.client_id}\t{state}\t{','.join(sorted(record.practices))}\t{record.name}")
    return 0


async def _revoke(store: Any, args: argparse.Namespace) -> int:
    if not await store.revoke(args.client_id):
        raise CliError(f"no client {args.client_id}")
    print(f"revoked {args.client_id}: its access tokens stop working within seconds")
    return 0
