"""Fault injection for the whole pipeline: kill -9, broker restarts, SMTP and push outages,
malformed records, duplicates and a practice switching off mid-run.

Each scenario runs the real services (as processes) against the real broker and a
generated workload, then compares what the sinks received with what the workload says
should arrive. Used by ``tests/e2e/test_faults.py`` (small) and ``bench/faults.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from devkit.demo.pipeline import MESSAGE_ID_DOMAIN, SERVICE_NAMES, Pipeline
from devkit.demo.workload import Workload, generate
from devkit.local_kafka import LocalKafka
from schemas import PracticeConfig, PushSubscriptionRecord, ReminderDue
from services.common.settings import KafkaSettings
from services.notifier.email import message_id_for
from services.notifier.engine import POSSIBLE_DUPLICATE_NOTE as POSSIBLE_DUPLICATE_MARK
from services.notifier.push import PushSubscription, push_topic

__all__ = ["SCENARIOS", "ScenarioReport", "run_scenario"]


@dataclass
class ScenarioReport:
    name: str
    expected: int = 0
    delivered: int = 0
    duplicates: int = 0
    duplicates_in_crash_window: int = 0
    lost: int = 0
    unexpected: int = 0
    scheduler_duplicates: int = 0
    missing_outcomes: int = 0
    dlq: int = 0
    dlq_expected: int = 0
    # Issue 12: services that stopped (exited, or not alive and ready at the end), and
    # odd records the edges accepted that were not processed.
    services_stopped: int = 0
    odd_unprocessed: int = 0
    crashes: list[str] = field(default_factory=list)
    leaks: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return (
            self.lost == 0
            and self.unexpected == 0
            and self.scheduler_duplicates == 0
            and self.missing_outcomes == 0
            and self.duplicates == self.duplicates_in_crash_window
            and self.dlq >= self.dlq_expected
            and self.services_stopped == 0
            and self.odd_unprocessed == 0
            and not self.crashes
            and not self.leaks
        )

    def line(self) -> str:
        return (
            f"{self.name:<14} expected {self.expected:>5}  delivered {self.delivered:>5}  "
            f"lost {self.lost}  unexpected {self.unexpected}  duplicates {self.duplicates} "
            f"(crash window {self.duplicates_in_crash_window})  scheduler-dups "
            f"{self.scheduler_duplicates}  dlq {self.dlq}/{self.dlq_expected}  "
            f"crashes {len(self.crashes)}  stopped {self.services_stopped}  "
            f"odd-unprocessed {self.odd_unprocessed}  {self.seconds:.0f}s  "
            f"{'OK' if self.ok else 'FAIL'}"
        )


@dataclass
class Context:
    pipeline: Pipeline
    workload: Workload
    broker: LocalKafka | None
    rng: random.Random
    report: ScenarioReport
    done: asyncio.Event
    # Reminder ids that may legitimately not be delivered (and must have a failed outcome).
    may_fail: set[str] = field(default_factory=set)
    # Reminder ids whose delivery is allowed but not required (practice switched off).
    optional: set[str] = field(default_factory=set)
    notifier_kills: int = 0
    kills: dict[str, int] = field(default_factory=dict)
    # appointments.v1 keys that odd but valid records must produce (malformed scenario).
    odd_processed: set[str] = field(default_factory=set)


Action = Callable[[Context], Coroutine[Any, Any, None]]


async def _sleep_or_done(ctx: Context, seconds: float) -> bool:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(ctx.done.wait(), timeout=seconds)
    return ctx.done.is_set()


async def kill_services(ctx: Context) -> None:
    """kill -9 a random service every few seconds while reminders fall due; restart it."""
    while not await _sleep_or_done(ctx, ctx.rng.uniform(3, 7)):
        name = ctx.rng.choice(SERVICE_NAMES)
        service = ctx.pipeline.services[name]
        service.kill()
        ctx.kills[name] = ctx.kills.get(name, 0) + 1
        if name == "notifier":
            ctx.notifier_kills += 1
        await asyncio.sleep(ctx.rng.uniform(0.2, 1.5))
        service.start()


async def restart_broker(ctx: Context) -> None:
    if ctx.broker is None:
        ctx.report.notes.append("no local broker to restart (external broker): skipped")
        return
    if await _sleep_or_done(ctx, 8):
        return
    await asyncio.to_thread(ctx.broker.kill)
    await asyncio.sleep(5)
    await asyncio.to_thread(ctx.broker.restart)


async def smtp_outage(ctx: Context) -> None:
    smtp = ctx.pipeline.smtp
    assert smtp is not None
    # Some recipients are refused for good (5xx): a failed outcome, never a retry loop.
    emails = sorted({e for e in ctx.workload.emails})
    refused = set(ctx.rng.sample(emails, k=max(1, len(emails) // 20)))
    smtp.reject_recipients(refused, code=550)
    for rid, chans in ctx.workload.expected.deliveries.items():
        practice, appointment = rid.split("/")[:2]
        if "email" in chans and _email_of(ctx, practice, appointment) in refused:
            ctx.may_fail.add(rid)
    if await _sleep_or_done(ctx, 2):
        return
    smtp.set_down(True)
    await _sleep_or_done(ctx, ctx.rng.uniform(20, 30))
    smtp.set_down(False)
    smtp.fail_next(5, code=451)


async def push_trouble(ctx: Context) -> None:
    push = ctx.pipeline.push
    assert push is not None
    push.script(None, [429, 500, 500, 201])
    subs = [(p, s) for p in ctx.workload.preferences for s in p.push_subscriptions if p.reminders]
    for prefs, sub in ctx.rng.sample(subs, k=max(1, len(subs) // 10)) if subs else []:
        push.gone(push.sub_id_of(_as_sub(sub)))
        for rid, chans in ctx.workload.expected.deliveries.items():
            if "push" in chans and _patient_of(ctx, rid) == (prefs.practice_id, prefs.patient_id):
                ctx.may_fail.add(rid)


async def malformed_records(ctx: Context) -> None:
    from tests.support.garbage import garbage_records

    topics = ctx.pipeline.topics
    practice = ctx.workload.practices[0].practice_id
    sent = 0
    for topic in (
        topics.his_appointments,
        topics.practice_config,
        topics.patient_preferences,
        topics.appointments,
        topics.reminders_due,
    ):
        records = garbage_records(
            topic_kind=topic.removeprefix(topics.prefix), practice=practice, rng=ctx.rng, count=8
        )
        sent += await ctx.pipeline.publish(topic, ((k, v, practice) for k, v in records))
    # Issue 12: records the edges might accept although they are odd. Each must end in
    # a DLQ with its reason or be processed; no service may stop.
    from tests.support.garbage import FHIR_HEADERS, GHOST_PRACTICE, odd_records

    for odd in odd_records(datetime.now(UTC)):
        await ctx.pipeline.publish(
            f"{topics.prefix}{odd.topic_kind}",
            [(odd.key, odd.value, GHOST_PRACTICE)],
            headers=FHIR_HEADERS if odd.fhir else None,
        )
        if odd.verdict == "dlq":
            sent += 1
        else:
            ctx.odd_processed.add(odd.state_key)
    ctx.report.dlq_expected = sent


async def switch_off_midway(ctx: Context) -> None:
    """A practice switches reminders off while its reminders fall due."""
    target = next(c for c in ctx.workload.practices if c.reminders_enabled)
    for rid in ctx.workload.expected.deliveries:
        if rid.startswith(target.practice_id + "/"):
            ctx.optional.add(rid)
    if await _sleep_or_done(ctx, ctx.rng.uniform(10, 20)):
        return
    off = PracticeConfig.model_validate(
        {**target.model_dump(), "reminders_enabled": False, "version": target.version + 1}
    )
    await ctx.pipeline.publish_configs([off])


SCENARIOS: dict[str, Action | None] = {
    "kill-9": kill_services,
    "broker-restart": restart_broker,
    "smtp-outage": smtp_outage,
    "push-errors": push_trouble,
    "malformed": malformed_records,
    "dup-and-switch": switch_off_midway,
}


def _as_sub(record: PushSubscriptionRecord) -> PushSubscription:
    return PushSubscription(
        endpoint=record.endpoint, p256dh=record.keys.p256dh, auth=record.keys.auth
    )


def _patient_of(ctx: Context, rid: str) -> tuple[str, str] | None:
    practice, appointment = rid.split("/")[:2]
    for event in reversed(ctx.workload.events):
        if event.practice_id == practice and event.appointment_id == appointment:
            return practice, event.patient.id
    return None


def _email_of(ctx: Context, practice: str, appointment: str) -> str | None:
    who = _patient_of(ctx, f"{practice}/{appointment}/")
    if who is None:
        return None
    for prefs in ctx.workload.preferences:
        if (prefs.practice_id, prefs.patient_id) == who:
            return prefs.email
    return None


async def run_scenario(
    name: str,
    *,
    bootstrap: str,
    broker: LocalKafka | None,
    out_dir: Path,
    practices: int = 3,
    patients: int = 30,
    appointments: int = 40,
    lead: tuple[float, float] = (15.0, 45.0),
    timeout: float = 180.0,
    seed: int = 11,
) -> ScenarioReport:
    report = ScenarioReport(name)
    started = time.monotonic()
    kafka = KafkaSettings(
        bootstrap_servers=bootstrap,
        topic_prefix=f"f{uuid.uuid4().hex[:8]}.",
        partitions=3,
        client_id=f"faults-{name}",
    )
    pipeline = Pipeline(kafka=kafka, out_dir=out_dir / name)
    rng = random.Random(seed)
    try:
        await pipeline.start_infrastructure()
        workload = generate(
            now=datetime.now(UTC),
            practices=practices,
            patients=patients,
            appointments=appointments,
            seed=seed,
            lead=lead,
            push_factory=pipeline.push_subscription,
            messy=True,
        )
        ctx = Context(pipeline, workload, broker, rng, report, asyncio.Event())
        await pipeline.publish_configs(workload.practices)
        await pipeline.publish_preferences(workload.preferences)
        pipeline.start_services()
        await pipeline.wait_ready()
        await pipeline.publish_events(workload.events)
        action = SCENARIOS[name]
        task: asyncio.Task[None] | None = (
            asyncio.create_task(action(ctx)) if action is not None else None
        )
        wanted = set(workload.expected.deliveries) | {
            rid for rid, why in workload.expected.suppressed.items() if why != "cancelled"
        }
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            await asyncio.sleep(2)
            for svc_name, service in pipeline.services.items():
                if service.process is not None and service.process.poll() not in (None, -9):
                    report.crashes.append(f"{svc_name} exited {service.process.returncode}")
                    service.start()
            seen = {o.reminder_id for o in await _safe_outcomes(pipeline)}
            if wanted <= seen and (task is None or task.done() or name != "smtp-outage"):
                break
        ctx.done.set()
        if task is not None:
            await task
        await asyncio.sleep(3)  # late duplicates, if any, would show now
        await _evaluate(ctx, wanted)
        if ctx.odd_processed:
            await _check_still_serving(ctx)
    finally:
        await pipeline.stop()
        report.seconds = time.monotonic() - started
    return report


async def _check_still_serving(ctx: Context) -> None:
    """After bad input: every service alive and ready, every odd record processed."""
    import aiohttp

    report = ctx.report
    async with aiohttp.ClientSession() as session:
        for name, service in ctx.pipeline.services.items():
            if not service.alive() or not await service.ready(session):
                report.services_stopped += 1
                report.notes.append(f"{name} not alive and ready after the bad records")
    report.services_stopped += len(report.crashes)
    states = {
        key.decode()
        for key, value in await ctx.pipeline.read_topic(ctx.pipeline.topics.appointments)
        if key is not None and value is not None
    }
    missing = ctx.odd_processed - states
    report.odd_unprocessed = len(missing)
    if missing:
        report.notes.append("odd records not processed: " + ", ".join(sorted(missing)))


async def _safe_outcomes(pipeline: Pipeline) -> list:  # type: ignore[type-arg]
    try:
        return await pipeline.outcomes()
    except Exception:  # the broker may be down in the broker scenario
        return []


async def _evaluate(ctx: Context, wanted: set[str]) -> None:
    pipeline, expected, report = ctx.pipeline, ctx.workload.expected, ctx.report
    if ctx.kills:
        report.notes.append("kill -9: " + ", ".join(f"{k} x{v}" for k, v in ctx.kills.items()))
    assert pipeline.smtp is not None and pipeline.push is not None
    mail_ids = Counter(pipeline.smtp.message_ids())
    push_topics = Counter(r.topic for r in pipeline.push.log)
    want: dict[str, str] = {}  # delivery key -> reminder id
    for rid, chans in expected.deliveries.items():
        if "email" in chans:
            want[message_id_for(rid, MESSAGE_ID_DOMAIN)] = rid
        if "push" in chans:
            want[push_topic(*rid.split("/")[:2]) or ""] = rid
    # Mail ids and push topics never collide (a Message-ID has an @), so merging is a union.
    received: dict[str | None, int] = {}
    received.update(mail_ids)
    received.update(push_topics)
    report.expected = sum(1 for rid in want.values() if rid not in ctx.optional)
    report.delivered = sum(1 for k in received if k in want)
    missing = {
        rid
        for k, rid in want.items()
        if k not in received and rid not in ctx.may_fail and rid not in ctx.optional
    }
    # A patient who chose e-mail and push and got the reminder on one of them while the
    # other failed has been reminded (the outcome is "sent", naming the channel that
    # worked): that is counted apart, not as lost.
    reached = {rid for k, rid in want.items() if k in received}
    partial = missing & reached
    lost = missing - partial
    if partial:
        report.notes.append(f"{len(partial)} reminded on one of their two channels only")
    report.lost = len(lost)
    report.unexpected = sum(1 for k in received if k not in want)
    report.duplicates = sum(n - 1 for n in received.values() if n > 1)
    # Only a notifier killed between the server's accept and its commit can resend, and
    # the next owner knows which records were in flight then: it marks their outcome
    # "possible duplicate". A duplicate without that mark is a fault of ours.
    outcomes = await pipeline.outcomes()
    flagged = {o.reminder_id for o in outcomes if o.detail and POSSIBLE_DUPLICATE_MARK in o.detail}
    report.duplicates_in_crash_window = sum(
        n - 1 for k, n in received.items() if n > 1 and k in want and want[k] in flagged
    )
    seen = {o.reminder_id for o in outcomes}
    report.missing_outcomes = len(wanted - seen)
    failed = {o.reminder_id for o in outcomes if o.status == "failed"}
    if lost:
        last = {o.reminder_id: o for o in outcomes}
        why = Counter(
            f"{last[r].status}/{last[r].reason}" if r in last else "no outcome" for r in lost
        )
        report.notes.append("lost: " + ", ".join(f"{k} x{v}" for k, v in why.items()))
    missing_failures = {rid for rid in ctx.may_fail if rid not in failed and rid in wanted}
    delivered_rids = {want[k] for k in received if k in want}
    if missing_failures - delivered_rids:
        report.notes.append(f"{len(missing_failures)} refused deliveries without failed outcome")
    dues: Counter[str] = Counter()
    for _, value in await pipeline.read_topic(pipeline.topics.reminders_due):
        if value is not None:
            with contextlib.suppress(ValueError):
                dues[ReminderDue.model_validate_json(value).reminder_id] += 1
    report.scheduler_duplicates = sum(n - 1 for n in dues.values() if n > 1)
    report.dlq = sum((await pipeline.dlq_counts()).values())
    from tests.support.logscan import scan_logs

    report.leaks = scan_logs(
        pipeline.log_lines(),
        ctx.workload.patient_names.values(),
        ctx.workload.emails,
        allowed_domains=[MESSAGE_ID_DOMAIN],
        allowed_emails=[c.sender.email for c in ctx.workload.practices if c.sender],
    )[:5]
