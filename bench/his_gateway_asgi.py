"""Micro-benchmark: the gateway's own Python per PUT, without network, server or broker.

    .venv/bin/python bench/his_gateway_asgi.py [--events 3000] [--rounds 5] [--profile]

The app ``reminders run his-gateway`` serves (build_api, the KafkaPublisher) is called
as an ASGI app with prepared scopes, bodies and receive/send callables; the producer's
``send`` gives an already resolved future, so what is timed is the gateway's code from
the raw scope to its last ASGI message: the token check, the body, the one parser, the
practice check, the record handed to the producer, the answer and the metrics. No
uvicorn, no sockets, no aiokafka. For iterating in seconds on a shared machine: the
figure is CPU microseconds per PUT (best of ``--rounds``), the floor is the parser
alone (``his_events.problems`` on the same bodies, in the same run) and the ratio is
how much of the gateway's code the parser is. ``--profile`` prints cProfile's
function-call count per PUT and the top functions. The end-to-end figure is
bench/his_gateway.py.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import pstats
import sys
import time
from collections.abc import MutableMapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import uvloop
from aiokafka.structs import RecordMetadata
from his_gateway import PRACTICES, _resources

from services.common.settings import GatewaySettings, Settings
from services.domain.his_events import problems
from services.his_gateway.api import build_api
from services.his_gateway.clients import MemoryClientStore
from services.his_gateway.gateway import Gateway
from services.his_gateway.publisher import KafkaPublisher

Message = MutableMapping[str, Any]


class _ResolvedProducer:
    """AIOKafkaProducer's ``send`` as the gateway calls it, confirmed at once."""

    def __init__(self) -> None:
        self.offset = 0

    async def send(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        partition: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> asyncio.Future[RecordMetadata]:
        sent: asyncio.Future[RecordMetadata] = asyncio.get_running_loop().create_future()
        self.offset += 1
        sent.set_result(RecordMetadata(topic, partition, None, self.offset, 0, 0, None))
        return sent


def _scope(path: str, token: str, body: bytes) -> dict[str, Any]:
    """What uvicorn hands the app for the benchmark's PUT (bench/his_gateway.py)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "scheme": "http",
        "method": "PUT",
        "root_path": "",
        "path": path,
        "raw_path": path.encode("ascii"),
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1:8000"),
            (b"authorization", f"Bearer {token}".encode("ascii")),
            (b"content-type", b"application/fhir+json"),
            (b"prefer", b"return=minimal"),
            (b"content-length", str(len(body)).encode("ascii")),
        ],
        "state": {},
    }


async def run(events_count: int, rounds: int, profile: bool) -> None:
    store = MemoryClientStore()
    client, _ = await store.add("benchmark", PRACTICES)
    publisher = KafkaPublisher(Settings())
    gateway = Gateway(GatewaySettings(), store=store, publisher=publisher, token_secret="b" * 48)
    app = build_api(gateway)
    # Connected as after KafkaPublisher.connect(), with the producer's send resolved.
    publisher._connected = True
    publisher._partitions = 12
    publisher._producer = _ResolvedProducer()  # type: ignore[assignment]
    token = gateway.tokens.issue(client.client_id).value
    requests = [
        (_scope(f"/fhir/Appointment/{appointment}", token, body), body)
        for _, appointment, body in _resources(events_count)
    ]
    statuses: list[int] = []

    async def put(scope: dict[str, Any], body: bytes) -> None:
        message: Message = {"type": "http.request", "body": body, "more_body": False}

        async def receive() -> Message:
            return message

        async def send(answer: Message) -> None:
            if answer["type"] == "http.response.start":
                statuses.append(answer["status"])

        await app(scope, receive, send)

    for scope, body in requests[:200]:  # warm the caches (token, client, partitions)
        await put(scope, body)
    gc.collect()
    gc.freeze()  # as GatewayApp.run does before serving
    statuses.clear()
    gateway_us = parser_us = float("inf")
    for _ in range(rounds):
        started = time.process_time()
        for scope, body in requests:
            await put(scope, body)
        gateway_us = min(gateway_us, (time.process_time() - started) / len(requests) * 1e6)
        received_at = datetime.now(UTC)
        started = time.process_time()
        for _, body in requests:
            problems(body, fhir=True, received_at=received_at)
        parser_us = min(parser_us, (time.process_time() - started) / len(requests) * 1e6)
    if set(statuses) != {200}:
        raise SystemExit(f"not every PUT was answered 200: {sorted(set(statuses))}")
    calls = ""
    if profile:
        profiler = cProfile.Profile()
        profiler.enable()
        for scope, body in requests:
            await put(scope, body)
        profiler.disable()
        stats = pstats.Stats(profiler)
        total = sum(entry[1] for entry in stats.stats.values())  # type: ignore[attr-defined]
        calls = f"; {total / len(requests):.0f} Python function calls per PUT (cProfile)"
        stats.sort_stats("tottime").print_stats(25)
    print(
        f"his-gateway ASGI: {gateway_us:.1f} us CPU per PUT ({len(requests)} PUTs, best of "
        f"{rounds}){calls}; the parser alone (his_events.problems) {parser_us:.1f} us; "
        f"ratio {parser_us / gateway_us:.2f}",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", action="store_true", help="cProfile one more round")
    args = parser.parse_args()
    uvloop.run(run(args.events, args.rounds, args.profile))


if __name__ == "__main__":
    main()
