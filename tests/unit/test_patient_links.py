"""Patient links: the signed token and the one-click unsubscribe router (fakes, no Kafka)."""

from __future__ import annotations

import base64
import logging
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI

from schemas.models import PatientPreferences
from services.common.clock import FakeClock
from services.common.patient_links import (
    InvalidPatientLink,
    PatientLinkSigner,
    unsubscribe_url,
)
from services.practice_admin.unsubscribe import (
    PatientLinks,
    PreferencesUnavailable,
    RedactPatientLinks,
    install,
)

NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
SECRET = "test-secret-key-for-patient-links"
PRACTICE = "01999001"
PATIENT = "pt-3f9a1c"
EMAIL = "jan.devries@example.org"


def _signer(secret: str = SECRET) -> PatientLinkSigner:
    return PatientLinkSigner(secret)


# --------------------------------------------------------------------------- the token


def test_token_round_trip() -> None:
    token = _signer().issue(PRACTICE, PATIENT, NOW)
    link = _signer().verify(token, NOW + timedelta(days=30))
    assert (link.practice_id, link.patient_id) == (PRACTICE, PATIENT)
    assert link.issued_at == NOW
    assert link.key == f"{PRACTICE}/{PATIENT}"


def test_token_is_url_safe_and_names_no_address() -> None:
    token = _signer().issue(PRACTICE, PATIENT, NOW)
    assert token.startswith("1.")
    assert all(c.isalnum() or c in "-_." for c in token)
    assert "@" not in token and PATIENT not in token
    url = unsubscribe_url("https://beheer.example.org/", token)
    assert url == f"https://beheer.example.org/u/{token}"


def _flip(text: str, index: int) -> str:
    swapped = "A" if text[index] != "A" else "B"
    return text[:index] + swapped + text[index + 1 :]


@pytest.mark.parametrize("where", ["payload", "mac", "version"])
def test_altered_token_is_refused(where: str) -> None:
    token = _signer().issue(PRACTICE, PATIENT, NOW)
    version, payload, mac = token.split(".")
    if where == "payload":
        token = f"{version}.{_flip(payload, 3)}.{mac}"
    elif where == "mac":
        token = f"{version}.{payload}.{_flip(mac, 5)}"
    else:
        token = f"2.{payload}.{mac}"
    with pytest.raises(InvalidPatientLink):
        _signer().verify(token, NOW)


def test_other_patient_in_payload_is_refused() -> None:
    token = _signer().issue(PRACTICE, PATIENT, NOW)
    version, _, mac = token.split(".")
    forged = base64.urlsafe_b64encode(f"{PRACTICE} pt-other {int(NOW.timestamp())}".encode())
    with pytest.raises(InvalidPatientLink):
        _signer().verify(f"{version}.{forged.decode().rstrip('=')}.{mac}", NOW)


def test_foreign_key_is_refused() -> None:
    token = _signer("another deployment's secret").issue(PRACTICE, PATIENT, NOW)
    with pytest.raises(InvalidPatientLink) as caught:
        _signer().verify(token, NOW)
    assert caught.value.reason == "bad_signature"


@pytest.mark.parametrize("token", ["", "x", "1..", "1.a.b", "1.!!!.???", "1." + "A" * 500 + ".A"])
def test_malformed_token_is_refused(token: str) -> None:
    with pytest.raises(InvalidPatientLink):
        _signer().verify(token, NOW)


def test_expired_and_future_tokens_are_refused() -> None:
    token = _signer().issue(PRACTICE, PATIENT, NOW)
    with pytest.raises(InvalidPatientLink) as old:
        _signer().verify(token, NOW + timedelta(days=401))
    assert old.value.reason == "expired"
    with pytest.raises(InvalidPatientLink) as future:
        _signer().verify(token, NOW - timedelta(hours=1))
    assert future.value.reason == "from_the_future"


def test_rotated_secret_still_verifies_old_links() -> None:
    token = _signer("old secret").issue(PRACTICE, PATIENT, NOW)
    rotated = PatientLinkSigner("new secret", previous_secrets=["old secret"])
    assert rotated.verify(token, NOW).patient_id == PATIENT
    assert rotated.issue(PRACTICE, PATIENT, NOW) == _signer("new secret").issue(
        PRACTICE, PATIENT, NOW
    )


def test_ids_outside_the_alphabet_are_not_issued() -> None:
    with pytest.raises(ValueError):
        _signer().issue(PRACTICE, "has space", NOW)


# --------------------------------------------------------------------------- the router


class FakePreferences:
    def __init__(self, *records: PatientPreferences) -> None:
        self.rows = {r.key: r for r in records}
        self.published: list[PatientPreferences] = []
        self.reads = 0
        self.down = False

    async def current(self, practice_id: str, patient_id: str) -> PatientPreferences | None:
        self.reads += 1
        if self.down:
            raise PreferencesUnavailable("down")
        return self.rows.get(f"{practice_id}/{patient_id}")

    async def publish(self, prefs: PatientPreferences) -> None:
        self.published.append(prefs)
        self.rows[prefs.key] = prefs


def _prefs(reminders: bool = True) -> PatientPreferences:
    return PatientPreferences(
        practice_id=PRACTICE,
        patient_id=PATIENT,
        reminders=reminders,
        email=EMAIL,
        language="en",
        updated_at=NOW - timedelta(days=3),
    )


def _app(store: FakePreferences, clock: FakeClock) -> FastAPI:
    app = FastAPI()
    install(app, PatientLinks(signer=_signer(), reader=store, publisher=store, clock=clock))
    return app


def _client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="https://beheer.example.org"
    )


ONE_CLICK = {"List-Unsubscribe": "One-Click"}


async def test_get_shows_a_button_and_changes_nothing() -> None:
    store = FakePreferences(_prefs())
    clock = FakeClock(NOW)
    token = _signer().issue(PRACTICE, PATIENT, NOW)
    async with _client(_app(store, clock)) as client:
        response = await client.get(f"/u/{token}")
    assert response.status_code == 200
    assert '<form method="post">' in response.text
    assert 'name="List-Unsubscribe" value="One-Click"' in response.text
    assert EMAIL not in response.text and PATIENT not in response.text
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert store.published == [] and store.reads == 0


async def test_post_switches_reminders_off_and_keeps_the_rest() -> None:
    store = FakePreferences(_prefs())
    clock = FakeClock(NOW)
    token = _signer().issue(PRACTICE, PATIENT, NOW - timedelta(hours=20))
    async with _client(_app(store, clock)) as client:
        response = await client.post(f"/u/{token}", data=ONE_CLICK)
        assert response.status_code == 200
        assert "afgemeld" in response.text
        [switched] = store.published
        assert switched.reminders is False
        assert switched.updated_at == NOW
        before = _prefs().model_dump(exclude={"reminders", "updated_at"})
        assert switched.model_dump(exclude={"reminders", "updated_at"}) == before
        # The second click (or the mail client's retry) writes nothing.
        again = await client.post(f"/u/{token}", data=ONE_CLICK)
        assert again.status_code == 200
        assert len(store.published) == 1


async def test_post_as_multipart_works_too() -> None:
    store = FakePreferences(_prefs())
    token = _signer().issue(PRACTICE, PATIENT, NOW)
    async with _client(_app(store, FakeClock(NOW))) as client:
        response = await client.post(f"/u/{token}", files={"List-Unsubscribe": (None, "One-Click")})
    assert response.status_code == 200
    assert [p.reminders for p in store.published] == [False]


async def test_post_without_the_one_click_field_changes_nothing() -> None:
    store = FakePreferences(_prefs())
    token = _signer().issue(PRACTICE, PATIENT, NOW)
    async with _client(_app(store, FakeClock(NOW))) as client:
        response = await client.post(f"/u/{token}", data={"List-Unsubscribe": "yes"})
    assert response.status_code == 400
    assert store.published == []


async def test_patient_without_record_gets_the_same_answer_and_nothing_is_written() -> None:
    store = FakePreferences()
    token = _signer().issue(PRACTICE, PATIENT, NOW)
    async with _client(_app(store, FakeClock(NOW))) as client:
        response = await client.post(f"/u/{token}", data=ONE_CLICK)
    assert response.status_code == 200
    assert "afgemeld" in response.text
    assert store.published == []


@pytest.mark.parametrize("method", ["get", "post"])
async def test_tampered_or_foreign_token_changes_nothing_and_reveals_nothing(
    method: str,
) -> None:
    store = FakePreferences(_prefs())
    good = _signer().issue(PRACTICE, PATIENT, NOW)
    version, payload, mac = good.split(".")
    tokens = [
        f"{version}.{payload}.{_flip(mac, 2)}",
        _signer("foreign").issue(PRACTICE, PATIENT, NOW),
        "not-a-token",
    ]
    answers = set()
    async with _client(_app(store, FakeClock(NOW))) as client:
        for token in tokens:
            if method == "get":
                response = await client.get(f"/u/{token}")
            else:
                response = await client.post(f"/u/{token}", data=ONE_CLICK)
            assert response.status_code == 400
            assert PRACTICE not in response.text and PATIENT not in response.text
            answers.add(response.text)
    assert len(answers) == 1, "every bad token gets the very same page"
    assert store.published == [] and store.reads == 0


async def test_topic_unavailable_answers_try_later() -> None:
    store = FakePreferences(_prefs())
    store.down = True
    token = _signer().issue(PRACTICE, PATIENT, NOW)
    async with _client(_app(store, FakeClock(NOW))) as client:
        response = await client.post(f"/u/{token}", data=ONE_CLICK)
    assert response.status_code == 503
    assert response.headers["retry-after"] == "120"
    assert store.published == []


def test_access_log_filter_hides_the_token() -> None:
    token = _signer().issue(PRACTICE, PATIENT, NOW)
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "POST", f"/u/{token}", "1.1", 200),
        None,
    )
    assert RedactPatientLinks().filter(record)
    assert token not in record.getMessage()
    assert "/u/[token]" in record.getMessage()


def test_a_token_in_another_spelling_of_the_same_bytes_is_refused() -> None:
    signer = _signer()
    token = signer.issue(PRACTICE, PATIENT, NOW)
    version, payload, mac = token.split(".")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    # 32 MAC bytes are 43 characters; the last carries 2 unused bits.
    twin = mac[:-1] + alphabet[alphabet.index(mac[-1]) ^ 1]
    assert base64.urlsafe_b64decode(twin + "=") == base64.urlsafe_b64decode(mac + "=")
    with pytest.raises(InvalidPatientLink):
        signer.verify(f"{version}.{payload}.{twin}", NOW)
    assert signer.verify(token, NOW).patient_id == PATIENT
