"""``reminders demo``: the whole system on this machine, with synthetic practices.

Starts Kafka (unless one is configured), creates the topics, publishes practice configs
and patient preferences, runs the three services, plays a synthetic HIS connector whose
appointments' reminders fall due within the next minute, and checks what the local SMTP
and push sinks received against what should have arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from devkit.demo.followup import show_follow_up
from devkit.demo.pipeline import MESSAGE_ID_DOMAIN, SERVICE_NAMES, Pipeline, outcome_summary
from devkit.demo.workload import Workload, generate
from devkit.local_kafka import LocalKafka
from schemas.models import PracticeConfig
from services.common.db import create_engine, session_factory, upgrade
from services.common.settings import Settings
from services.notifier.email import message_id_for
from services.notifier.push import push_topic
from services.practice_admin.accounts import add_user

__all__ = ["DemoOptions", "DemoResult", "run_demo"]

# Records an HIS connector might get wrong; each must land in the DLQ with a reason.
BAD_EVENTS: list[bytes] = [
    b'{"practice_id": "01990001", "appointment_id": "X1", "start": ',  # truncated JSON
    b'{"event_id": "8d6c3f5e-1b1a-4a57-9a4a-5d0e0f6b7c10", "occurred_at": "2026-11-30T08:00:00Z",'
    b' "source_system": "medicom", "practice_id": "01990001", "appointment_id": "X2",'
    b' "sequence": 1, "status": "booked", "start": "2026-12-01T09:30:00",'
    b' "end": "2026-12-01T09:40:00", "appointment_type": {"code": "C10"},'
    b' "agenda": {"id": "AG"}, "practitioner": {"id": "P"}, "patient": {"id": "pt-1"}}',
    b'{"event_id": "8d6c3f5e-1b1a-4a57-9a4a-5d0e0f6b7c11", "occurred_at": "2026-11-30T08:00:00Z",'
    b' "source_system": "medicom", "practice_id": "01990001", "appointment_id": "X3",'
    b' "sequence": 1, "status": "booked", "start": "2026-12-01T09:30:00Z",'
    b' "end": "2026-12-01T09:40:00Z", "appointment_type": {"code": "C10"},'
    b' "agenda": {"id": "AG"}, "practitioner": {"id": "P"}, "patient": {"id": "123456782"}}',
]


@dataclass
class DemoOptions:
    practices: int = 3
    patients: int = 20
    appointments: int = 25
    partitions: int = 3
    keep_running: bool = False
    out_dir: Path | None = None
    seed: int = 7
    timeout: float = 150.0


@dataclass
class DemoResult:
    ok: bool
    expected_email: int
    expected_push: int
    mails: int
    pushes: int
    duplicates: int
    problems: list[str]


def _say(text: str) -> None:
    print(text, flush=True)


def _configured_bootstrap() -> str | None:
    kafka = Settings().kafka
    return kafka.bootstrap_servers if "bootstrap_servers" in kafka.model_fields_set else None


async def run_demo(options: DemoOptions) -> DemoResult:
    started = time.monotonic()
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out_dir = (options.out_dir or Path("demo-out") / stamp).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    broker: LocalKafka | None = None
    bootstrap = _configured_bootstrap()
    pipeline: Pipeline | None = None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    this = asyncio.current_task()

    def interrupt() -> None:
        # While starting up, cancel whatever step is running; later, the waits watch `stop`.
        if not stop.is_set() and this is not None and not watching:
            this.cancel()
        stop.set()

    watching = False
    code_printer: asyncio.Task[None] | None = None
    admin_url = ""
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, interrupt)
    try:
        if bootstrap is None:
            _say("[1/6] Kafka: starting a local broker (the first run downloads its jars)")
            broker = LocalKafka(out_dir / "kafka")
            bootstrap = await asyncio.to_thread(broker.start)
            prefix = ""
        else:
            prefix = f"demo-{stamp}."
            _say(f"[1/6] Kafka: using {bootstrap} (topics prefixed {prefix!r})")
        settings = Settings().kafka.model_copy(
            update={
                "bootstrap_servers": bootstrap,
                "topic_prefix": prefix,
                "partitions": options.partitions,
            }
        )
        pipeline = Pipeline(kafka=settings, out_dir=out_dir)
        await pipeline.start_infrastructure()
        assert pipeline.smtp is not None and pipeline.push is not None
        _say(
            f"[2/6] topics created; SMTP sink on 127.0.0.1:{pipeline.smtp.port}, "
            f"Web Push sink on {pipeline.push.origin}"
        )

        now = datetime.now(UTC)
        workload = generate(
            now=now,
            practices=options.practices,
            patients=options.patients,
            appointments=options.appointments,
            seed=options.seed,
            push_factory=pipeline.push_subscription,
        )
        await pipeline.publish_configs(workload.practices)
        await pipeline.publish_preferences(workload.preferences)
        off = sum(1 for c in workload.practices if not c.reminders_enabled)
        opted_out = sum(1 for p in workload.preferences if not p.reminders)
        _say(
            f"[3/6] {len(workload.practices)} practices ({off} with reminders off), "
            f"{len(workload.preferences)} patient preferences ({opted_out} opted out)"
        )

        pipeline.start_services()
        await pipeline.wait_ready()
        ports = ", ".join(f"{n} :{s.metrics_port}" for n, s in pipeline.services.items())
        _say(f"[4/6] services ready ({ports})")

        await pipeline.publish_events(workload.events)
        await pipeline.publish(
            pipeline.topics.his_appointments,
            ((b"01990001".decode(), bad, "01990001") for bad in BAD_EVENTS),
        )
        _say(
            f"[5/6] HIS connector published {len(workload.events)} events "
            f"(+{len(BAD_EVENTS)} malformed); reminders fall due within the next minute"
        )
        # The beheeromgeving starts once the workload is out, so it never delays it.
        shown = next((c for c in workload.practices if c.reminders_enabled), workload.practices[0])
        admin_url = await _start_practice_admin(pipeline, out_dir, shown)
        code_printer = asyncio.create_task(_announce_practice_admin(pipeline, admin_url))
        wanted = set(workload.expected.deliveries) | {
            rid for rid, why in workload.expected.suppressed.items() if why != "cancelled"
        }
        watching = True
        await _wait_for_outcomes(pipeline, wanted, options.timeout, stop)
        if stop.is_set():
            _say("interrupted: stopping the services, the sinks and Kafka")
            return DemoResult(False, 0, 0, 0, 0, 0, ["interrupted"])
        result = await _summarise(pipeline, workload, out_dir)
        follow_up = await show_follow_up(pipeline, workload, out_dir, _say, admin_url)
        if follow_up:
            _say("  CHECK FAILED: " + "; ".join(follow_up))
            result.problems += follow_up
            result.ok = False
        _say(f"done in {time.monotonic() - started:.0f} s")
        if options.keep_running and not stop.is_set():
            _say(
                "--keep-running: services and the beheeromgeving stay up "
                f"({admin_url}/login); Ctrl-C stops everything"
            )
            await stop.wait()
        return result
    finally:
        if code_printer is not None:
            code_printer.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if pipeline is not None:
            await pipeline.stop()
        if broker is not None:
            await asyncio.to_thread(broker.stop)


async def _wait_for_outcomes(
    pipeline: Pipeline, wanted: set[str], timeout: float, stop: asyncio.Event
) -> None:
    deadline = time.monotonic() + timeout
    last_line = ""
    while not stop.is_set():
        outcomes = await pipeline.outcomes()
        seen = {o.reminder_id for o in outcomes}
        assert pipeline.smtp is not None and pipeline.push is not None
        line = (
            f"      outcomes {len(seen & wanted)}/{len(wanted)} · "
            f"mails {len(pipeline.smtp.messages)} · push {len(pipeline.push.log)}"
        )
        if line != last_line:
            _say(line)
            last_line = line
        if wanted <= seen:
            # Give late duplicates, if any, a moment to show up before counting.
            await asyncio.sleep(1.0)
            return
        if time.monotonic() > deadline:
            _say(f"      timed out after {timeout:.0f} s waiting for outcomes")
            return
        for name, service in pipeline.services.items():
            if not service.alive():
                _say(f"      service {name} exited; see {service.log_path}")
                return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=2.0)


async def _summarise(pipeline: Pipeline, workload: Workload, out_dir: Path) -> DemoResult:
    assert pipeline.smtp is not None and pipeline.push is not None
    expected = workload.expected
    outcomes = await pipeline.outcomes()
    summary = outcome_summary(outcomes)
    dlq = await pipeline.dlq_counts()
    # Sign-in codes of the beheeromgeving are not reminders.
    mail_ids = [
        str(m.message["Message-ID"]) for m in pipeline.smtp.messages if DEMO_ADMIN not in m.rcpt_tos
    ]
    push_topics = [r.topic for r in pipeline.push.log]

    want_mail = {
        message_id_for(rid, MESSAGE_ID_DOMAIN)
        for rid, chans in expected.deliveries.items()
        if "email" in chans
    }
    want_push = {
        push_topic(*rid.split("/")[:2])
        for rid, chans in expected.deliveries.items()
        if "push" in chans
    }
    meeting_mail = {message_id_for(rid, MESSAGE_ID_DOMAIN) for rid in expected.meetings}
    problems: list[str] = []
    duplicates = (len(mail_ids) - len(set(mail_ids))) + (len(push_topics) - len(set(push_topics)))
    if set(mail_ids) != want_mail:
        problems.append(
            f"mails: {len(set(mail_ids) - want_mail)} unexpected, "
            f"{len(want_mail - set(mail_ids))} missing"
        )
    if set(push_topics) != want_push:
        problems.append(
            f"push: {len(set(push_topics) - want_push)} unexpected, "
            f"{len(want_push - set(push_topics))} missing"
        )
    if meeting_mail & set(mail_ids):
        problems.append("a meeting was reminded")
    if duplicates:
        problems.append(f"{duplicates} duplicate messages")
    bad_dlq = dlq.get(pipeline.topics.dlq(pipeline.topics.his_appointments), 0)
    if bad_dlq < len(BAD_EVENTS):
        problems.append(f"only {bad_dlq} of {len(BAD_EVENTS)} malformed events in the DLQ")

    def fmt(counts: dict[str, int]) -> str:
        return " · ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"

    _say("[6/6] summary")
    total = sum(sum(bucket.values()) for bucket in summary.values())
    _say(f"  reminders    {total} outcomes, one per appointment time")
    _say(f"  sent         {fmt(summary['sent'])}  (by first channel; both when both given)")
    _say(f"  suppressed   {fmt(summary['suppressed'])}")
    _say(f"  failed       {fmt(summary['failed'])}")
    _say(
        f"  meetings     {len(expected.meetings)} linked to patients, none reminded "
        "(in practices with reminders off they count as reminders_disabled)"
    )
    _say(f"  dead-letter  {fmt({k: v for k, v in dlq.items() if v})}")
    _say(
        f"  received     {len(mail_ids)} mails (expected {len(want_mail)}), "
        f"{len(push_topics)} push messages (expected {len(want_push)})"
    )
    _say(f"  mail         {pipeline.mbox_path}")
    _say(f"  logs         {out_dir / 'logs'}")
    for name in SERVICE_NAMES:
        if name in pipeline.services:
            _say(f"  metrics      {pipeline.services[name].metrics_url}  ({name})")
    if problems:
        _say("  CHECK FAILED: " + "; ".join(problems))
    else:
        _say("  check        every number above matches what the sinks received")
    return DemoResult(
        ok=not problems,
        expected_email=len(want_mail),
        expected_push=len(want_push),
        mails=len(mail_ids),
        pushes=len(push_topics),
        duplicates=duplicates,
        problems=problems,
    )


DEMO_ADMIN = "beheerder@demo.invalid"
_CODE = re.compile(r"\b(\d{6})\b")


async def _start_practice_admin(pipeline: Pipeline, out_dir: Path, practice: PracticeConfig) -> str:
    """A migrated SQLite database with one demo beheerder, practice-admin and insights on it."""
    url = f"sqlite+aiosqlite:///{out_dir / 'admin.sqlite3'}"
    engine = create_engine(url)
    try:
        await upgrade(engine)
        async with session_factory(engine).begin() as session:
            await add_user(
                session, DEMO_ADMIN, practice.practice_id, "beheerder", datetime.now(UTC)
            )
    finally:
        await engine.dispose()
    # insights projects the outcomes into this database as they come: the verzendlog and
    # the follow-up page read them there.
    pipeline.start_insights(url)
    return pipeline.start_practice_admin(url, demo=True)


async def _announce_practice_admin(pipeline: Pipeline, url: str) -> None:
    """Says where the beheeromgeving is once it is ready, then prints every sign-in code."""
    assert pipeline.smtp is not None
    try:
        await pipeline.wait_ready(["practice-admin"], timeout=120)
    except (RuntimeError, TimeoutError) as exc:
        _say(f"      beheeromgeving did not start: {exc}")
        return
    _say(
        f"      beheeromgeving: {url}/login  (sign in as {DEMO_ADMIN}; the code arrives in "
        "the demo's mail sink and is printed here)"
    )
    seen = 0
    while True:
        mails = [m for m in pipeline.smtp.messages if DEMO_ADMIN in m.rcpt_tos]
        for mail in mails[seen:]:
            body = mail.message.get_body(("plain",))
            found = _CODE.search(body.get_content()) if body is not None else None
            if found:
                _say(f"      sign-in code for {DEMO_ADMIN}: {found.group(1)} (valid 10 minutes)")
        seen = len(mails)
        await asyncio.sleep(0.5)


def main(options: DemoOptions) -> int:
    try:
        result = asyncio.run(run_demo(options))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("interrupted; everything stopped", file=sys.stderr)
        return 130
    if result.problems == ["interrupted"]:
        return 130
    return 0 if result.ok else 1
