"""One reminder mail through the notifier's Deliverer, captured: for the mail-part tests."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

from schemas.models import PracticeConfig
from services.domain.mime import ComposedMail
from services.domain.render import render_reminder
from services.notifier.delivery import Deliverer, EmailTransport
from services.notifier.patient_mail import PatientMail
from services.notifier.retry import RetryPolicy
from services.notifier.samples import (
    sample_appointment,
    sample_config,
    sample_due,
    sample_preferences,
)

__all__ = ["NOW", "START", "CapturingMail", "send_reminder"]

NOW = datetime(2026, 11, 30, 17, 0, tzinfo=UTC)
START = datetime(2026, 12, 1, 8, 30, tzinfo=UTC)


class CapturingMail:
    """An e-mail transport that keeps what it is given."""

    def __init__(self) -> None:
        self.sent: list[ComposedMail] = []

    async def send(self, msg: ComposedMail) -> None:
        self.sent.append(msg)


async def _no_sleep(_: float) -> None:
    return None


async def send_reminder(
    transport: EmailTransport,
    patient_mail: PatientMail | None,
    *,
    config: PracticeConfig | None = None,
    **prefs: Any,
) -> None:
    """Deliver the sample reminder (nl, e-mail only) through ``transport``; it must send."""
    config = config or sample_config()
    appointment = sample_appointment(start=START)
    deliverer = Deliverer(
        email=transport,
        push=None,
        policy=RetryPolicy(attempts=1, base_delay=0.01, max_delay=0.01),
        message_id_domain="reminders.example.org",
        sleep=_no_sleep,
        rng=random.Random(1),
        patient_mail=patient_mail,
    )
    delivery = await deliverer.deliver(
        sample_due(appointment, fired_at=NOW),
        ("email",),
        config,
        appointment,
        sample_preferences(updated_at=NOW, **prefs),
        render_reminder(config, appointment, "nl"),
        NOW,
    )
    assert delivery.status == "sent", delivery
