"""``reminders run his-gateway``: the FastAPI app on uvicorn until SIGINT/SIGTERM.

:func:`create_app` builds it from settings. ``run`` refuses to start on an older database
schema or without a token secret (one line naming what to do, exit status 2); it serves
``/healthz``, ``/readyz`` (ready once the broker is connected and the schema is current)
and ``/metrics`` on the gateway's own port, beside the API and ``/openapi.json``.
"""

from __future__ import annotations

import gc
import logging
from typing import Final

import uvicorn
from fastapi import FastAPI

from services.common.db import (
    SchemaOutdated,
    create_engine,
    require_current_schema,
    session_factory,
)
from services.common.loops import preferred_loop
from services.common.metrics import track_readiness
from services.common.runtime import EXIT_REFUSED
from services.common.settings import Settings
from services.his_gateway.api import build_api
from services.his_gateway.clients import SqlClientStore
from services.his_gateway.gateway import Gateway, GatewayConfigError, token_secret_for
from services.his_gateway.publisher import KafkaPublisher

__all__ = ["GatewayApp", "build_gateway", "create_app"]

log = logging.getLogger(__name__)

# The collector's thresholds while serving (generation 0 counts allocations minus frees).
_GC_THRESHOLDS: Final = (50_000, 20, 100)


def build_gateway(settings: Settings) -> Gateway:
    """The gateway on the shared database and Kafka, as ``reminders run`` builds it."""
    engine = create_engine(settings.database)
    return Gateway(
        settings.gateway,
        store=SqlClientStore(session_factory(engine)),
        publisher=KafkaPublisher(settings),
        token_secret=token_secret_for(settings.gateway),
        engine=engine,
    )


class GatewayApp:
    """``exit_code`` is 0, or EXIT_REFUSED when the settings or the schema cannot work.
    ``reminders run`` runs it on ``loop_factory``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.exit_code = 0
        # The gateway spends a good part of each request in the loop and the transports.
        self.loop_factory = preferred_loop()

    def _refuse(self, reason: str) -> None:
        log.error(
            f"refusing to start: {reason}",
            extra={"service": "his-gateway", "exit_code": EXIT_REFUSED},
        )
        self.exit_code = EXIT_REFUSED

    def build(self) -> tuple[Gateway, FastAPI]:
        gateway = build_gateway(self.settings)
        return gateway, build_api(gateway)

    async def run(self) -> None:
        try:
            gateway, api = self.build()
        except GatewayConfigError as exc:
            self._refuse(str(exc))
            return
        if gateway.engine is not None:
            try:
                await require_current_schema(gateway.engine)
            except SchemaOutdated as exc:
                await gateway.engine.dispose()
                self._refuse(str(exc))
                return
        track_readiness("his-gateway", gateway.readiness)
        options = self.settings.gateway
        config = uvicorn.Config(
            api,
            host=options.host,
            port=options.port,
            log_config=None,
            access_log=False,  # paths name appointments; the metrics count requests
            lifespan="on",
            server_header=False,
        )
        server = uvicorn.Server(config)
        # What is built by now (modules, models, the app) lives as long as the process:
        # frozen out of the collector's way, a full collection scans only what requests
        # left behind instead of pausing every request for the whole heap.
        gc.collect()
        gc.freeze()
        # Few requests leave cycles behind, yet with the default thresholds (700, 10, 10)
        # the collector took 3-4% of the gateway's CPU in the benchmark (gc.callbacks: its
        # first 500 collections, 456 young, 41 middle and 3 full, took 0.27-0.31 s of the
        # process's first 8.0-8.5 s of CPU, startup included). Each collection walks what
        # the requests in flight hold at that moment, whatever the threshold: rarer is
        # cheaper.
        thresholds = gc.get_threshold()
        gc.set_threshold(*_GC_THRESHOLDS)
        try:
            await server.serve()
        finally:
            gc.set_threshold(*thresholds)
            if gateway.engine is not None:
                await gateway.engine.dispose()
        if not server.started:
            # The lifespan failed (logged by uvicorn): say so with a status, not silence.
            self._refuse("the HTTP server did not start (see the log above)")


def create_app(settings: Settings) -> GatewayApp:
    return GatewayApp(settings)
