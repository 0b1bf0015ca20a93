"""A second floor for bench/his_gateway.py: HTTP in, Kafka out, nothing in between.

    .venv/bin/python bench/his_gateway_http_floor.py PORT   (bench/his_gateway.py --http-floor)

A bare ASGI app on the server the gateway runs on (uvicorn, httptools, uvloop, the same
server options) that reads each request's body and publishes it with the gateway's
producer settings (idempotent, acks=all, linger 2 ms), answering 200 once the broker
confirmed. No routing, token, parser, practice check, metrics or answer headers: what is
left is the HTTP server, the event loop and aiokafka, the part of a PUT's cost no gateway
code can remove. The key is the appointment id of the path and the partition is named
(a cheap hash of it), so no murmur2 in Python is timed. Its broker, topic prefix and
partitions are the gateway's settings (``REMINDERS_KAFKA__*``); it writes to
``his.appointments.v1`` as the gateway does. Any request but a PUT (the bench's
``GET /readyz``) is answered 200 without publishing.
"""

from __future__ import annotations

import asyncio
import sys
import zlib
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import uvicorn
from aiokafka import AIOKafkaProducer

from schemas.topics import Topics
from services.common.kafka import make_producer
from services.common.loops import preferred_loop
from services.common.settings import KafkaSettings, Settings

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_HEADERS = [("content-type", b"application/fhir+json")]
_ANSWER = {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]}
_BODY = {"type": "http.response.body", "body": b""}


class HttpFloor:
    def __init__(self, kafka: KafkaSettings, topic: str) -> None:
        self.kafka = kafka
        self.topic = topic
        self.partitions = kafka.partitions
        self.producer: AIOKafkaProducer | None = None

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["method"] != "PUT":
            await send(_ANSWER)
            await send(_BODY)
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        key = scope["path"].rsplit("/", 1)[-1].encode()
        assert self.producer is not None
        sent = await self.producer.send(
            self.topic,
            b"".join(chunks),
            key=key,
            partition=zlib.crc32(key) % self.partitions,
            headers=_HEADERS,
        )
        await sent
        await send(_ANSWER)
        await send(_BODY)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                # the gateway's producer settings (services/his_gateway/publisher.py)
                self.producer = make_producer(self.kafka, linger_ms=2, max_batch_size=256 * 1024)
                await self.producer.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.producer is not None:
                    await self.producer.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return


def main() -> None:
    kafka = Settings().kafka
    app = HttpFloor(kafka, Topics(kafka.topic_prefix).his_appointments)
    # the options `reminders run his-gateway` gives uvicorn (services/his_gateway/app.py)
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        log_config=None,
        access_log=False,
        lifespan="on",
        server_header=False,
    )
    with asyncio.Runner(loop_factory=preferred_loop()) as runner:
        runner.run(uvicorn.Server(config).serve())


if __name__ == "__main__":
    main()
