"""Helpers for practice-admin tests: fakes for Kafka-backed sources, rows in the insights
projection for the send log, sign-in over HTTP."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine

from devkit.insights_samples import OutcomeTruth, _appointment, _outcome, _rid
from schemas.models import PracticeConfig
from services.common.clock import FakeClock
from services.common.settings import SmtpSettings
from services.insights.projection import (
    appointment_row,
    dedupe_appointments,
    dedupe_outcomes,
    outcome_row,
)
from services.insights.store import write_batch
from services.practice_admin.config_store import VersionConflict
from services.practice_admin.mailer import SmtpMailer
from services.practice_admin.outcomes import LogRow, Scheduled

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
CODE = re.compile(r"\b(\d{6})\b")
START = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)


def practice(practice_id: str = "01999001", **changes: Any) -> PracticeConfig:
    data: dict[str, Any] = {
        "practice_id": practice_id,
        "name": "Huisartsenpraktijk De Linde",
        "phone": "020-1234567",
        "reminders_enabled": True,
        "sender": {"email": "noreply@delinde.example", "name": "De Linde"},
        "appointment_types": {
            "C10": {
                "label": "Consult 10 minuten",
                "with_whom": "de huisarts",
                "instructions": "Neem uw medicijnen mee.",
            }
        },
        "version": 3,
    }
    data.update(changes)
    return PracticeConfig.model_validate(data)


@dataclass
class FakeConfigs:
    rows: dict[str, PracticeConfig] = field(default_factory=dict)
    published: list[PracticeConfig] = field(default_factory=list)

    def get(self, practice_id: str) -> PracticeConfig | None:
        return self.rows.get(practice_id)

    async def publish(self, config: PracticeConfig, based_on: int | None) -> PracticeConfig:
        current = self.rows.get(config.practice_id)
        if (current.version if current else None) != based_on:
            raise VersionConflict(current.version if current else 0)
        new = config.model_copy(update={"version": (based_on or 0) + 1})
        self.rows[new.practice_id] = new
        self.published.append(new)
        return new

    def ready(self) -> bool:
        return True


async def project_log(
    engine: AsyncEngine,
    practice_id: str,
    rows: Iterable[LogRow] = (),
    scheduled: Iterable[Scheduled] = (),
) -> None:
    """Puts send-log rows and booked appointments into the insights projection, through
    the projection's own decoding and writer, as ``reminders run insights`` would."""
    appointments, outcomes = [], []
    for row in rows:
        assert row.start is not None
        appointments.append(
            appointment_row(
                _appointment(
                    practice_id,
                    row.appointment_id,
                    sequence=1,
                    status="booked",
                    start=row.start,
                    booked_at=row.start - timedelta(days=2),
                    updated_at=row.at,
                    code="CONS",
                    display=row.type_label,
                    patient=row.patient_id,
                    meeting=False,
                    via="portal",
                )
            )
        )
        outcomes.append(
            outcome_row(
                _outcome(
                    OutcomeTruth(
                        _rid(practice_id, row.appointment_id, row.start),
                        practice_id,
                        row.appointment_id,
                        row.start,
                        row.status,
                        row.channel,
                        row.reason,
                        row.at,
                    )
                )
            )
        )
    for s in scheduled:
        appointments.append(
            appointment_row(
                _appointment(
                    practice_id,
                    s.appointment_id,
                    sequence=1,
                    status="booked",
                    start=s.start,
                    booked_at=s.start - timedelta(days=2),
                    updated_at=s.start - timedelta(days=2),
                    code=s.type_label,
                    display="Consult",
                    patient="pt-scheduled",
                    meeting=False,
                    via="portal",
                )
            )
        )
    async with engine.begin() as connection:
        await write_batch(
            connection,
            appointments=dedupe_appointments(appointments),
            outcomes=dedupe_outcomes(outcomes),
            positions={},
        )


class FakeMailer(SmtpMailer):
    def __init__(self) -> None:
        super().__init__(SmtpSettings(), "Beheeromgeving <noreply@test.invalid>")
        self.sent: list[EmailMessage] = []

    async def send(self, message: EmailMessage) -> None:
        self.sent.append(message)

    def last_code(self, to: str) -> str:
        for message in reversed(self.sent):
            if message["To"] == to:
                body = message.get_body(("plain",))
                assert body is not None
                found = CODE.search(body.get_content())
                assert found, "no code in the mail"
                return found.group(1)
        raise AssertionError(f"no mail to {to}")


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "no CSRF token in the page"
    return found.group(1)


async def request_code(client: httpx.AsyncClient, email: str) -> httpx.Response:
    page = await client.get("/login")
    return await client.post("/login", data={"email": email, "csrf_token": csrf_of(page.text)})


async def sign_in(client: httpx.AsyncClient, mailer: FakeMailer, email: str) -> httpx.Response:
    sent = await request_code(client, email)
    assert sent.status_code == 200, sent.text
    code = mailer.last_code(email)
    answer = await client.post(
        "/login/code", data={"email": email, "code": code, "csrf_token": csrf_of(sent.text)}
    )
    assert answer.status_code == 303, answer.text
    return answer


def new_clock() -> FakeClock:
    return FakeClock(START)
