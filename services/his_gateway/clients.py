"""API clients: who may ask for a token, and for which practices it may then write.

A client is created by ``reminders gateway client add``; its secret is shown once and kept
only as an argon2 hash. Revoking sets ``revoked_at``; the gateway reads a client's state
through :class:`ClientCache` (a few seconds at most), so a revoked client's tokens stop
working within that time, well inside their lifetime.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Final, Protocol

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.his_gateway.models import GatewayClient

__all__ = [
    "ClientCache",
    "ClientRecord",
    "ClientStore",
    "InvalidClient",
    "MemoryClientStore",
    "SqlClientStore",
    "hash_secret",
    "is_client_id",
    "new_client",
    "new_client_id",
    "new_secret",
    "parse_practices",
    "verify_secret",
]

# The same shape as AppointmentEvent.practice_id (an AGB code is 8 digits).
_PRACTICE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
# What a client id may be (new_client_id makes "his-" and 16 hex digits; the column holds
# 64): anything else names no client, and never reaches the database (PostgreSQL refuses
# a NUL in a text with an error, not an empty answer).
_CLIENT_ID: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")


def is_client_id(value: str) -> bool:
    return _CLIENT_ID.fullmatch(value) is not None


# argon2id at OWASP's recommended minimum (19 MiB, 2 passes, 1 lane): the token endpoint
# stays cheap enough to rate-limit rather than to fall over.
_HASHER: Final = PasswordHasher(time_cost=2, memory_cost=19_456, parallelism=1)
# Verified against when the client id is unknown, so the answer takes as long either way.
_DUMMY_HASH: Final = _HASHER.hash(secrets.token_urlsafe(32))


class InvalidClient(ValueError):
    """A client definition that cannot be stored (the message says why)."""


@dataclass(frozen=True)
class ClientRecord:
    client_id: str
    name: str
    secret_hash: str
    practices: frozenset[str]
    created_at: datetime
    revoked_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def may_write(self, practice_id: str) -> bool:
        return self.active and practice_id in self.practices


class ClientStore(Protocol):
    async def get(self, client_id: str) -> ClientRecord | None: ...


def new_client_id() -> str:
    return f"his-{secrets.token_hex(8)}"


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    return _HASHER.hash(secret)


def _verify(secret_hash: str, secret: str) -> bool:
    try:
        return _HASHER.verify(secret_hash, secret)
    except (VerificationError, InvalidHashError):
        return False


async def verify_secret(client: ClientRecord | None, secret: str) -> bool:
    """Constant work whether or not the client exists; argon2 runs off the event loop."""
    secret_hash = client.secret_hash if client is not None else _DUMMY_HASH
    ok = await asyncio.to_thread(_verify, secret_hash, secret)
    return ok and client is not None


def parse_practices(text: str | Iterable[str]) -> frozenset[str]:
    items = text.split(",") if isinstance(text, str) else list(text)
    practices = frozenset(item.strip() for item in items if item.strip())
    if not practices:
        raise InvalidClient("name at least one practice (its AGB code)")
    bad = sorted(p for p in practices if not _PRACTICE.match(p))
    if bad:
        raise InvalidClient(f"not a practice id (AGB code): {', '.join(bad)}")
    return practices


def _check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > 200:
        raise InvalidClient("the name must be 1 to 200 characters")
    return name


async def new_client(
    name: str, practices: Iterable[str], *, now: datetime | None = None
) -> tuple[ClientRecord, str]:
    """A checked client record and its secret (hashed off the event loop)."""
    checked_name, checked_practices = _check_name(name), parse_practices(practices)
    secret = new_secret()
    record = ClientRecord(
        client_id=new_client_id(),
        name=checked_name,
        secret_hash=await asyncio.to_thread(hash_secret, secret),
        practices=checked_practices,
        created_at=now or datetime.now(UTC),
    )
    return record, secret


def _aware(moment: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; every stored moment is UTC.
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def _record(row: GatewayClient) -> ClientRecord:
    created = _aware(row.created_at)
    assert created is not None
    return ClientRecord(
        client_id=row.client_id,
        name=row.name,
        secret_hash=row.secret_hash,
        practices=frozenset(row.practices),
        created_at=created,
        revoked_at=_aware(row.revoked_at),
    )


class SqlClientStore:
    """The clients in the shared database (table ``gateway_clients``)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions

    async def get(self, client_id: str) -> ClientRecord | None:
        if not is_client_id(client_id):
            return None
        async with self._sessions() as session:
            row = await session.get(GatewayClient, client_id)
            return _record(row) if row is not None else None

    async def add(
        self, name: str, practices: Iterable[str], *, now: datetime | None = None
    ) -> tuple[ClientRecord, str]:
        """A new client and its secret, which is returned here and never again."""
        record, secret = await new_client(name, practices, now=now)
        async with self._sessions.begin() as session:
            session.add(
                GatewayClient(
                    client_id=record.client_id,
                    name=record.name,
                    secret_hash=record.secret_hash,
                    practices=sorted(record.practices),
                    created_at=record.created_at,
                    revoked_at=None,
                )
            )
        return record, secret

    async def list(self) -> list[ClientRecord]:
        async with self._sessions() as session:
            rows = await session.scalars(select(GatewayClient).order_by(GatewayClient.created_at))
            return [_record(row) for row in rows]

    async def revoke(self, client_id: str, *, now: datetime | None = None) -> bool:
        """True if the client exists (revoking twice keeps the first moment)."""
        if not is_client_id(client_id):
            return False
        async with self._sessions.begin() as session:
            row = await session.get(GatewayClient, client_id)
            if row is None:
                return False
            if row.revoked_at is None:
                row.revoked_at = now or datetime.now(UTC)
            return True


class MemoryClientStore:
    """The same store in memory, for tests and the demo."""

    def __init__(self) -> None:
        self._clients: dict[str, ClientRecord] = {}

    async def get(self, client_id: str) -> ClientRecord | None:
        return self._clients.get(client_id)

    async def add(
        self, name: str, practices: Iterable[str], *, now: datetime | None = None
    ) -> tuple[ClientRecord, str]:
        record, secret = await new_client(name, practices, now=now)
        self._clients[record.client_id] = record
        return record, secret

    async def list(self) -> Sequence[ClientRecord]:
        return list(self._clients.values())

    async def revoke(self, client_id: str, *, now: datetime | None = None) -> bool:
        record = self._clients.get(client_id)
        if record is None:
            return False
        if record.revoked_at is None:
            self._clients[client_id] = replace(record, revoked_at=now or datetime.now(UTC))
        return True


class ClientCache:
    """Read-through cache of client records for the per-request token check.

    An entry lives ``ttl_seconds`` (a few seconds): the bound on how long a revoked client
    can still write. Concurrent misses for one client share one lookup.
    """

    def __init__(
        self,
        store: ClientStore,
        *,
        ttl_seconds: float = 2.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._ttl = ttl_seconds
        self._monotonic = monotonic
        self._entries: dict[str, tuple[float, ClientRecord | None]] = {}
        self._pending: dict[str, asyncio.Future[ClientRecord | None]] = {}

    async def get(self, client_id: str) -> ClientRecord | None:
        now = self._monotonic()
        entry = self._entries.get(client_id)
        if entry is not None and now - entry[0] < self._ttl:
            return entry[1]
        pending = self._pending.get(client_id)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[ClientRecord | None] = asyncio.get_running_loop().create_future()
        self._pending[client_id] = future
        try:
            record = await self._store.get(client_id)
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # marked retrieved: waiters re-raise it themselves
            raise
        except BaseException:
            future.cancel()
            raise
        finally:
            self._pending.pop(client_id, None)
        if len(self._entries) > 10_000:
            self._entries.clear()
        self._entries[client_id] = (self._monotonic(), record)
        future.set_result(record)
        return record

    def forget(self, client_id: str) -> None:
        self._entries.pop(client_id, None)
