"""Sending one decided reminder over its channels, with retries, into one result.

E-mail goes first, then push to every subscription of the patient. Transient failures
are retried with exponential backoff and jitter (:func:`retry_transient`); permanent
ones are not. The result names one channel (the first that succeeded: e-mail, else
push) and carries what happened on the other in ``detail``, so that every reminder has
exactly one outcome.

``blocked`` is the one result that is not an outcome: the mail server could not be
reached at all (connection refused, timeout, TLS or AUTH trouble) after every retry.
That says nothing about the message, so the engine does not record a failure for it but
holds the reminder back and tries again after a pause (see engine.py). Push is then not
tried either, so the patient's channels go out together once mail is back.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol, TypeVar

from schemas.models import (
    Appointment,
    Channel,
    OutcomeReason,
    PatientPreferences,
    PracticeConfig,
    ReminderDue,
)
from services.domain.errors import (
    SendError,
    SubscriptionGone,
    TransientSendError,
)
from services.domain.mime import ComposedMail
from services.domain.render import RenderedReminder
from services.notifier.email import compose_email
from services.notifier.metrics import RETRIES, SEND_SECONDS
from services.notifier.patient_mail import PatientMail
from services.notifier.push import PushSubscription, push_payload, push_topic
from services.notifier.retry import RetryPolicy, retry_transient

__all__ = [
    "OUTAGE_REASONS",
    "Deliverer",
    "Delivery",
    "EmailTransport",
    "PushTransport",
    "subscription_ref",
]

T = TypeVar("T")

# Transient reasons that mean "the mail server is not there", not "this message failed".
OUTAGE_REASONS = frozenset({"smtp_unavailable", "timeout", "smtp_auth_failed", "smtp_tls_failed"})
_ADDRESS_REASONS = frozenset({"invalid_address", "recipient_refused"})


class EmailTransport(Protocol):
    async def send(self, msg: ComposedMail) -> None: ...


class PushTransport(Protocol):
    async def send(
        self,
        sub: PushSubscription,
        payload: bytes,
        *,
        ttl: int,
        topic: str,
        urgency: str = "normal",
    ) -> None: ...


@dataclass(frozen=True)
class Delivery:
    status: Literal["sent", "failed", "blocked"]
    channel: Channel | None
    reason: OutcomeReason | None = None
    message_id: str | None = None
    detail: str | None = None


@dataclass(frozen=True)
class _ChannelResult:
    channel: Channel
    ok: bool
    reason: OutcomeReason | None = None
    detail: str = ""
    outage: bool = False
    message_id: str | None = None


def subscription_ref(endpoint: str) -> str:
    """A short, stable reference to a push subscription that does not reveal its URL."""
    return hashlib.sha256(endpoint.encode("utf-8")).hexdigest()[:12]


def _failure_reason(exc: SendError) -> OutcomeReason:
    if isinstance(exc, TransientSendError):
        return "retries_exhausted"
    if isinstance(exc, SubscriptionGone):
        return "subscription_gone"
    if exc.reason in _ADDRESS_REASONS:
        return "invalid_address"
    return "permanent_failure"


class Deliverer:
    """Hands rendered reminders to the mail server and the push services."""

    def __init__(
        self,
        *,
        email: EmailTransport | None,
        push: PushTransport | None,
        policy: RetryPolicy,
        message_id_domain: str,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        patient_mail: PatientMail | None = None,
    ) -> None:
        self._email = email
        # One-click unsubscribe and the calendar part; None: the plain message.
        self._patient_mail = patient_mail
        self._push = push
        self._policy = policy
        self._domain = message_id_domain
        self._sleep = sleep
        self._rng = rng or random.Random()
        # The labelled metrics once, not looked up again on every send.
        self._send_seconds = {c: SEND_SECONDS.labels(c) for c in ("email", "push")}
        self._retries = {c: RETRIES.labels(c) for c in ("email", "push")}

    @property
    def channels(self) -> frozenset[Channel]:
        available: set[Channel] = set()
        if self._email is not None:
            available.add("email")
        if self._push is not None:
            available.add("push")
        return frozenset(available)

    async def _with_retries(self, channel: Channel, fn: Callable[[], Awaitable[T]]) -> T:
        began = time.perf_counter()
        try:
            return await retry_transient(
                fn,
                self._policy,
                sleep=self._sleep,
                rng=self._rng,
                on_retry=self._retries[channel].inc,
            )
        finally:
            self._send_seconds[channel].observe(time.perf_counter() - began)

    async def deliver(
        self,
        due: ReminderDue,
        channels: tuple[Channel, ...],
        config: PracticeConfig,
        appointment: Appointment,
        prefs: PatientPreferences,
        rendered: RenderedReminder,
        now: datetime,
        *,
        outage_is_failure: bool = False,
    ) -> Delivery:
        """Send over `channels`; `outage_is_failure` turns "blocked" into a failed result."""
        results: list[_ChannelResult] = []
        if "email" in channels:
            mail = await self._send_email(due, config, appointment, prefs, rendered, now)
            if mail.outage and not outage_is_failure:
                return Delivery(status="blocked", channel="email", detail=mail.detail)
            results.append(mail)
        if "push" in channels:
            results.append(await self._send_push(due, appointment, prefs, rendered, now))
        return _combine(results)

    async def _send_email(
        self,
        due: ReminderDue,
        config: PracticeConfig,
        appointment: Appointment,
        prefs: PatientPreferences,
        rendered: RenderedReminder,
        now: datetime,
    ) -> _ChannelResult:
        transport = self._email
        if transport is None or prefs.email is None or config.sender is None:
            return _ChannelResult("email", ok=False, reason="no_channel", detail="email: none")
        try:
            calendar, logo = (
                self._patient_mail.parts(config, appointment, prefs.language, now)
                if self._patient_mail is not None
                else (None, None)
            )
            msg = compose_email(
                reminder_id=due.reminder_id,
                from_address=str(config.sender.email),
                from_name=config.sender.name,
                to=str(prefs.email),
                subject=rendered.email.subject,
                text=rendered.email.text,
                html=rendered.email.html,
                unsubscribe_url=(
                    self._patient_mail.unsubscribe_url(due, config, now)
                    if self._patient_mail is not None
                    else config.preferences_url
                ),
                message_id_domain=self._domain,
                date=now,
                calendar=calendar,
                logo=logo,
            )
            await self._with_retries("email", lambda: transport.send(msg))
        except TransientSendError as exc:
            return _ChannelResult(
                "email",
                ok=False,
                reason="retries_exhausted",
                detail=f"email: {exc.reason} after {self._policy.attempts} attempts",
                outage=exc.reason in OUTAGE_REASONS,
            )
        except SendError as exc:
            return _ChannelResult(
                "email", ok=False, reason=_failure_reason(exc), detail=f"email: {exc.reason}"
            )
        return _ChannelResult(
            "email",
            ok=True,
            detail="email: accepted",
            message_id=msg.message_id,
        )

    async def _send_push(
        self,
        due: ReminderDue,
        appointment: Appointment,
        prefs: PatientPreferences,
        rendered: RenderedReminder,
        now: datetime,
    ) -> _ChannelResult:
        transport = self._push
        if transport is None or not prefs.push_subscriptions:
            return _ChannelResult("push", ok=False, reason="no_channel", detail="push: none")
        payload = push_payload(rendered.push.title, rendered.push.body, prefs.language)
        # Kept by the push service for an offline device until the appointment starts.
        ttl = int((appointment.start - now).total_seconds())
        topic = push_topic(due.practice_id, due.appointment_id)

        async def one(record_endpoint: str, p256dh: str, auth: str) -> SendError | None:
            sub = PushSubscription(endpoint=record_endpoint, p256dh=p256dh, auth=auth)
            try:
                await self._with_retries(
                    "push", lambda: transport.send(sub, payload, ttl=ttl, topic=topic)
                )
            except SendError as exc:
                return exc
            return None

        errors = await asyncio.gather(
            *(one(s.endpoint, s.keys.p256dh, s.keys.auth) for s in prefs.push_subscriptions)
        )
        accepted = sum(1 for e in errors if e is None)
        notes = [f"push: {accepted}/{len(errors)} accepted"]
        gone = [
            subscription_ref(s.endpoint)
            for s, e in zip(prefs.push_subscriptions, errors, strict=True)
            if isinstance(e, SubscriptionGone)
        ]
        if gone:
            notes.append("push gone: " + ",".join(gone))
        others = sorted(
            {e.reason for e in errors if e is not None and not isinstance(e, SubscriptionGone)}
        )
        if others:
            notes.append("push errors: " + ",".join(others))
        detail = "; ".join(notes)
        if accepted:
            return _ChannelResult("push", ok=True, detail=detail)
        failures = [e for e in errors if e is not None]
        if any(isinstance(e, TransientSendError) for e in failures):
            reason: OutcomeReason = "retries_exhausted"
        elif all(isinstance(e, SubscriptionGone) for e in failures):
            reason = "subscription_gone"
        else:
            reason = "permanent_failure"
        return _ChannelResult("push", ok=False, reason=reason, detail=detail)


def _combine(results: list[_ChannelResult]) -> Delivery:
    detail = "; ".join(r.detail for r in results if r.detail)[:500] or None
    for result in results:
        if result.ok:
            return Delivery(
                status="sent", channel=result.channel, message_id=result.message_id, detail=detail
            )
    first = results[0]
    return Delivery(status="failed", channel=first.channel, reason=first.reason, detail=detail)
