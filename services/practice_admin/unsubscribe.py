"""One-click unsubscribe (RFC 8058): ``GET`` and ``POST /u/{token}``, no account needed.

- ``GET`` shows a page with one button and changes nothing, so link scanners and
  previews unsubscribe nobody.
- ``POST`` with ``List-Unsubscribe=One-Click`` (what mail clients send, and what the
  button sends) switches reminders off: a new PatientPreferences with ``reminders:
  false`` and every other field kept goes to ``patient.preferences.v1``, where the
  notifier (and the portal) read it. A patient whose reminders are already off, or who
  has no record (no consent), gets the same answer and nothing is written: a second POST
  is a no-op.
- A token that is not ours (forged, altered, signed with another key, expired) gets
  one answer, 400, that says the link does not work and nothing else.

The token is a capability: it never appears in a log line written here. The access log
of the ASGI server does write request paths: install :class:`RedactPatientLinks` on it.

Wiring: build a :class:`PatientLinks` (the signer, a :class:`PreferencesReader`, a
:class:`PreferencesPublisher`, a clock), put it on ``app.state.patient_links`` with
:func:`install`, and include :data:`router`. :func:`open_kafka_patient_links` builds the
Kafka-backed reader and publisher from the settings.
"""

from __future__ import annotations

import asyncio
import html
import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Literal, Protocol

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse

from schemas.models import PatientPreferences
from schemas.topics import Topics
from services.common.clock import Clock, SystemClock
from services.common.kafka import describe_partitions, make_producer
from services.common.patient_links import InvalidPatientLink, PatientLinkSigner
from services.common.practice_config import patient_preferences_table
from services.common.settings import Settings
from services.common.table import Table
from services.domain.codec import encode
from services.domain.partition import partition_for

__all__ = [
    "KafkaPreferencesPublisher",
    "PatientLinks",
    "PreferencesPublisher",
    "PreferencesReader",
    "PreferencesUnavailable",
    "RedactPatientLinks",
    "TablePreferencesReader",
    "UnsubscribeResult",
    "install",
    "open_kafka_patient_links",
    "router",
    "signer_from_settings",
]

log = logging.getLogger(__name__)

UnsubscribeResult = Literal["switched_off", "already_off"]
ONE_CLICK_FIELD = "List-Unsubscribe"
ONE_CLICK_VALUE = "One-Click"


class PreferencesUnavailable(RuntimeError):
    """The preferences topic could not be read or written in time (answer: try later)."""


class PreferencesReader(Protocol):
    async def current(self, practice_id: str, patient_id: str) -> PatientPreferences | None:
        """The patient's latest record, including everything published before the call."""
        ...


class PreferencesPublisher(Protocol):
    async def publish(self, prefs: PatientPreferences) -> None:
        """Durably on the topic when this returns."""
        ...


@dataclass
class PatientLinks:
    """What the patient-link routes need; one per application."""

    signer: PatientLinkSigner
    reader: PreferencesReader
    publisher: PreferencesPublisher
    clock: Clock

    def __post_init__(self) -> None:
        # Read-modify-write of one record: two clicks at once must not both publish.
        self._lock = asyncio.Lock()

    def check(self, token: str) -> None:
        """Raises InvalidPatientLink unless the token is ours."""
        self.signer.verify(token, self.clock.now())

    async def unsubscribe(self, token: str) -> UnsubscribeResult:
        """Switch reminders off for the patient the token names; raises InvalidPatientLink."""
        link = self.signer.verify(token, self.clock.now())
        async with self._lock:
            current = await self.reader.current(link.practice_id, link.patient_id)
            if current is None or not current.reminders:
                return "already_off"
            switched = PatientPreferences.model_validate(
                {**current.model_dump(), "reminders": False, "updated_at": self.clock.now()}
            )
            await self.publisher.publish(switched)
        log.info("patient switched reminders off by one-click link")
        return "switched_off"


# --------------------------------------------------------------------------- Kafka adapters


class TablePreferencesReader:
    """Reads the compacted topic through a table of every partition, caught up per read."""

    def __init__(
        self, table: Table[PatientPreferences], partitions: int, *, timeout: float = 10.0
    ) -> None:
        self._table = table
        self._partitions = partitions
        self._timeout = timeout

    async def current(self, practice_id: str, patient_id: str) -> PatientPreferences | None:
        partition = partition_for(practice_id, self._partitions)
        if not await self._table.follower.catch_up([partition], timeout=self._timeout):
            raise PreferencesUnavailable("patient.preferences.v1 did not catch up in time")
        return self._table.get(f"{practice_id}/{patient_id}")


class KafkaPreferencesPublisher:
    """Publishes on the practice's partition under ``{practice_id}/{patient_id}``."""

    def __init__(self, producer: AIOKafkaProducer, topic: str, partitions: int) -> None:
        self._producer = producer
        self._topic = topic
        self._partitions = partitions

    async def publish(self, prefs: PatientPreferences) -> None:
        await self._producer.send_and_wait(
            self._topic,
            key=prefs.key.encode("utf-8"),
            value=encode(prefs),
            partition=partition_for(prefs.practice_id, self._partitions),
        )


def signer_from_settings(settings: Settings) -> PatientLinkSigner:
    """The signer for ``REMINDERS_ADMIN__SECRET_KEY``; ValueError when it is not set."""
    secret = settings.admin.secret_key
    if secret is None or not secret.get_secret_value():
        raise ValueError(
            "REMINDERS_ADMIN__SECRET_KEY is not set: patient links (one-click unsubscribe) "
            "cannot be signed or checked"
        )
    return PatientLinkSigner(secret.get_secret_value())


@asynccontextmanager
async def open_kafka_patient_links(
    settings: Settings, clock: Clock | None = None
) -> AsyncIterator[PatientLinks]:
    """Start the preferences table (every partition) and a producer; stop both on exit."""
    kafka = settings.kafka
    topic = Topics(kafka.topic_prefix).patient_preferences
    signer = signer_from_settings(settings)
    counts = await describe_partitions(kafka, [topic])
    partitions = counts.get(topic)
    if not partitions:
        raise RuntimeError(f"topic {topic} does not exist; run `reminders topics create`")
    table = patient_preferences_table(kafka)
    producer = make_producer(kafka)
    await table.start()
    try:
        await producer.start()
        try:
            await table.wait_loaded()
            yield PatientLinks(
                signer=signer,
                reader=TablePreferencesReader(table, partitions),
                publisher=KafkaPreferencesPublisher(producer, topic, partitions),
                clock=clock or SystemClock(),
            )
        finally:
            await producer.stop()
    finally:
        await table.stop()


# --------------------------------------------------------------------------- HTTP

router = APIRouter()

_HEADERS = {
    "Cache-Control": "no-store",
    # The token is in the URL: never hand it on to another site.
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
}

_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:36rem;margin:3rem auto;padding:0 1rem;"
    "line-height:1.5;color:#1b1b1b}button{font:inherit;padding:.6rem 1.2rem;border-radius:.3rem;"
    "border:2px solid #1a6e5c;background:#1a6e5c;color:#fff;cursor:pointer}"
    "button:focus{outline:3px solid #f5a623;outline-offset:2px}"
    "[lang=en]{color:#444;border-top:1px solid #ddd;margin-top:2rem;padding-top:1rem}"
)


def _page(title: str, nl: str, en: str, status: int, form: bool = False) -> HTMLResponse:
    button = ""
    if form:
        # No action attribute: the form posts to this very URL (the token stays out of
        # the page's own markup apart from the address bar).
        button = (
            '<form method="post">'
            f'<input type="hidden" name="{ONE_CLICK_FIELD}" value="{ONE_CLICK_VALUE}">'
            '<button type="submit">Herinneringen uitzetten / Stop reminders</button>'
            "</form>"
        )
    body = (
        '<!DOCTYPE html>\n<html lang="nl">\n<head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head>\n<body>\n"
        f"<main><h1>{html.escape(title)}</h1>\n<p>{html.escape(nl)}</p>\n{button}\n"
        f'<p lang="en">{html.escape(en)}</p></main>\n</body>\n</html>\n'
    )
    return HTMLResponse(body, status_code=status, headers=_HEADERS)


def _invalid() -> HTMLResponse:
    return _page(
        "Deze link werkt niet",
        "Deze afmeldlink is ongeldig of verlopen. Er is niets veranderd. U kunt uw "
        "herinneringen altijd wijzigen in het patiëntenportaal van uw praktijk.",
        "This unsubscribe link is not valid or has expired. Nothing was changed. You can "
        "always change your reminders in your practice's patient portal.",
        400,
    )


def _unavailable() -> HTMLResponse:
    response = _page(
        "Probeer het later opnieuw",
        "Het afmelden lukt op dit moment niet. Er is niets veranderd; probeer het over een "
        "paar minuten opnieuw.",
        "Unsubscribing does not work at the moment. Nothing was changed; please try again "
        "in a few minutes.",
        503,
    )
    response.headers["Retry-After"] = "120"
    return response


def _service(request: Request) -> PatientLinks:
    service: PatientLinks | None = getattr(request.app.state, "patient_links", None)
    if service is None:
        raise RuntimeError("patient links are not installed on this app (see install())")
    return service


def install(app: FastAPI, service: PatientLinks) -> None:
    """Serve the patient links on ``app`` with ``service``."""
    app.state.patient_links = service
    app.include_router(router)


@router.get("/u/{token}", response_class=HTMLResponse, include_in_schema=False)
async def confirm_page(token: str, request: Request) -> HTMLResponse:
    service = _service(request)
    try:
        service.check(token)
    except InvalidPatientLink:
        return _invalid()
    return _page(
        "Afspraakherinneringen uitzetten",
        "Wilt u geen herinneringen aan uw afspraken meer ontvangen van deze praktijk? "
        "Klik dan op de knop. U kunt ze later weer aanzetten in het patiëntenportaal.",
        "Do you no longer want appointment reminders from this practice? Press the button. "
        "You can switch them on again later in the patient portal.",
        200,
        form=True,
    )


@router.post("/u/{token}", response_class=HTMLResponse, include_in_schema=False)
async def one_click(token: str, request: Request) -> HTMLResponse:
    service = _service(request)
    try:
        service.check(token)
    except InvalidPatientLink:
        return _invalid()
    form = await request.form(max_files=0, max_fields=20, max_part_size=4096)
    if form.get(ONE_CLICK_FIELD) != ONE_CLICK_VALUE:
        # RFC 8058: the POST names the one-click action; anything else changes nothing.
        return _page(
            "Afspraakherinneringen uitzetten",
            "Er is niets veranderd. Gebruik de knop om herinneringen uit te zetten.",
            "Nothing was changed. Use the button to stop reminders.",
            400,
            form=True,
        )
    try:
        await service.unsubscribe(token)
    except InvalidPatientLink:
        return _invalid()
    except (PreferencesUnavailable, KafkaError, OSError, TimeoutError) as exc:
        log.warning("one-click unsubscribe failed: %s", type(exc).__name__)
        return _unavailable()
    return _page(
        "U bent afgemeld",
        "U krijgt van deze praktijk geen afspraakherinneringen meer. In het "
        "patiëntenportaal kunt u ze weer aanzetten.",
        "You will no longer get appointment reminders from this practice. You can switch "
        "them on again in the patient portal.",
        200,
    )


# --------------------------------------------------------------------------- logging

_LINK_IN_PATH = re.compile(r"/u/[^\s\"?/]+")


class RedactPatientLinks(logging.Filter):
    """Replaces the token in ``/u/{token}`` in a log record (for the access log)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _LINK_IN_PATH.sub("/u/[token]", a) if isinstance(a, str) else a for a in record.args
            )
        if isinstance(record.msg, str):
            record.msg = _LINK_IN_PATH.sub("/u/[token]", record.msg)
        return True
