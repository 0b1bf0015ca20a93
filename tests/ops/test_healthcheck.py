"""The image's HEALTHCHECK (``python -m services.common.healthcheck``), run as the
container runs it: the first of the metrics port, the admin port and the gateway port that
answers decides, so one image reports the health of a Kafka service and of a web door."""

from __future__ import annotations

import http.server
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


class _Door(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        code = self.status if self.path == "/readyz" else 404
        self.send_response(code)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


class _Server(http.server.HTTPServer):
    def shutdown(self) -> None:
        super().shutdown()
        self.server_close()


def _serve(status: int) -> tuple[_Server, int]:
    handler = type("Handler", (_Door,), {"status": status})
    server = _Server(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, int(server.server_address[1])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def closed_ports() -> Iterator[list[int]]:
    yield [_free_port() for _ in range(3)]


def _check(**ports: int) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REMINDERS_")}
    env["PYTHONPATH"] = str(ROOT)
    env.update({f"REMINDERS_{name.upper()}__PORT": str(port) for name, port in ports.items()})
    done = subprocess.run(
        [sys.executable, "-m", "services.common.healthcheck"], env=env, timeout=30, check=False
    )
    return done.returncode


def test_a_door_is_healthy_on_its_own_port_when_nothing_listens_on_9400(
    closed_ports: list[int],
) -> None:
    metrics, admin, _ = closed_ports
    server, port = _serve(200)
    try:
        assert _check(metrics=metrics, admin=admin, gateway=port) == 0
        assert _check(metrics=metrics, admin=port, gateway=admin) == 0
    finally:
        server.shutdown()


def test_not_ready_or_nothing_listening_is_unhealthy(closed_ports: list[int]) -> None:
    metrics, admin, gateway = closed_ports
    assert _check(metrics=metrics, admin=admin, gateway=gateway) == 1
    server, port = _serve(503)
    try:
        # The first port that answers decides, even if a later one would say 200.
        healthy, other = _serve(200)
        try:
            assert _check(metrics=port, admin=admin, gateway=other) == 1
        finally:
            healthy.shutdown()
    finally:
        server.shutdown()


def test_a_kafka_service_answers_on_its_metrics_port(closed_ports: list[int]) -> None:
    _, admin, gateway = closed_ports
    server, port = _serve(200)
    try:
        assert _check(metrics=port, admin=admin, gateway=gateway) == 0
    finally:
        server.shutdown()


def test_the_image_runs_this_check() -> None:
    text = (ROOT / "deploy" / "Dockerfile").read_text(encoding="utf-8")
    (check,) = re.findall(r"^\s*CMD \[(.*)\]$", text, re.MULTILINE)[:1]
    assert '"python", "-m", "services.common.healthcheck"' in check
