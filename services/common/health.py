"""The metrics and health endpoints every service serves: /metrics, /healthz, /readyz."""

from __future__ import annotations

import json
from collections.abc import Callable

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest

__all__ = ["HealthServer", "LivenessCheck", "ReadinessCheck", "loops_alive"]

# A readiness check returns (ready, details); details name what is still loading.
ReadinessCheck = Callable[[], tuple[bool, dict[str, object]]]
# A liveness check returns (alive, details): False once a processing loop has died, so
# that /healthz fails and an orchestrator restarts the process (not ready is not enough:
# a dead loop never becomes ready again).
LivenessCheck = Callable[[], tuple[bool, dict[str, object]]]


def loops_alive(loops: dict[str, BaseException | None]) -> tuple[bool, dict[str, object]]:
    """Liveness from the failures of named loops (``None``: running or not started)."""
    dead = {name: type(exc).__name__ for name, exc in loops.items() if exc is not None}
    return (not dead), ({"stopped": dead} if dead else {})


class HealthServer:
    def __init__(
        self,
        *,
        host: str,
        port: int,
        readiness: ReadinessCheck,
        liveness: LivenessCheck | None = None,
        registry: CollectorRegistry = REGISTRY,
        service: str = "reminders",
    ) -> None:
        self._host = host
        self._port = port
        self._readiness = readiness
        self._liveness = liveness
        self._registry = registry
        self._service = service
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = sockets[0].getsockname()[1] if sockets else self._port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

    async def _metrics(self, _: web.Request) -> web.Response:
        body = generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, _: web.Request) -> web.Response:
        alive, details = self._liveness() if self._liveness is not None else (True, {})
        body = {"status": "alive" if alive else "dead", "service": self._service, **details}
        return web.json_response(body, status=200 if alive else 503)

    async def _readyz(self, _: web.Request) -> web.Response:
        ready, details = self._readiness()
        body = {"ready": ready, "service": self._service, **details}
        return web.Response(
            status=200 if ready else 503,
            text=json.dumps(body, default=str),
            content_type="application/json",
        )
