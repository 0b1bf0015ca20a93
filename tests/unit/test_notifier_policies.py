"""The notifier's policies without a broker or a mail server: a partition worker driven
through its real loop, with the real Deliverer over an e-mail transport made from a
function (in the style of httpx's MockTransport) and a fake transactional producer.

Covered: the hold on a whole-server outage, the transient hold, "every recipient
refused", the outage limit, and how outcomes are built."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from schemas.models import Outcome
from services.common.settings import Settings
from services.domain.errors import TransientSendError
from services.domain.mime import ComposedMail
from services.notifier.delivery import Deliverer
from services.notifier.retry import RetryPolicy
from tests.unit.test_notifier_engine import TOPICS, FakeProducer, Harness


class MockMail:
    """An e-mail transport from a function: it returns (accepted) or raises a SendError."""

    def __init__(self, handler: Callable[[ComposedMail], None]) -> None:
        self.handler = handler
        self.accepted: list[ComposedMail] = []

    async def send(self, msg: ComposedMail) -> None:
        self.handler(msg)
        self.accepted.append(msg)


async def _no_sleep(_: float) -> None:
    return None


def _refuse(code: str) -> Callable[[ComposedMail], None]:
    def handler(msg: ComposedMail) -> None:
        raise TransientSendError(code)

    return handler


def _accept(msg: ComposedMail) -> None:
    return None


class Policies:
    def __init__(
        self, monkeypatch: pytest.MonkeyPatch, *, transient_hold_seconds: float = 900.0
    ) -> None:
        self.producer = FakeProducer()
        self.h = Harness(monkeypatch, self.producer)
        self.mail = MockMail(_accept)
        ctx = self.h.worker.ctx
        ctx.settings = Settings(
            notifier={
                "transient_hold_seconds": transient_hold_seconds,
                "outage_backoff_seconds": 0.01,
                "outage_backoff_max_seconds": 0.01,
            }
        )
        ctx.deliverer = Deliverer(
            email=self.mail,
            push=None,
            policy=RetryPolicy(attempts=2, base_delay=0.0, max_delay=0.0),
            message_id_domain="reminders.example.org",
            sleep=_no_sleep,
        )

    def outcomes(self) -> list[Outcome]:
        return [
            Outcome.model_validate_json(kwargs["value"])
            for topic, kwargs in self.producer.committed_sends
            if topic == TOPICS.outcomes
        ]

    async def until(self, condition: Callable[[], bool]) -> None:
        await self.h.until(condition)


async def test_a_whole_server_outage_holds_the_reminder_back_until_mail_is_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    p = Policies(monkeypatch)
    p.mail.handler = _refuse("smtp_unavailable")
    await p.h.start()
    p.h.worker.enqueue([p.h.due_tomorrow("a-1")])
    await p.until(lambda: p.h.worker.state == "blocked")
    assert p.outcomes() == []  # held, not failed
    p.mail.handler = _accept
    await p.until(lambda: p.h.worker.outcomes_committed == 1)
    [outcome] = p.outcomes()
    assert (outcome.status, outcome.channel, outcome.reason) == ("sent", "email", None)
    assert p.h.worker.state == "ready"
    await p.h.worker.stop(1.0)


async def test_an_outage_longer_than_the_limit_ends_in_a_failed_outcome(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    p = Policies(monkeypatch)
    p.mail.handler = _refuse("timeout")
    await p.h.start()
    p.h.worker.enqueue([p.h.due_tomorrow("a-1")])
    await p.until(lambda: p.h.worker.state == "blocked")
    p.h.clock.advance(timedelta(hours=7))  # past outage_max_seconds (6 h)
    await p.until(lambda: p.h.worker.outcomes_committed == 1)
    [outcome] = p.outcomes()
    assert (outcome.status, outcome.reason) == ("failed", "retries_exhausted")
    assert "unreachable for more than" in (outcome.detail or "")
    await p.h.worker.stop(1.0)


async def test_a_refused_mail_is_held_for_the_transient_hold_then_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    p = Policies(monkeypatch)
    p.mail.handler = _refuse("smtp_4xx")
    await p.h.start()
    p.h.worker.enqueue([p.h.due_tomorrow("a-1")])
    await p.until(lambda: p.h.worker.state == "blocked")
    assert p.outcomes() == []
    p.h.clock.advance(timedelta(minutes=16))  # past transient_hold_seconds (15 min)
    await p.until(lambda: p.h.worker.outcomes_committed == 1)
    [outcome] = p.outcomes()
    assert (outcome.status, outcome.channel, outcome.reason) == (
        "failed",
        "email",
        "retries_exhausted",
    )
    await p.h.worker.stop(1.0)


async def test_one_refused_mail_without_a_hold_fails_and_does_not_hold_the_partition(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    p = Policies(monkeypatch, transient_hold_seconds=0)
    p.mail.handler = _refuse("smtp_4xx")
    await p.h.start()
    await p.h.run(p.h.due_tomorrow("a-1"))
    [outcome] = p.outcomes()
    assert (outcome.status, outcome.reason) == ("failed", "retries_exhausted")
    assert p.h.worker.state == "ready"
    await p.h.worker.stop(1.0)


async def test_every_recipient_of_a_batch_refused_holds_them_like_an_outage(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    p = Policies(monkeypatch, transient_hold_seconds=0)
    p.mail.handler = _refuse("smtp_4xx")
    await p.h.start()
    p.h.worker.enqueue([p.h.due_tomorrow("a-1"), p.h.due_tomorrow("a-2")])
    await p.until(lambda: p.h.worker.state == "blocked")
    assert p.outcomes() == []  # a relay refusing everything is down in effect
    p.mail.handler = _accept
    await p.until(lambda: p.h.worker.outcomes_committed == 2)
    assert sorted(o.appointment_id for o in p.outcomes()) == ["a-1", "a-2"]
    assert {o.status for o in p.outcomes()} == {"sent"}
    await p.h.worker.stop(1.0)


async def test_outcomes_name_the_reminder_the_channel_and_the_message_id(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    p = Policies(monkeypatch)
    await p.h.start()
    await p.h.run(p.h.due_tomorrow("a-1"))
    [first] = p.outcomes()
    assert first.reminder_id.startswith(f"{first.practice_id}/a-1/")
    assert (first.status, first.channel) == ("sent", "email")
    assert first.message_id is not None
    assert first.message_id == p.mail.accepted[0].parsed()["Message-ID"]
    no_consent = p.h.due_tomorrow("a-2")
    p.h.tables.preferences.clear()  # the patient's consent is gone: suppressed
    await p.h.run(no_consent)
    second = p.outcomes()[-1]
    assert (second.status, second.reason, second.channel) == ("suppressed", "no_consent", None)
    assert second.message_id is None
    assert len(p.mail.accepted) == 1
    await p.h.worker.stop(1.0)
