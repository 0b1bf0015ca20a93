"""Deliverer: channels, retries, failure reasons, the blocked state, and the ledger rules."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from schemas.models import Outcome
from services.domain.errors import (
    PermanentSendError,
    SendError,
    SubscriptionGone,
    TransientSendError,
)
from services.domain.mime import ComposedMail
from services.domain.render import render_reminder
from services.notifier.delivery import Deliverer, Delivery, subscription_ref
from services.notifier.email import message_id_for
from services.notifier.ledger import (
    InFlight,
    Ledger,
    inflight_metadata,
    parse_inflight,
    reminder_start,
)
from services.notifier.push import PushSubscription, push_topic
from services.notifier.retry import RetryPolicy
from services.notifier.samples import (
    sample_appointment,
    sample_config,
    sample_due,
    sample_preferences,
)

NOW = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)
START = NOW + timedelta(hours=24)
DOMAIN = "reminders.example.org"


def _sub(n: int) -> dict[str, Any]:
    return {
        "endpoint": f"https://fcm.googleapis.com/fcm/send/sub{n}",
        "keys": {"p256dh": "B" + "A" * 86, "auth": "A" * 22},
    }


class FakeMail:
    def __init__(self, *failures: SendError) -> None:
        self.failures = list(failures)
        self.sent: list[ComposedMail] = []
        self.calls = 0

    async def send(self, msg: ComposedMail) -> None:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        self.sent.append(msg)


class FakePush:
    def __init__(self, failures: dict[str, list[SendError]] | None = None) -> None:
        self.failures = failures or {}
        self.sent: list[tuple[PushSubscription, bytes, int, str]] = []

    async def send(
        self,
        sub: PushSubscription,
        payload: bytes,
        *,
        ttl: int,
        topic: str,
        urgency: str = "normal",
    ) -> None:
        queue = self.failures.get(sub.endpoint)
        if queue:
            raise queue.pop(0)
        self.sent.append((sub, payload, ttl, topic))


async def _no_sleep(_: float) -> None:
    return None


async def _deliver(
    mail: FakeMail | None,
    push: FakePush | None,
    *,
    channels: tuple[str, ...] = ("email",),
    subs: int = 0,
    outage_is_failure: bool = False,
) -> Delivery:
    config = sample_config()
    appointment = sample_appointment(start=START)
    prefs = sample_preferences(updated_at=NOW, push_subscriptions=[_sub(i) for i in range(subs)])
    due = sample_due(appointment, fired_at=NOW)
    deliverer = Deliverer(
        email=mail,
        push=push,
        policy=RetryPolicy(attempts=3, base_delay=0.01, max_delay=0.01),
        message_id_domain=DOMAIN,
        sleep=_no_sleep,
        rng=random.Random(1),
    )
    return await deliverer.deliver(
        due,
        channels,  # type: ignore[arg-type]
        config,
        appointment,
        prefs,
        render_reminder(config, appointment, "nl"),
        NOW,
        outage_is_failure=outage_is_failure,
    )


async def test_email_sent_with_the_message_id_of_the_reminder() -> None:
    mail = FakeMail()
    delivery = await _deliver(mail, None)
    due = sample_due(sample_appointment(start=START), fired_at=NOW)
    assert delivery.status == "sent" and delivery.channel == "email"
    assert delivery.message_id == message_id_for(due.reminder_id, DOMAIN)
    assert mail.sent[0].message_id == delivery.message_id
    assert mail.sent[0].parsed()["Message-ID"] == delivery.message_id


async def test_transient_failures_are_retried() -> None:
    mail = FakeMail(TransientSendError("smtp_4xx"), TransientSendError("smtp_unavailable"))
    delivery = await _deliver(mail, None)
    assert delivery.status == "sent"
    assert mail.calls == 3


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (PermanentSendError("recipient_refused", "RCPT 550"), "invalid_address"),
        (PermanentSendError("smtp_5xx", "DATA 554"), "permanent_failure"),
    ],
)
async def test_permanent_failures_are_not_retried(error: SendError, reason: str) -> None:
    mail = FakeMail(error)
    delivery = await _deliver(mail, None)
    assert (delivery.status, delivery.reason, delivery.channel) == ("failed", reason, "email")
    assert mail.calls == 1


async def test_a_recipient_that_keeps_answering_4xx_fails_after_the_retries() -> None:
    mail = FakeMail(*[TransientSendError("smtp_4xx")] * 3)
    delivery = await _deliver(mail, None)
    assert (delivery.status, delivery.reason) == ("failed", "retries_exhausted")


async def test_an_unreachable_mail_server_blocks_instead_of_failing() -> None:
    mail = FakeMail(*[TransientSendError("smtp_unavailable")] * 3)
    push = FakePush()
    delivery = await _deliver(mail, push, channels=("email", "push"), subs=1)
    assert delivery.status == "blocked"
    assert push.sent == []  # the channels go out together once mail is back


async def test_after_the_outage_limit_blocked_becomes_failed() -> None:
    mail = FakeMail(*[TransientSendError("timeout")] * 3)
    delivery = await _deliver(mail, None, outage_is_failure=True)
    assert (delivery.status, delivery.reason) == ("failed", "retries_exhausted")


async def test_push_with_ttl_until_the_start_and_a_topic_per_appointment() -> None:
    push = FakePush()
    delivery = await _deliver(None, push, channels=("push",), subs=2)
    assert delivery.status == "sent" and delivery.channel == "push"
    assert len(push.sent) == 2
    _, payload, ttl, topic = push.sent[0]
    assert ttl == 24 * 3600
    assert topic == push_topic("01234567", "a-1")
    assert b"020-1234567" in payload


async def test_push_gone_is_a_failed_outcome_with_the_subscription_named() -> None:
    endpoint = _sub(0)["endpoint"]
    push = FakePush({endpoint: [SubscriptionGone("subscription_gone", "410")]})
    delivery = await _deliver(None, push, channels=("push",), subs=1)
    assert (delivery.status, delivery.reason) == ("failed", "subscription_gone")
    assert delivery.detail is not None and subscription_ref(endpoint) in delivery.detail
    assert "fcm.googleapis.com" not in delivery.detail


async def test_one_gone_subscription_of_two_still_sends() -> None:
    endpoint = _sub(1)["endpoint"]
    push = FakePush({endpoint: [SubscriptionGone("subscription_gone", "404")]})
    delivery = await _deliver(None, push, channels=("push",), subs=2)
    assert delivery.status == "sent"
    assert delivery.detail is not None and f"push gone: {subscription_ref(endpoint)}" in (
        delivery.detail
    )


async def test_push_429_and_5xx_are_retried() -> None:
    endpoint = _sub(0)["endpoint"]
    push = FakePush(
        {
            endpoint: [
                TransientSendError("push_rate_limited", retry_after=0.01),
                TransientSendError("push_5xx"),
            ]
        }
    )
    delivery = await _deliver(None, push, channels=("push",), subs=1)
    assert delivery.status == "sent"


async def test_email_refused_but_push_accepted_is_sent_by_push() -> None:
    mail = FakeMail(PermanentSendError("recipient_refused"))
    push = FakePush()
    delivery = await _deliver(mail, push, channels=("email", "push"), subs=1)
    assert (delivery.status, delivery.channel) == ("sent", "push")
    assert delivery.detail is not None and "email: recipient_refused" in delivery.detail


async def test_both_sent_names_email_and_notes_push() -> None:
    delivery = await _deliver(FakeMail(), FakePush(), channels=("email", "push"), subs=1)
    assert (delivery.status, delivery.channel) == ("sent", "email")
    assert delivery.detail is not None and "push: 1/1 accepted" in delivery.detail


# --------------------------------------------------------------------------- ledger


def _outcome(rid: str, status: str = "sent") -> Outcome:
    return Outcome.model_validate(
        {
            "reminder_id": rid,
            "practice_id": "01234567",
            "appointment_id": "a-1",
            "status": status,
            "reason": None if status == "sent" else "no_consent",
            "at": NOW,
            "message_id": "<x@y.example.org>",
        }
    )


def test_reminder_start_from_the_id() -> None:
    assert reminder_start("01234567/a-1/2026-12-01T08:30:00Z") == datetime(
        2026, 12, 1, 8, 30, tzinfo=UTC
    )
    assert reminder_start("nonsense") is None


def test_ledger_keeps_sent_reminders_until_a_day_after_the_start() -> None:
    ledger = Ledger(0)
    future = "01234567/a-1/2026-12-01T08:30:00Z"
    past = "01234567/a-2/2026-11-20T08:30:00Z"
    ledger.record(_outcome(future), 5, NOW)
    ledger.record(_outcome(past), 6, NOW)
    ledger.record(_outcome("01234567/a-3/2026-12-01T08:30:00Z", "suppressed"), 7, NOW)
    assert ledger.already_sent(future)
    assert not ledger.already_sent(past)  # long gone: too_late anyway
    assert not ledger.already_sent("01234567/a-3/2026-12-01T08:30:00Z")
    assert ledger.message_id(future) == "<x@y.example.org>"
    assert ledger.prune(datetime(2026, 12, 2, 9, 0, tzinfo=UTC)) == 1
    assert not ledger.already_sent(future)


def test_ledger_answers_only_above_the_committed_offset() -> None:
    ledger = Ledger(0, committed_offset=10)
    ledger.record(_outcome("a/b/2026-12-01T08:30:00Z"), 9, NOW)
    ledger.record(_outcome("a/c/2026-12-01T08:30:00Z"), 12, NOW)
    assert not ledger.is_answered(9) and ledger.is_answered(12)
    ledger.committed(13)
    assert not ledger.is_answered(12)


def test_inflight_marker_round_trip() -> None:
    assert parse_inflight(40, inflight_metadata(60)) == InFlight(40, 60)
    assert 45 in InFlight(40, 60) and 60 not in InFlight(40, 60)
    assert parse_inflight(40, "") is None
    assert parse_inflight(-1, inflight_metadata(3)) is None
    assert parse_inflight(40, "inflight:x") is None
