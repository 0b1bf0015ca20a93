"""his-gateway's clients in the shared database (SQLite and PostgreSQL): secrets stored
hashed, the CLI verbs, a token for a client made by the CLI, revocation through the
database, and refusing to start on an older schema."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.db import SchemaOutdated, session_factory
from services.common.settings import GatewaySettings
from services.his_gateway.api import build_api
from services.his_gateway.clients import SqlClientStore, verify_secret
from services.his_gateway.gateway import Gateway
from services.his_gateway.publisher import MemoryPublisher

pytestmark = pytest.mark.db

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "his"
SECRET = "db-test-token-secret-" + "q" * 32


def cli(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "REMINDERS_DATABASE__URL": db_url}
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
async def store(db_engine: AsyncEngine) -> SqlClientStore:
    return SqlClientStore(session_factory(db_engine))


async def test_clients_are_stored_with_a_hashed_secret(
    store: SqlClientStore, db_engine: AsyncEngine
) -> None:
    record, secret = await store.add("Medicom, Utrecht", ["01054321", "01999002"])
    async with db_engine.connect() as conn:
        stored = (await conn.execute(text("SELECT secret_hash FROM gateway_clients"))).scalar()
    assert stored is not None and stored.startswith("$argon2id$") and secret not in stored
    again = await store.get(record.client_id)
    assert again is not None and again.practices == {"01054321", "01999002"}
    assert again.created_at.tzinfo is not None and again.active
    assert await verify_secret(again, secret)
    assert not await verify_secret(again, secret + "x")
    assert await store.revoke(record.client_id)
    revoked = await store.get(record.client_id)
    assert revoked is not None and not revoked.active and not revoked.may_write("01054321")
    assert not await store.revoke("his-nobody")
    assert [c.client_id for c in await store.list()] == [record.client_id]


@pytest.fixture
async def gateway(db_engine: AsyncEngine, store: SqlClientStore) -> AsyncIterator[Gateway]:
    gateway = Gateway(
        GatewaySettings(),
        store=store,
        publisher=MemoryPublisher(),
        token_secret=SECRET,
        engine=db_engine,
        client_cache_seconds=0.0,
    )
    await gateway.start()
    yield gateway
    await gateway.stop()


async def test_a_client_added_by_the_cli_writes_until_revoked_by_the_cli(
    db_url: str, gateway: Gateway
) -> None:
    added = cli(db_url, "gateway", "client", "add", "--name", "CGM test", "--practices", "01054321")
    assert added.returncode == 0, added.stderr
    fields = dict(line.split(":", 1) for line in added.stdout.splitlines() if ":" in line)
    client_id, secret = fields["client_id"].strip(), fields["client_secret"].strip()
    listed = cli(db_url, "gateway", "client", "list")
    assert client_id in listed.stdout and secret not in listed.stdout

    transport = httpx.ASGITransport(app=build_api(gateway))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
        token = await http.post(
            "/oauth/token", data={"grant_type": "client_credentials"}, auth=(client_id, secret)
        )
        assert token.status_code == 200, token.text
        headers = {
            "Authorization": f"Bearer {token.json()['access_token']}",
            "Content-Type": "application/fhir+json",
        }
        resource = (EXAMPLES / "appointment-fhir.json").read_bytes()
        rid = json.loads(resource)["id"]
        put = await http.put(f"/fhir/Appointment/{rid}", content=resource, headers=headers)
        assert put.status_code == 200, put.text

        revoked = cli(db_url, "gateway", "client", "revoke", client_id)
        assert revoked.returncode == 0, revoked.stderr
        after = await http.put(f"/fhir/Appointment/{rid}", content=resource, headers=headers)
        assert after.status_code == 401
        assert "revoked" in after.headers["www-authenticate"]

    missing = cli(db_url, "gateway", "client", "revoke", "his-nobody")
    assert missing.returncode == 2 and "no client" in missing.stderr
    bad = cli(db_url, "gateway", "client", "add", "--name", "x", "--practices", "not an id")
    assert bad.returncode == 2 and "not a practice id" in bad.stderr


async def test_the_gateway_refuses_an_older_schema(
    db_engine: AsyncEngine, store: SqlClientStore
) -> None:
    async with db_engine.begin() as conn:
        await conn.execute(text("DELETE FROM alembic_version"))
    gateway = Gateway(
        GatewaySettings(),
        store=store,
        publisher=MemoryPublisher(),
        token_secret=SECRET,
        engine=db_engine,
    )
    with pytest.raises(SchemaOutdated, match="reminders db upgrade"):
        await gateway.start()
    assert gateway.readiness()[0] is False


@pytest.mark.parametrize("client_id", ["his-\x00x", "his-\u2028", "x" * 5000])
async def test_a_client_id_of_another_shape_is_invalid_client_and_counted(
    gateway: Gateway, store: SqlClientStore, client_id: str
) -> None:
    """A NUL in the client id once answered 500 on PostgreSQL, before the limiter."""
    transport = httpx.ASGITransport(app=build_api(gateway), client=("192.0.2.7", 4000))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
        for _ in range(10):
            response = await http.post(
                "/oauth/token",
                data={
                    "grant_type": "client_credentials",
                    "client_id": client_id,
                    "client_secret": "guess",
                },
            )
            assert response.status_code == 401, response.text
            assert response.json()["error"] == "invalid_client"
            assert response.headers["www-authenticate"].startswith("Basic")
        blocked = await http.post(
            "/oauth/token",
            data={"grant_type": "client_credentials", "client_id": "his-a", "client_secret": "x"},
        )
        assert blocked.status_code == 429  # the ten failures were counted for this address
    assert await store.get(client_id) is None
    assert not await store.revoke(client_id)
