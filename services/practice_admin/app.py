"""``reminders run practice-admin``: the beheeromgeving as one process.

:func:`create_app` builds it from settings; ``run()`` checks the database schema, loads
the practice configs, and serves until SIGINT/SIGTERM, on
``REMINDERS_ADMIN__HOST:PORT`` (``/healthz``, ``/readyz`` and ``/metrics`` included).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import signal
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI
from pydantic import SecretStr

from services.common.clock import Clock, SystemClock
from services.common.db import create_engine, require_current_schema, session_factory
from services.common.settings import Settings
from services.practice_admin.config_store import KafkaConfigStore
from services.practice_admin.mailer import SmtpMailer
from services.practice_admin.outcomes import ProjectionOutcomes
from services.practice_admin.security import cookie_secure
from services.practice_admin.signin import SignIn
from services.practice_admin.unsubscribe import (
    RedactPatientLinks,
    install,
    open_kafka_patient_links,
)
from services.practice_admin.web import Pages, build_app

__all__ = ["AdminService", "MissingSecret", "create_app"]

log = logging.getLogger(__name__)


class MissingSecret(RuntimeError):
    pass


def _with_secret(settings: Settings) -> Settings:
    """The settings with a secret key: the configured one, or in the demo a random one."""
    key = settings.admin.secret_key
    if key is not None and key.get_secret_value():
        return settings
    if settings.admin.demo:
        admin = settings.admin.model_copy(
            update={"secret_key": SecretStr(secrets.token_urlsafe(48))}
        )
        return settings.model_copy(update={"admin": admin})
    raise MissingSecret(
        "REMINDERS_ADMIN__SECRET_KEY is not set: practice-admin needs a secret key outside "
        "the demo (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`)"
    )


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: :meth:`AdminService.run` owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class AdminService:
    def __init__(self, settings: Settings, clock: Clock | None = None) -> None:
        self._secret_configured = bool(
            settings.admin.secret_key and settings.admin.secret_key.get_secret_value()
        )
        self.settings = settings = _with_secret(settings)
        self.clock = clock or SystemClock()
        assert settings.admin.secret_key is not None
        secret = settings.admin.secret_key.get_secret_value().encode("utf-8")
        self.engine = create_engine(settings.database)
        self.db = session_factory(self.engine)
        self.configs = KafkaConfigStore(settings.kafka)
        # The send log reads the insights projection in this same database.
        self.outcomes = ProjectionOutcomes(self.db)
        admin = settings.admin
        sender = f"Beheeromgeving <noreply@{settings.smtp.message_id_domain}>"
        self.pages = Pages(
            sessions=self.db,
            signin=SignIn(
                self.db,
                secret,
                code_minutes=admin.login_code_minutes,
                idle_minutes=admin.session_idle_minutes,
            ),
            configs=self.configs,
            outcomes=self.outcomes,
            mailer=SmtpMailer(settings.smtp, sender),
            clock=self.clock,
            secure_cookies=cookie_secure(admin.public_url),
            idle_minutes=admin.session_idle_minutes,
            code_minutes=admin.login_code_minutes,
            demo=admin.demo,
        )
        self.app: FastAPI = build_app(self.pages)
        self.server: uvicorn.Server | None = None
        # The patient links (/u/{token}, one-click unsubscribe): their preferences table
        # and producer live from start() to stop().
        self._patient_links = contextlib.AsyncExitStack()
        logging.getLogger("uvicorn.access").addFilter(RedactPatientLinks())

    async def start(self) -> None:
        await require_current_schema(self.engine)
        await self.configs.start()
        await self._start_patient_links()

    async def _start_patient_links(self) -> None:
        if not self._secret_configured:
            # The demo's random secret would check no link the notifier signed: the
            # notifier lists preferences_url instead when it has no secret either.
            log.info("no REMINDERS_ADMIN__SECRET_KEY: patient links (/u/...) are off")
            return
        links = await self._patient_links.enter_async_context(
            open_kafka_patient_links(self.settings, self.clock)
        )
        install(self.app, links)

    async def stop(self) -> None:
        await self._patient_links.aclose()
        await self.configs.stop()
        await self.engine.dispose()

    async def run(self, stop: asyncio.Event | None = None) -> None:
        stop = stop or asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        await self.start()
        admin = self.settings.admin
        config = uvicorn.Config(
            self.app,
            host=admin.host,
            port=admin.port,
            log_config=None,
            access_log=False,
            server_header=False,
            proxy_headers=False,
        )
        self.server = _Server(config)
        serve = asyncio.create_task(self.server.serve())
        sweeper = asyncio.create_task(self._sweep())
        log.info("practice-admin serving", extra={"host": admin.host, "port": admin.port})
        try:
            await asyncio.wait(
                [serve, asyncio.create_task(stop.wait())], return_when=asyncio.FIRST_COMPLETED
            )
            self.server.should_exit = True
            await serve
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            await self.stop()

    @property
    def port(self) -> int | None:
        """The bound port once serving (useful with port 0)."""
        if self.server is None or not self.server.servers:
            return None
        sockets = self.server.servers[0].sockets
        return int(sockets[0].getsockname()[1]) if sockets else None

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(300)
            try:
                await self.pages.signin.sweep(self.clock.now())
            except Exception:
                log.warning("session sweep failed", exc_info=True)


def create_app(settings: Settings) -> AdminService:
    return AdminService(settings)
