"""The HTTP routes: OAuth token, FHIR ``PUT /fhir/Appointment/{id}``, native events, health.

Order of checks on a write: the bearer token (401), the media type (415), for a PUT the
id in the URL (400), the body size, read no further than the limit (413), the one parser
(400/422, an ``OperationOutcome`` with the DLQ's reason codes), the client's practices
(403), then the broker (503 when it does not confirm). Only a confirmed event gets a 2xx;
a refused one never reaches the topic.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import unquote

import msgspec
import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Counter, generate_latest
from starlette.requests import ClientDisconnect

from schemas.models import ID_PATTERN, AppointmentEvent
from services.his_gateway import metrics
from services.his_gateway.capability import capability_statement
from services.his_gateway.clients import ClientRecord, is_client_id, verify_secret
from services.his_gateway.gateway import Gateway
from services.his_gateway.outcome import (
    issue,
    operation_outcome,
    outcome_for_problems,
    status_for_problems,
)
from services.his_gateway.publisher import OutRecord, Placement, PublishFailed
from services.his_gateway.tokens import InvalidToken
from services.his_gateway.validation import FHIR_CONTENT_TYPE, Problem, problems

__all__ = ["build_api"]

log = logging.getLogger(__name__)

REALM: Final = "his-gateway"
SCOPE: Final = "system/Appointment.write"
_JSON_TYPES: Final = frozenset({"application/json", FHIR_CONTENT_TYPE})
_TOKEN_BODY_LIMIT: Final = 8 * 1024
_RETRY_AFTER_SECONDS: Final = "5"

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


# --------------------------------------------------------------------------- responses


def _json(value: Any) -> bytes:
    return orjson.dumps(value)


class FhirResponse(Response):
    media_type = FHIR_CONTENT_TYPE

    def render(self, content: Any) -> bytes:
        if isinstance(content, bytes):
            return content
        return b"" if content is None else _json(content)


class JsonResponse(Response):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return _json(content)


class Refusal(Exception):
    """A request answered with an error: status, body, headers."""

    def __init__(
        self,
        status: int,
        body: dict[str, Any],
        headers: dict[str, str] | None = None,
        *,
        fhir: bool = True,
    ) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or {}
        self.fhir = fhir

    def response(self) -> Response:
        cls = FhirResponse if self.fhir else JsonResponse
        return cls(self.body, status_code=self.status, headers=self.headers)


class Answer:
    """A write's success, as two ASGI messages with its header lines made up front: what
    Starlette's Response would send, without rendering and normalising headers per
    request on the hot path. ``response()`` gives the same as a Starlette Response."""

    __slots__ = ("body", "headers", "status_code")

    def __init__(self, status_code: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        self.status_code = status_code
        self.headers = headers
        self.body = body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.headers}
        )
        await send({"type": "http.response.body", "body": self.body})

    def response(self) -> Response:
        response = Response(self.body, self.status_code)
        response.raw_headers = list(self.headers)
        return response


def _answer(
    body: bytes, headers: list[tuple[bytes, bytes]], content_type: bytes, status: int = 200
) -> Answer:
    headers.append((b"content-length", str(len(body)).encode("latin-1")))
    headers.append((b"content-type", content_type))
    return Answer(status, headers, body)


_FHIR_TYPE: Final = FHIR_CONTENT_TYPE.encode("latin-1")
_JSON_TYPE: Final = b"application/json"


def _refuse(status: int, code: str, text: str, **headers: str) -> Refusal:
    return Refusal(status, operation_outcome([issue(code, text)]), headers)


def _unauthorized(error: str | None, text: str) -> Refusal:
    challenge = f'Bearer realm="{REALM}"'
    if error is not None:
        description = text.replace('"', "'")
        challenge += f', error="{error}", error_description="{description}"'
    return Refusal(401, operation_outcome([issue("login", text)]), {"WWW-Authenticate": challenge})


def _media_type(value: str | None) -> str:
    return (value or "").split(";", 1)[0].strip().lower()


@dataclass(slots=True)
class _Head:
    """The request headers a write reads (the first of each, as Starlette's ``get``)."""

    authorization: str | None
    content_type: str | None
    content_length: str | None
    prefer: str | None

    @classmethod
    def of(cls, scope: Scope) -> _Head:
        authorization = content_type = content_length = prefer = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                if authorization is None:
                    authorization = value
            elif name == b"content-type":
                if content_type is None:
                    content_type = value
            elif name == b"content-length":
                if content_length is None:
                    content_length = value
            elif name == b"prefer" and prefer is None:
                prefer = value
        return cls(
            _latin1(authorization), _latin1(content_type), _latin1(content_length), _latin1(prefer)
        )


def _latin1(value: bytes | None) -> str | None:
    return None if value is None else value.decode("latin-1")


# --------------------------------------------------------------------------- metrics


class _RequestMetrics:
    """Pure ASGI middleware: count requests by route template and status."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.app = app
        self._children: dict[tuple[str, int], Counter] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def sending(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route = scope.get("route")
            key = (getattr(route, "path", None) or "other", status)
            counter = self._children.get(key)
            if counter is None:
                counter = metrics.REQUESTS.labels(endpoint=key[0], status=str(status))
                self._children[key] = counter
            counter.inc()


# --------------------------------------------------------------------------- the app

WriteEndpoint = Callable[[Scope, Receive], Awaitable[Answer]]
_PUT_PREFIX: Final = "/fhir/Appointment/"
# The id in a PUT's URL becomes the event's appointment_id and goes into the Location
# header: AppointmentEvent's alphabet (FHIR's id, plus "_" and ":"), checked before the
# body is read, so nothing with another id is parsed or published.
_URL_ID: Final = re.compile(ID_PATTERN)
_BAD_URL_ID: Final = (
    "the id in the URL is not an appointment id: 1 to 64 ASCII letters, digits, '.', '_', "
    "':' or '-', starting with a letter or digit (FHIR's id rule)"
)
_PUT_TEMPLATE: Final = "/fhir/Appointment/{appointment_id}"
_EVENTS_PATH: Final = "/v1/appointment-events"


class _GatewayApi(FastAPI):
    """FastAPI, with the two write routes served before its middleware stack.

    A PUT or POST there goes straight to its endpoint: no dependency solving, exception
    middlewares, body-limit or telemetry wrappers (the endpoints read and limit the body
    themselves), only the request counter. Everything else, and the OpenAPI document of
    the twins of those routes, is FastAPI's. ``root_path`` deployments take the normal
    path.
    """

    put_endpoint: WriteEndpoint | None = None
    post_endpoint: WriteEndpoint | None = None
    _counters: dict[tuple[str, int], Counter]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not scope.get("root_path"):
            path: str = scope["path"]
            method: str = scope["method"]
            if method == "PUT" and path.startswith(_PUT_PREFIX) and self.put_endpoint:
                appointment_id = path[len(_PUT_PREFIX) :]
                if appointment_id and "/" not in appointment_id:
                    await self._write(_PUT_TEMPLATE, self.put_endpoint, scope, receive, send)
                    return
            elif method == "POST" and path == _EVENTS_PATH and self.post_endpoint:
                await self._write(_EVENTS_PATH, self.post_endpoint, scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    async def _write(
        self, template: str, endpoint: WriteEndpoint, scope: Scope, receive: Receive, send: Send
    ) -> None:
        status = 500
        try:
            try:
                response: Answer | Response = await endpoint(scope, receive)
            except Refusal as refusal:
                response = refusal.response()
            except ClientDisconnect:
                status = 499  # nobody to answer
                return
            except Exception:
                # As Starlette's ServerErrorMiddleware: a plain 500, then the server logs it.
                await Response("Internal Server Error", 500, media_type="text/plain")(
                    scope, receive, send
                )
                raise
            status = response.status_code
            # Nothing is sent before this; if sending fails, uvicorn answers 500 itself.
            await response(scope, receive, send)
        finally:
            self._count(template, status)

    def _count(self, template: str, status: int) -> None:
        key = (template, status)
        counters = self.__dict__.setdefault("_counters", {})
        counter = counters.get(key)
        if counter is None:
            counter = metrics.REQUESTS.labels(endpoint=template, status=str(status))
            counters[key] = counter
        counter.inc()


@dataclass(slots=True)
class _Verdict:
    """One event after the parser and the practice check."""

    value: bytes
    event: AppointmentEvent | None
    problems: list[Problem]
    status: int  # 200 for an event to publish


def build_api(gateway: Gateway) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> Any:
        await gateway.start()
        try:
            yield
        finally:
            await gateway.stop()

    app = _GatewayApi(
        title="e-afspraken his-gateway",
        version="1",
        summary="The HTTP front door for HIS vendors: FHIR R4 Appointment and native events.",
        description=(
            "Get a token with OAuth 2.0 client credentials (`POST /oauth/token`), then "
            "`PUT /fhir/Appointment/{id}` (FHIR R4) or `POST /v1/appointment-events` (native "
            "AppointmentEvent JSON, one or a list). A 2xx means the event is durably on "
            "`his.appointments.v1`; a refused event (400/403/413/415/422, a FHIR "
            "OperationOutcome with the DLQ's reason codes) never is. Repeating a request is "
            "harmless."
        ),
        lifespan=lifespan,
        # Swagger UI and ReDoc load from a CDN: nothing here loads from a third party.
        docs_url=None,
        redoc_url=None,
    )
    app.add_middleware(_RequestMetrics)

    @app.exception_handler(Refusal)
    async def refused(_: Request, exc: Refusal) -> Response:
        return exc.response()

    max_body = gateway.settings.max_body_bytes
    max_batch = gateway.settings.max_batch

    async def read_body(receive: Receive, length: str | None, limit: int = max_body) -> bytes:
        """The body, refused (413) as soon as it passes ``limit``: never read whole first."""
        if length is not None:
            # isdigit() alone takes "²" (latin-1), which int() refuses; int() also refuses
            # more than 4300 digits, which is larger than any limit anyway.
            if not (length.isascii() and length.isdigit()):
                raise _refuse(400, "structure", "Content-Length is not a number")
            if len(length.lstrip("0")) > len(str(limit)) or int(length) > limit:
                raise _refuse(413, "too-costly", f"the body is larger than {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnect()
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _refuse(413, "too-costly", f"the body is larger than {limit} bytes")
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def authenticate(header: str | None) -> ClientRecord:
        if not header:
            raise _unauthorized(
                None, "an access token is required: Authorization: Bearer (POST /oauth/token)"
            )
        scheme, _, value = header.partition(" ")
        value = value.strip()
        if scheme.lower() != "bearer" or not value:
            raise _unauthorized("invalid_request", "use the Bearer scheme with an access token")
        try:
            client_id = gateway.tokens.verify(value)
        except InvalidToken as exc:
            raise _unauthorized("invalid_token", str(exc)) from None
        client = await gateway.clients.get(client_id)
        if client is None or not client.active:
            raise _unauthorized("invalid_token", "the client of this access token is revoked")
        return client

    def judge(value: bytes, client: ClientRecord, *, fhir: bool) -> _Verdict:
        event, found = problems(value, fhir=fhir, received_at=gateway.clock.now())
        if found or event is None:
            metrics.EVENTS.labels(result="invalid").inc()
            for problem in found:
                metrics.REFUSALS.labels(reason=problem.reason).inc()
            return _Verdict(value, None, found, status_for_problems(found))
        if not client.may_write(event.practice_id):
            metrics.EVENTS.labels(result="forbidden").inc()
            log.info(
                "refused: a practice outside the client's list",
                extra={"client_id": client.client_id, "practice_id": event.practice_id},
            )
            return _Verdict(value, event, [], 403)
        return _Verdict(value, event, [], 200)

    def unreadable(problem: Problem) -> _Verdict:
        metrics.EVENTS.labels(result="invalid").inc()
        metrics.REFUSALS.labels(reason=problem.reason).inc()
        return _Verdict(b"", None, [problem], status_for_problems([problem]))

    def forbidden_outcome(event: AppointmentEvent) -> dict[str, Any]:
        return operation_outcome(
            [
                issue(
                    "forbidden",
                    f"this client may not write for practice {event.practice_id}",
                    expression="practice_id",
                )
            ]
        )

    async def publish(event: AppointmentEvent, value: bytes, *, fhir: bool) -> Placement:
        started = time.perf_counter()
        try:
            placement = await gateway.publisher.publish(
                OutRecord(
                    practice_id=event.practice_id,
                    value=value,
                    fhir=fhir,
                    correlation_id=str(event.event_id),
                )
            )
        except PublishFailed as exc:
            metrics.EVENTS.labels(result="failed").inc()
            log.warning("the broker did not confirm an event", extra={"error": str(exc)})
            raise _refuse(
                503,
                "transient",
                "the event could not be stored now; retry the same request",
                **{"Retry-After": _RETRY_AFTER_SECONDS},
            ) from None
        metrics.PUBLISH_SECONDS.observe(time.perf_counter() - started)
        metrics.ACCEPTED.inc()
        return placement

    # ----------------------------------------------------------------- OAuth 2.0

    def token_error(status: int, error: str, description: str, **headers: str) -> Refusal:
        metrics.TOKENS.labels(result=error).inc()
        return Refusal(
            status,
            {"error": error, "error_description": description},
            {"Cache-Control": "no-store", "Pragma": "no-cache", **headers},
            fhir=False,
        )

    @app.post(
        "/oauth/token",
        tags=["OAuth 2.0"],
        summary="Client credentials grant (RFC 6749 section 4.4)",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/x-www-form-urlencoded": {
                        "schema": {
                            "type": "object",
                            "required": ["grant_type"],
                            "properties": {
                                "grant_type": {"type": "string", "enum": ["client_credentials"]},
                                "client_id": {"type": "string"},
                                "client_secret": {"type": "string"},
                                "scope": {"type": "string", "enum": [SCOPE]},
                            },
                        }
                    }
                },
            },
            "responses": {
                "200": {"description": "access_token, token_type Bearer, expires_in, scope"},
                "400": {"description": "invalid_request, unsupported_grant_type, invalid_scope"},
                "401": {"description": "invalid_client (unknown, revoked or wrong secret)"},
                "429": {"description": "too many failed attempts; see Retry-After"},
            },
        },
    )
    async def token(request: Request) -> Response:
        if _media_type(request.headers.get("content-type")) != "application/x-www-form-urlencoded":
            raise token_error(
                400, "invalid_request", "send application/x-www-form-urlencoded parameters"
            )
        body = await read_body(
            request.receive, request.headers.get("content-length"), _TOKEN_BODY_LIMIT
        )
        form = _form(body)
        if form is None:
            raise token_error(400, "invalid_request", "the parameters are not form-encoded")
        try:
            basic = _basic_credentials(request.headers.get("authorization"))
        except ValueError:
            raise token_error(
                401,
                "invalid_client",
                "the Authorization header is not HTTP Basic client credentials",
                **{"WWW-Authenticate": f'Basic realm="{REALM}"'},
            ) from None
        form_id, form_secret = form.get("client_id"), form.get("client_secret")
        if basic is not None and form_secret is not None:
            raise token_error(
                400, "invalid_request", "authenticate the client one way: HTTP Basic or form"
            )
        if basic is not None:
            client_id, secret = basic
            if form_id is not None and form_id != client_id:
                raise token_error(400, "invalid_request", "client_id differs from HTTP Basic")
        elif form_id and form_secret is not None:
            client_id, secret = form_id, form_secret
        else:
            raise token_error(
                401,
                "invalid_client",
                "client authentication is required (HTTP Basic or client_id and client_secret)",
                **{"WWW-Authenticate": f'Basic realm="{REALM}"'},
            )
        grant = form.get("grant_type")
        if grant is None:
            raise token_error(400, "invalid_request", "grant_type is required")
        if grant != "client_credentials":
            raise token_error(
                400, "unsupported_grant_type", "only grant_type=client_credentials is supported"
            )
        scope = form.get("scope")
        if scope is not None and set(scope.split()) - {SCOPE}:
            raise token_error(400, "invalid_scope", f"the only scope is {SCOPE}")

        host = request.client.host if request.client else "unknown"
        # A client id is at most 64 characters: a longer one must not grow the limiter.
        keys = (f"ip:{host}", f"client:{client_id[:64]}")
        wait = gateway.limiter.retry_after(*keys)
        if wait > 0:
            raise token_error(
                429,
                "invalid_request",
                "too many failed token requests; wait before trying again",
                **{"Retry-After": str(max(1, int(wait + 0.999)))},
            )
        # A client id of another shape names no client: refused as one that is unknown,
        # after the same (dummy) argon2 work, and counted as a failure.
        client = await gateway.store.get(client_id) if is_client_id(client_id) else None
        if not await verify_secret(client, secret) or client is None or not client.active:
            gateway.limiter.failed(*keys)
            log.info("token refused", extra={"client_id": client_id[:64], "remote": host})
            raise token_error(
                401,
                "invalid_client",
                "unknown client, wrong secret or revoked client",
                **{"WWW-Authenticate": f'Basic realm="{REALM}"'},
            )
        issued = gateway.tokens.issue(client.client_id)
        metrics.TOKENS.labels(result="issued").inc()
        return JsonResponse(
            {
                "access_token": issued.value,
                "token_type": "Bearer",
                "expires_in": issued.expires_in,
                "scope": SCOPE,
            },
            headers={"Cache-Control": "no-store", "Pragma": "no-cache"},
        )

    # ----------------------------------------------------------------- FHIR

    @app.get(
        "/fhir/metadata",
        tags=["FHIR"],
        summary="CapabilityStatement",
        response_class=FhirResponse,
    )
    async def metadata() -> Response:
        return FhirResponse(
            capability_statement(gateway.public_url, date=gateway.clock.now().date().isoformat()),
        )

    @app.put(
        "/fhir/Appointment/{appointment_id}",
        tags=["FHIR"],
        summary="Create or update an appointment (FHIR R4 update)",
        response_class=FhirResponse,
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    FHIR_CONTENT_TYPE: {
                        "schema": {"type": "object", "description": "FHIR R4 Appointment"}
                    }
                },
            },
            "responses": {
                "200": {"description": "stored on his.appointments.v1; the resource back"},
                "400": {"description": "not JSON, no Appointment, a bad URL id, ids that differ"},
                "401": {"description": "no, expired or invalid access token"},
                "403": {"description": "a practice this client may not write for"},
                "413": {"description": "the body is too large"},
                "415": {"description": "not application/fhir+json"},
                "422": {"description": "OperationOutcome: one issue per problem"},
                "503": {"description": "the broker did not confirm; retry"},
            },
        },
    )
    async def put_appointment(appointment_id: str, request: Request) -> Response:
        return (await put_endpoint(request.scope, request.receive)).response()

    location_prefix = f"{gateway.public_url}/fhir/Appointment/".encode("latin-1")

    async def put_endpoint(scope: Scope, receive: Receive) -> Answer:
        # The twin behind a root_path has it in path_params; the hot path in the path.
        appointment_id: str = (
            scope.get("path_params", {}).get("appointment_id") or scope["path"][len(_PUT_PREFIX) :]
        )
        head = _Head.of(scope)
        client = await authenticate(head.authorization)
        if _media_type(head.content_type) not in _JSON_TYPES:
            raise _refuse(415, "not-supported", f"send the resource as {FHIR_CONTENT_TYPE}")
        if _URL_ID.fullmatch(appointment_id) is None:
            metrics.EVENTS.labels(result="invalid").inc()
            raise _refuse(400, "invalid", _BAD_URL_ID)
        body = await read_body(receive, head.content_length)
        resource_id = _resource_id(body)
        if resource_id is not None and resource_id != appointment_id:
            metrics.EVENTS.labels(result="invalid").inc()
            shown = resource_id if len(resource_id) <= 64 else f"{resource_id[:64]}..."
            raise _refuse(
                400,
                "invalid",
                f"the resource's id ({shown}) differs from the id in the URL",
            )
        verdict = judge(body, client, fhir=True)
        if verdict.status == 403 and verdict.event is not None:
            raise Refusal(403, forbidden_outcome(verdict.event))
        if verdict.event is None:
            raise Refusal(verdict.status, outcome_for_problems(verdict.problems))
        if resource_id is None:
            metrics.EVENTS.labels(result="invalid").inc()
            raise _refuse(400, "required", "the resource must carry the id of the URL")
        event = verdict.event
        placement = await publish(event, body, fhir=True)
        sequence = event.sequence
        headers = [
            (b"etag", b'W/"%d"' % sequence),
            (
                b"location",
                b"%s%s/_history/%d" % (location_prefix, appointment_id.encode("ascii"), sequence),
            ),
            (b"x-kafka-partition", b"%d" % placement.partition),
            (b"x-kafka-offset", b"%d" % placement.offset),
        ]
        prefer = (head.prefer or "").replace(" ", "").lower()
        if "return=minimal" in prefer:
            return _answer(b"", headers, _FHIR_TYPE)
        if "return=operationoutcome" in prefer:
            accepted = issue(
                "informational",
                f"stored: partition {placement.partition}, offset {placement.offset}",
                severity="information",
            )
            return _answer(_json(operation_outcome([accepted])), headers, _FHIR_TYPE)
        return _answer(body, headers, _FHIR_TYPE)

    # ----------------------------------------------------------------- native

    @app.post(
        "/v1/appointment-events",
        tags=["Native events"],
        summary="One AppointmentEvent, or a list of at most max_batch (500)",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "oneOf": [
                                {"$ref": "#/components/schemas/AppointmentEvent"},
                                {
                                    "type": "array",
                                    "maxItems": max_batch,
                                    "items": {"$ref": "#/components/schemas/AppointmentEvent"},
                                },
                            ]
                        }
                    }
                },
            },
            "responses": {
                "200": {"description": "every event stored; per event: partition and offset"},
                "207": {"description": "a list with some events refused: see each result"},
                "400": {"description": "not JSON, or an empty list"},
                "401": {"description": "no, expired or invalid access token"},
                "403": {"description": "a practice this client may not write for"},
                "413": {"description": "the body is too large, or more than max_batch events"},
                "422": {"description": "OperationOutcome: one issue per problem"},
            },
        },
    )
    async def post_events(request: Request) -> Response:
        return (await post_endpoint(request.scope, request.receive)).response()

    async def post_endpoint(scope: Scope, receive: Receive) -> Answer:
        head = _Head.of(scope)
        client = await authenticate(head.authorization)
        if _media_type(head.content_type) not in _JSON_TYPES:
            raise _refuse(415, "not-supported", "send the events as application/json")
        body = await read_body(receive, head.content_length)
        items = _list_items(body)
        if items is None:
            # One event: its bytes are judged and published as they came.
            verdict = judge(body, client, fhir=False)
            if verdict.event is None:
                raise Refusal(verdict.status, outcome_for_problems(verdict.problems))
            if verdict.status == 403:
                raise Refusal(403, forbidden_outcome(verdict.event))
            placement = await publish(verdict.event, body, fhir=False)
            return _answer(_json(_accepted(verdict.event, placement)), [], _JSON_TYPE)
        if not items:
            raise _refuse(400, "required", "the list holds no events")
        if len(items) > max_batch:
            raise _refuse(
                413, "too-costly", f"at most {max_batch} events per request, not {len(items)}"
            )
        verdicts = [
            judge(item, client, fhir=False) if item is not None else unreadable(_TOO_DEEP)
            for item in items
        ]
        return await publish_batch(verdicts)

    async def publish_batch(verdicts: list[_Verdict]) -> Answer:
        async def one(verdict: _Verdict) -> Placement | Refusal:
            assert verdict.event is not None
            try:
                return await publish(verdict.event, verdict.value, fhir=False)
            except Refusal as refusal:
                return refusal

        sending = {
            i: asyncio.ensure_future(one(v)) for i, v in enumerate(verdicts) if v.status == 200
        }
        if sending:
            await asyncio.wait(sending.values())
        results: list[dict[str, Any]] = []
        statuses: set[int] = set()
        for i, verdict in enumerate(verdicts):
            result: dict[str, Any] = {"index": i}
            if verdict.event is None:
                result.update(
                    status="invalid",
                    http_status=verdict.status,
                    outcome=outcome_for_problems(verdict.problems),
                )
            elif verdict.status == 403:
                result.update(
                    status="forbidden",
                    http_status=403,
                    event_id=str(verdict.event.event_id),
                    outcome=forbidden_outcome(verdict.event),
                )
            else:
                sent = sending[i].result()
                if isinstance(sent, Refusal):
                    result.update(
                        status="failed",
                        http_status=sent.status,
                        event_id=str(verdict.event.event_id),
                        outcome=sent.body,
                    )
                else:
                    result.update(_accepted(verdict.event, sent), http_status=200)
            statuses.add(result["http_status"])
            results.append(result)
        accepted = sum(1 for r in results if r["status"] == "accepted")
        status = statuses.pop() if len(statuses) == 1 else 207
        document = {"accepted": accepted, "refused": len(results) - accepted, "results": results}
        return _answer(_json(document), [], _JSON_TYPE, status)

    # ----------------------------------------------------------------- operations

    @app.get("/healthz", tags=["Operations"], summary="Alive")
    async def healthz() -> Response:
        return JsonResponse({"status": "alive", "service": "his-gateway"})

    @app.get("/readyz", tags=["Operations"], summary="Ready: broker connected, schema current")
    async def readyz() -> Response:
        ready, details = gateway.readiness()
        return JsonResponse(
            {"ready": ready, "service": "his-gateway", **details},
            status_code=200 if ready else 503,
        )

    @app.get("/metrics", tags=["Operations"], summary="Prometheus metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    # The two write routes are served by _GatewayApi before FastAPI's stack: the
    # endpoints read the request themselves, so FastAPI's per-request machinery is pure
    # overhead on the hot path. The FastAPI twins stay for the OpenAPI document and
    # answer the same if reached (behind a root_path).
    app.put_endpoint = put_endpoint
    app.post_endpoint = post_endpoint
    _add_event_schema(app)
    return app


# --------------------------------------------------------------------------- helpers


def _accepted(event: AppointmentEvent, placement: Placement) -> dict[str, Any]:
    return {
        "status": "accepted",
        "event_id": str(event.event_id),
        "practice_id": event.practice_id,
        "appointment_id": event.appointment_id,
        "sequence": event.sequence,
        "partition": placement.partition,
        "offset": placement.offset,
    }


# Splits a JSON list into its items' texts without decoding them.
_LIST_DECODER: Final = msgspec.json.Decoder(list[msgspec.Raw])
_TOO_DEEP: Final = Problem(
    "not_json", "record: the JSON nests too deep to be read; an event needs a few levels"
)


def _list_items(body: bytes) -> list[bytes | None] | None:
    """The items of a JSON list, each its own JSON text as sent, so that each is judged
    (a key named twice, nesting too deep) and published exactly as it would be alone; None
    when the body is not a JSON list (then it is judged as one event). An item is None
    when it cannot be given as a text of its own (nested too deep: it is refused)."""
    try:
        return [bytes(raw) for raw in _LIST_DECODER.decode(body)]
    except msgspec.MsgspecError:
        return None  # not JSON (the parser says so) or JSON but not a list
    except RecursionError:
        pass  # nested deeper than msgspec's recursion allows here
    # orjson reads 1024 levels but writes only 254 back: a deeper item is refused alone.
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if not isinstance(document, list):
        return None
    items: list[bytes | None] = []
    for item in document:
        try:
            items.append(orjson.dumps(item))
        except orjson.JSONEncodeError:
            items.append(None)
    return items


class _IdOnly(msgspec.Struct):
    id: object = None


# Reads the top-level "id" and skips the rest (the last one, as orjson and the model).
_ID_DECODER: Final = msgspec.json.Decoder(_IdOnly)


def _resource_id(body: bytes) -> str | None:
    """The resource's ``id`` when the body is a JSON object with a text ``id``."""
    try:
        value = _ID_DECODER.decode(body).id
    except (msgspec.MsgspecError, RecursionError):
        return None
    return value if isinstance(value, str) else None


def _form(body: bytes) -> dict[str, str] | None:
    """application/x-www-form-urlencoded; a repeated parameter is an error (RFC 6749 §3.2)."""
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        return None
    form: dict[str, str] = {}
    for pair in text.split("&"):
        if not pair:
            continue
        name, _, value = pair.partition("=")
        name = unquote(name.replace("+", " "))
        if name in form:
            return None
        form[name] = unquote(value.replace("+", " "))
    return form


def _basic_credentials(header: str | None) -> tuple[str, str] | None:
    """(client_id, secret) from HTTP Basic; None without the header; ValueError if malformed."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        raise ValueError("not Basic")
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise ValueError("not base64 UTF-8") from None
    client_id, colon, secret = decoded.partition(":")
    if not colon or not client_id:
        raise ValueError("no client id")
    # RFC 6749 §2.3.1: both are form-urlencoded before Basic encoding.
    return unquote(client_id.replace("+", " ")), unquote(secret.replace("+", " "))


def _add_event_schema(app: FastAPI) -> None:
    """Put the AppointmentEvent JSON Schema into the OpenAPI document's components."""
    original = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = original()
        event_schema = AppointmentEvent.model_json_schema(
            ref_template="#/components/schemas/{model}"
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(event_schema.pop("$defs", {}))
        components["AppointmentEvent"] = event_schema
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
