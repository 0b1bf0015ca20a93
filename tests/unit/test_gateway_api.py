"""his-gateway over HTTP with an in-memory client store and a recording publisher.

What a vendor sees: tokens, the FHIR PUT, native events, and every refusal with its body;
and that nothing refused is handed to the publisher. The real broker: tests/kafka.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import OctKey

from services.common.clock import FakeClock
from services.common.settings import GatewaySettings
from services.domain.partition import partition_for
from services.his_gateway.api import build_api
from services.his_gateway.clients import ClientRecord, MemoryClientStore
from services.his_gateway.gateway import Gateway
from services.his_gateway.publisher import MemoryPublisher

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples" / "his"
SECRET = "test-token-secret-" + "x" * 32
PRACTICE = "01054321"
OTHER_PRACTICE = "01999002"
FHIR = "application/fhir+json"


def fhir_resource() -> dict[str, Any]:
    return json.loads((EXAMPLES / "appointment-fhir.json").read_text())


def native_event() -> dict[str, Any]:
    return json.loads((EXAMPLES / "appointment-native.json").read_text())


def for_practice(resource: dict[str, Any], practice: str) -> dict[str, Any]:
    for participant in resource["participant"]:
        actor = participant.get("actor", {})
        if actor.get("reference", "").startswith("Location/"):
            actor["identifier"]["value"] = practice
    return resource


@dataclass
class Env:
    http: httpx.AsyncClient
    store: MemoryClientStore
    publisher: MemoryPublisher
    gateway: Gateway
    clock: FakeClock
    monotonic: list[float]
    client: ClientRecord
    secret: str

    async def token(self, client_id: str | None = None, secret: str | None = None) -> str:
        response = await self.http.post(
            "/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(client_id or self.client.client_id, secret or self.secret),
        )
        assert response.status_code == 200, response.text
        return str(response.json()["access_token"])

    async def put(
        self, resource: dict[str, Any] | bytes, token: str | None, path_id: str | None = None
    ) -> httpx.Response:
        body = resource if isinstance(resource, bytes) else json.dumps(resource).encode()
        rid = path_id or (resource["id"] if isinstance(resource, dict) else "A-1")
        headers = {"Content-Type": FHIR}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return await self.http.put(f"/fhir/Appointment/{rid}", content=body, headers=headers)

    async def post(self, events: Any, token: str) -> httpx.Response:
        return await self.http.post(
            "/v1/appointment-events",
            content=json.dumps(events).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    store = MemoryClientStore()
    client, secret = await store.add("Medicom test", [PRACTICE])
    publisher = MemoryPublisher(partitions=3)
    clock = FakeClock(datetime(2026, 11, 20, 13, 0, tzinfo=UTC))
    monotonic = [1000.0]
    gateway = Gateway(
        GatewaySettings(max_body_bytes=8192, max_batch=5),
        store=store,
        publisher=publisher,
        token_secret=SECRET,
        clock=clock,
        monotonic=lambda: monotonic[0],
    )
    api = build_api(gateway)
    await gateway.start()
    transport = httpx.ASGITransport(app=api, client=("192.0.2.10", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as http:
        yield Env(http, store, publisher, gateway, clock, monotonic, client, secret)
    await gateway.stop()


def reasons(outcome: dict[str, Any]) -> list[str]:
    assert outcome["resourceType"] == "OperationOutcome"
    found = []
    for entry in outcome["issue"]:
        for coding in entry.get("details", {}).get("coding", []):
            found.append(coding["code"])
    return found


# --------------------------------------------------------------------------- tokens


async def test_token_by_http_basic_is_short_lived_bearer(env: Env) -> None:
    response = await env.http.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(env.client.client_id, env.secret),
    )
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 300
    assert body["access_token"].count(".") == 2
    assert response.headers["cache-control"] == "no-store"


async def test_token_by_form_fields(env: Env) -> None:
    response = await env.http.post(
        "/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": env.client.client_id,
            "client_secret": env.secret,
            "scope": "system/Appointment.write",
        },
    )
    assert response.status_code == 200, response.text
    assert response.json()["scope"] == "system/Appointment.write"


async def test_token_refusals_follow_rfc_6749(env: Env) -> None:
    wrong = await env.http.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(env.client.client_id, "not-the-secret"),
    )
    assert wrong.status_code == 401
    assert wrong.json()["error"] == "invalid_client"
    assert wrong.headers["www-authenticate"].startswith("Basic")
    assert "access_token" not in wrong.json()

    unknown = await env.http.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "client_id": "his-nobody", "client_secret": "x"},
    )
    assert unknown.status_code == 401 and unknown.json()["error"] == "invalid_client"

    grant = await env.http.post(
        "/oauth/token", data={"grant_type": "password"}, auth=(env.client.client_id, env.secret)
    )
    assert grant.status_code == 400 and grant.json()["error"] == "unsupported_grant_type"

    both = await env.http.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "client_secret": env.secret},
        auth=(env.client.client_id, env.secret),
    )
    assert both.status_code == 400 and both.json()["error"] == "invalid_request"

    scope = await env.http.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "scope": "system/*.*"},
        auth=(env.client.client_id, env.secret),
    )
    assert scope.status_code == 400 and scope.json()["error"] == "invalid_scope"

    json_body = await env.http.post(
        "/oauth/token",
        json={"grant_type": "client_credentials"},
        auth=(env.client.client_id, env.secret),
    )
    assert json_body.status_code == 400 and json_body.json()["error"] == "invalid_request"

    garbage = await env.http.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        headers={"Authorization": "Basic !!!"},
    )
    assert garbage.status_code == 401 and garbage.json()["error"] == "invalid_client"


async def test_failed_token_requests_are_rate_limited(env: Env) -> None:
    for _ in range(10):
        response = await env.http.post(
            "/oauth/token",
            data={"grant_type": "client_credentials"},
            auth=(env.client.client_id, "guess"),
        )
        assert response.status_code == 401
    # Blocked now, even with the right secret: guessing cannot continue.
    blocked = await env.http.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(env.client.client_id, env.secret),
    )
    assert blocked.status_code == 429
    assert int(blocked.headers["retry-after"]) > 0
    env.monotonic[0] += 61
    assert await env.token()


async def test_a_revoked_client_gets_no_token(env: Env) -> None:
    await env.store.revoke(env.client.client_id)
    response = await env.http.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(env.client.client_id, env.secret),
    )
    assert response.status_code == 401 and response.json()["error"] == "invalid_client"


# --------------------------------------------------------------------------- bearer


async def test_missing_forged_and_expired_tokens_get_401_with_a_challenge(env: Env) -> None:
    missing = await env.put(fhir_resource(), None)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == 'Bearer realm="his-gateway"'
    assert missing.json()["resourceType"] == "OperationOutcome"

    claims = {
        "iss": "urn:e-afspraken:his-gateway",
        "aud": "urn:e-afspraken:his-gateway:fhir",
        "sub": env.client.client_id,
        "iat": int(env.clock.now().timestamp()),
        "exp": int(env.clock.now().timestamp()) + 300,
    }
    forged = jwt.encode({"alg": "HS256"}, claims, OctKey.import_key("another-secret-" + "y" * 32))
    response = await env.put(fhir_resource(), forged)
    assert response.status_code == 401
    assert 'error="invalid_token"' in response.headers["www-authenticate"]

    token = await env.token()
    env.clock.advance(301 + 5)
    expired = await env.put(fhir_resource(), token)
    assert expired.status_code == 401
    assert "expired" in expired.headers["www-authenticate"]

    wrong_scheme = await env.http.put(
        "/fhir/Appointment/A-1",
        content=b"{}",
        headers={"Authorization": f"Basic {base64.b64encode(b'a:b').decode()}"},
    )
    assert wrong_scheme.status_code == 401
    assert env.publisher.records == []


async def test_a_token_used_before_still_expires_on_time(env: Env) -> None:
    token = await env.token()
    assert (await env.put(fhir_resource(), token)).status_code == 200
    env.clock.advance(290)
    assert (await env.put(fhir_resource(), token)).status_code == 200
    env.clock.advance(20)  # past exp plus the 5 s leeway
    response = await env.put(fhir_resource(), token)
    assert response.status_code == 401
    assert "expired" in response.headers["www-authenticate"]
    assert len(env.publisher.records) == 2


async def test_a_revoked_clients_token_stops_working_within_seconds(env: Env) -> None:
    token = await env.token()
    assert (await env.put(fhir_resource(), token)).status_code == 200
    await env.store.revoke(env.client.client_id)
    env.monotonic[0] += 2.5  # the client cache holds a state at most two seconds
    response = await env.put(fhir_resource(), token)
    assert response.status_code == 401
    assert "revoked" in response.headers["www-authenticate"]
    assert len(env.publisher.records) == 1


# --------------------------------------------------------------------------- FHIR PUT


async def test_put_publishes_the_resource_as_fhir_keyed_by_practice(env: Env) -> None:
    token = await env.token()
    resource = fhir_resource()
    response = await env.put(resource, token)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(FHIR)
    assert response.json() == resource
    assert response.headers["etag"] == 'W/"1"'
    [record] = env.publisher.records
    assert record.practice_id == PRACTICE and record.fhir
    assert json.loads(record.value) == resource


async def test_put_prefer_minimal_and_operation_outcome(env: Env) -> None:
    token = await env.token()
    body = json.dumps(fhir_resource()).encode()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": FHIR}
    minimal = await env.http.put(
        "/fhir/Appointment/A-2026-118735",
        content=body,
        headers={**headers, "Prefer": "return=minimal"},
    )
    assert minimal.status_code == 200 and minimal.content == b""
    outcome = await env.http.put(
        "/fhir/Appointment/A-2026-118735",
        content=body,
        headers={**headers, "Prefer": "return=OperationOutcome"},
    )
    assert outcome.json()["issue"][0]["severity"] == "information"


async def test_repeating_a_put_publishes_the_same_resource_again(env: Env) -> None:
    token = await env.token()
    first = await env.put(fhir_resource(), token)
    second = await env.put(fhir_resource(), token)
    assert first.status_code == second.status_code == 200
    # Same bytes, same version: booking_events derives the same event id and drops it.
    assert env.publisher.records[0] == env.publisher.records[1]


async def test_path_id_must_equal_the_resource_id(env: Env) -> None:
    token = await env.token()
    response = await env.put(fhir_resource(), token, path_id="A-OTHER")
    assert response.status_code == 400
    assert "differs" in response.json()["issue"][0]["diagnostics"]
    no_id = fhir_resource()
    del no_id["id"]
    no_id["identifier"] = [{"value": "A-2026-118735"}]
    response = await env.put(no_id, token, path_id="A-2026-118735")
    assert response.status_code == 400
    assert env.publisher.records == []


@pytest.mark.parametrize(
    ("quoted", "resource_id"),
    [
        ("A-1%E2%80%83", "A-1\u2003"),  # an em space, which the model's strip removes
        ("A-1%0D%0A", "A-1\r\n"),
        ("A-1%0A", "A-1\n"),
        ("A%201", "A 1"),
        ("%C3%A9", "\u00e9"),
        ("-A1", "-A1"),
        ("A" * 65, "A" * 65),
    ],
    ids=["em-space", "crlf", "lf", "space", "latin-1", "leading-dash", "65-chars"],
)
async def test_a_url_id_that_is_no_id_is_400_before_anything_is_published(
    env: Env, quoted: str, resource_id: str
) -> None:
    """Such an id once went into the Location header after the event was published: a
    500 (or a dropped connection) for a stored event."""
    token = await env.token()
    resource = fhir_resource() | {"id": resource_id}
    response = await env.http.put(
        f"/fhir/Appointment/{quoted}",
        content=json.dumps(resource).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": FHIR},
    )
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith(FHIR)
    [entry] = response.json()["issue"]
    assert entry["code"] == "invalid"
    assert "the id in the URL is not an appointment id" in entry["diagnostics"]
    assert env.publisher.records == []


async def test_a_refused_id_is_not_echoed_unbounded(env: Env) -> None:
    token = await env.token()
    long_id = "A" * 3000
    resource = fhir_resource() | {"id": long_id}
    url = await env.put(resource, token, path_id="x" * 3000 + "%00")
    assert url.status_code == 400 and "x" * 65 not in url.text
    differs = await env.put(resource, token, path_id="A-1")
    assert differs.status_code == 400
    assert "differs" in differs.text and "A" * 65 not in differs.text
    assert env.publisher.records == []


async def test_url_ids_with_the_domains_alphabet_are_stored(env: Env) -> None:
    token = await env.token()
    for appointment_id in ("A_1:2.b-3", "9" * 64):
        response = await env.put(fhir_resource() | {"id": appointment_id}, token)
        assert response.status_code == 200, response.text
        assert response.headers["location"] == (
            f"http://127.0.0.1:8081/fhir/Appointment/{appointment_id}/_history/1"
        )
    assert len(env.publisher.records) == 2


@pytest.mark.parametrize(
    ("change", "status", "reason"),
    [
        (lambda r: r.update(start="2026-12-01T09:40:00"), 422, "time_without_offset"),
        (lambda r: r.update(end="2026-12-01T09:00:00+01:00"), 422, "end_before_start"),
        (
            lambda r: r["participant"][0]["actor"].update(reference="Patient/123456782"),
            422,
            "bsn_like_patient_id",
        ),
        (lambda r: r.update(status="planned"), 422, "unknown_status"),
        (lambda r: r.update(resourceType="Patient"), 400, "not_an_appointment"),
    ],
    ids=["no-offset", "end-before-start", "bsn", "status", "not-appointment"],
)
async def test_invalid_resources_get_an_operation_outcome_with_the_dlq_reason(
    env: Env, change: Any, status: int, reason: str
) -> None:
    token = await env.token()
    resource = fhir_resource()
    change(resource)
    response = await env.put(resource, token)
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(FHIR)
    assert reason in reasons(response.json())
    assert env.publisher.records == []


async def test_every_problem_is_listed_with_its_field(env: Env) -> None:
    token = await env.token()
    resource = fhir_resource()
    resource["start"] = "2026-12-01T09:40:00"
    resource["participant"][0]["actor"]["reference"] = "Patient/123456782"
    response = await env.put(resource, token)
    assert response.status_code == 422
    outcome = response.json()
    assert {"time_without_offset", "bsn_like_patient_id"} <= set(reasons(outcome))
    assert all(entry.get("expression") for entry in outcome["issue"])
    assert "123456782" not in response.text  # the detail never echoes a value

    event = native_event() | {"start": "2026-12-01T09:30:00", "patient": {"id": "123456782"}}
    response = await env.post(event, token)
    assert response.status_code == 422
    assert {"time_without_offset", "bsn_like_patient_id"} <= set(reasons(response.json()))
    assert env.publisher.records == []


async def test_not_json_is_400_not_json(env: Env) -> None:
    token = await env.token()
    response = await env.put(b"{not json", token, path_id="A-1")
    assert response.status_code == 400
    assert reasons(response.json()) == ["not_json"]
    assert env.publisher.records == []


async def test_a_practice_outside_the_clients_list_is_403(env: Env) -> None:
    token = await env.token()
    response = await env.put(for_practice(fhir_resource(), OTHER_PRACTICE), token)
    assert response.status_code == 403
    outcome = response.json()
    assert outcome["issue"][0]["code"] == "forbidden"
    assert OTHER_PRACTICE in outcome["issue"][0]["diagnostics"]
    assert env.publisher.records == []


async def test_a_body_over_the_limit_is_refused_before_it_is_parsed(env: Env) -> None:
    token = await env.token()
    big = fhir_resource()
    big["comment"] = "x" * 10_000
    response = await env.put(big, token)
    assert response.status_code == 413
    assert response.json()["issue"][0]["code"] == "too-costly"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
        for _ in range(20):
            yield b" " * 1000

    response = await env.http.put(
        "/fhir/Appointment/A-1",
        content=chunks(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": FHIR},
    )
    assert response.status_code == 413
    assert env.publisher.records == []


@pytest.mark.parametrize(
    ("length", "status"), [(b"\xb2", 400), (b"1\xb9", 400), (b"9" * 5000, 413)]
)
async def test_a_content_length_that_int_refuses_is_answered(
    env: Env, length: bytes, status: int
) -> None:
    token = await env.token()
    response = await env.http.post(
        "/v1/appointment-events",
        content=json.dumps(native_event()).encode(),
        headers=[
            (b"authorization", f"Bearer {token}".encode()),
            (b"content-type", b"application/json"),
            (b"content-length", length),
        ],
    )
    assert response.status_code == status, response.text
    assert env.publisher.records == []


async def test_wrong_media_type_is_415(env: Env) -> None:
    token = await env.token()
    response = await env.http.put(
        "/fhir/Appointment/A-2026-118735",
        content=json.dumps(fhir_resource()).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "text/plain"},
    )
    assert response.status_code == 415
    assert env.publisher.records == []


async def test_broker_not_confirming_is_503_retry(env: Env) -> None:
    token = await env.token()
    env.publisher.down = True
    response = await env.put(fhir_resource(), token)
    assert response.status_code == 503
    assert response.headers["retry-after"]
    assert response.json()["issue"][0]["code"] == "transient"


# --------------------------------------------------------------------------- native


async def test_one_native_event(env: Env) -> None:
    token = await env.token()
    response = await env.post(native_event(), token)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "accepted"
    assert body["partition"] == partition_for(PRACTICE, 3)
    [record] = env.publisher.records
    assert not record.fhir and record.practice_id == PRACTICE


async def test_a_list_is_answered_per_event(env: Env) -> None:
    token = await env.token()
    good = native_event()
    bad = native_event() | {
        "start": "2026-12-01T09:30:00",
        "event_id": "1" * 8 + "-0000-4000-8000-" + "0" * 12,
    }
    foreign = native_event() | {"practice_id": OTHER_PRACTICE}
    response = await env.post([good, bad, foreign], token)
    assert response.status_code == 207
    body = response.json()
    assert body["accepted"] == 1 and body["refused"] == 2
    first, second, third = body["results"]
    assert first["status"] == "accepted" and first["index"] == 0
    assert second["status"] == "invalid" and second["http_status"] == 422
    assert "time_without_offset" in reasons(second["outcome"])
    assert third["status"] == "forbidden" and third["http_status"] == 403
    assert [r.practice_id for r in env.publisher.records] == [PRACTICE]


async def test_a_list_all_valid_is_200_and_limits_hold(env: Env) -> None:
    token = await env.token()
    events = []
    for n in range(5):
        event = native_event()
        event["event_id"] = f"00000000-0000-4000-8000-00000000000{n}"
        event["appointment_id"] = f"A-{n}"
        events.append(event)
    response = await env.post(events, token)
    assert response.status_code == 200
    assert response.json()["accepted"] == 5
    too_many = await env.post(events + events[:1], token)
    assert too_many.status_code == 413
    empty = await env.post([], token)
    assert empty.status_code == 400
    invalid_single = await env.post(native_event() | {"end": "2026-12-01T09:00:00+01:00"}, token)
    assert invalid_single.status_code == 422
    assert "end_before_start" in reasons(invalid_single.json())
    assert len(env.publisher.records) == 5


def numbered(n: int) -> dict[str, Any]:
    event = native_event()
    event["event_id"] = f"00000000-0000-4000-8000-00000000000{n}"
    event["appointment_id"] = f"A-{n}"
    return event


@pytest.mark.parametrize("depth", [300, 1000], ids=["past-orjson-dumps", "past-msgspec"])
async def test_a_deeply_nested_item_is_refused_alone(env: Env, depth: int) -> None:
    """orjson reads 1024 levels but writes 254 back: such an item once raised TypeError
    while the batch was re-encoded, a 500 for the whole batch."""
    token = await env.token()
    deep = json.dumps(numbered(1))[:-1] + ', "extra": ' + "[" * depth + "]" * depth + "}"
    body = f"[{json.dumps(numbered(0))}, {deep}, {json.dumps(numbered(2))}]".encode()
    response = await env.http.post(
        "/v1/appointment-events",
        content=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    assert response.status_code == 207, response.text
    first, second, third = response.json()["results"]
    assert first["status"] == third["status"] == "accepted"
    assert second["status"] == "invalid" and second["http_status"] == 400
    assert reasons(second["outcome"]) == ["not_json"]
    assert [json.loads(r.value)["appointment_id"] for r in env.publisher.records] == [
        "A-0",
        "A-2",
    ]


async def test_a_key_named_twice_is_refused_in_a_list_as_alone(env: Env) -> None:
    token = await env.token()
    text = json.dumps(numbered(1))
    # "id":"123456782" first, "id":"pt-..." last: the last would win silently.
    sneaky = text.replace('"patient": {', '"patient": {"id": "123456782", ', 1)
    alone = await env.http.post(
        "/v1/appointment-events",
        content=sneaky.encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    assert alone.status_code == 422 and "duplicate_key" in reasons(alone.json())
    body = f"[{json.dumps(numbered(0))}, {sneaky}]".encode()
    response = await env.http.post(
        "/v1/appointment-events",
        content=body,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    assert response.status_code == 207, response.text
    first, second = response.json()["results"]
    assert first["status"] == "accepted"
    assert second["status"] == "invalid" and second["http_status"] == alone.status_code
    assert reasons(second["outcome"]) == reasons(alone.json())
    assert [json.loads(r.value)["appointment_id"] for r in env.publisher.records] == ["A-0"]


async def test_list_items_are_published_as_sent(env: Env) -> None:
    token = await env.token()
    item = json.dumps(numbered(0), indent=1)
    response = await env.http.post(
        "/v1/appointment-events",
        content=f"[ {item} ]".encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    assert [r.value for r in env.publisher.records] == [item.encode()]


# --------------------------------------------------------------------------- operations


async def test_metadata_openapi_and_health(env: Env) -> None:
    metadata = await env.http.get("/fhir/metadata")
    assert metadata.status_code == 200
    statement = metadata.json()
    assert statement["resourceType"] == "CapabilityStatement"
    assert statement["rest"][0]["resource"][0]["type"] == "Appointment"

    openapi = (await env.http.get("/openapi.json")).json()
    assert {"/oauth/token", "/fhir/Appointment/{appointment_id}", "/v1/appointment-events"} <= set(
        openapi["paths"]
    )
    assert "AppointmentEvent" in openapi["components"]["schemas"]
    assert (await env.http.get("/docs")).status_code == 404  # no CDN-loaded pages

    assert (await env.http.get("/healthz")).status_code == 200
    ready = await env.http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] is True
    env.publisher._connected = False
    assert (await env.http.get("/readyz")).status_code == 503
    metrics = (await env.http.get("/metrics")).text
    assert "reminders_gateway_requests_total" in metrics
