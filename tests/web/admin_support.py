"""Helpers for practice-admin tests: fakes for Kafka-backed sources, sign-in over HTTP."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import httpx

from schemas.models import PracticeConfig
from services.common.clock import FakeClock
from services.common.settings import SmtpSettings
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


@dataclass
class FakeOutcomes:
    rows: dict[str, list[LogRow]] = field(default_factory=dict)
    scheduled: dict[str, list[Scheduled]] = field(default_factory=dict)

    def outcomes(self, practice_id: str, labels: dict[str, str] | None = None) -> list[LogRow]:
        return sorted(self.rows.get(practice_id, []), key=lambda r: r.at, reverse=True)

    def upcoming(self, practice_id: str, now: datetime, hours: float) -> list[Scheduled]:
        until = now + timedelta(hours=hours)
        return [s for s in self.scheduled.get(practice_id, []) if now <= s.start < until]

    def ready(self) -> bool:
        return True


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
