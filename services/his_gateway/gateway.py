"""The gateway's parts, built once per process: client store, tokens, limiter, publisher.

The HTTP routes (:mod:`services.his_gateway.api`) only translate between requests and
these. Tests build a :class:`Gateway` with an in-memory store or a fake publisher.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from typing import Final

from sqlalchemy.ext.asyncio import AsyncEngine

from services.common.clock import Clock, SystemClock
from services.common.db import require_current_schema
from services.common.settings import GatewaySettings
from services.his_gateway.clients import ClientCache, ClientStore
from services.his_gateway.publisher import Publisher
from services.his_gateway.ratelimit import FailureLimiter
from services.his_gateway.tokens import TokenIssuer

__all__ = ["CLIENT_CACHE_SECONDS", "Gateway", "GatewayConfigError", "token_secret_for"]

log = logging.getLogger(__name__)

# How long a client's state (revoked, practices) may be served from memory.
CLIENT_CACHE_SECONDS: Final = 2.0


class GatewayConfigError(RuntimeError):
    """The settings do not allow the gateway to run (the message names the setting)."""


def token_secret_for(settings: GatewaySettings) -> str:
    if settings.token_secret is not None:
        secret = settings.token_secret.get_secret_value()
        if len(secret.encode("utf-8")) < 32:
            raise GatewayConfigError(
                "REMINDERS_GATEWAY__TOKEN_SECRET must be at least 32 characters "
                "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`)"
            )
        return secret
    if settings.demo:
        # Tokens of a demo gateway die with the process, which is what a demo wants.
        return secrets.token_urlsafe(48)
    raise GatewayConfigError(
        "REMINDERS_GATEWAY__TOKEN_SECRET is required outside the demo: it signs the access "
        "tokens (at least 32 characters)"
    )


class Gateway:
    def __init__(
        self,
        settings: GatewaySettings,
        *,
        store: ClientStore,
        publisher: Publisher,
        token_secret: str,
        engine: AsyncEngine | None = None,
        clock: Clock | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        client_cache_seconds: float = CLIENT_CACHE_SECONDS,
        public_url: str | None = None,
    ) -> None:
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        self.store = store
        self.clients = ClientCache(store, ttl_seconds=client_cache_seconds, monotonic=monotonic)
        self.tokens = TokenIssuer(
            token_secret,
            ttl_seconds=settings.token_ttl_seconds,
            now=lambda: self.clock.now().timestamp(),
        )
        self.limiter = FailureLimiter(monotonic=monotonic)
        self.publisher = publisher
        self.engine = engine
        self.public_url = public_url or f"http://{settings.host}:{settings.port}"
        self._schema: str = "not checked" if engine is not None else "not used"
        self._started = False

    async def start(self) -> None:
        """Refuses to start on an older schema (:class:`SchemaOutdated` names the command)."""
        if self.engine is not None:
            await require_current_schema(self.engine)
            self._schema = "current"
        await self.publisher.start()
        self._started = True

    async def stop(self) -> None:
        self._started = False
        await self.publisher.stop()

    async def __aenter__(self) -> Gateway:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    def readiness(self) -> tuple[bool, dict[str, object]]:
        schema_ok = self._schema in ("current", "not used")
        ready = self._started and schema_ok and self.publisher.connected
        return ready, {"schema": self._schema, **self.publisher.describe()}
