"""End-to-end notifier throughput: due reminders on Kafka -> decide -> SMTP sink -> outcomes.

    .venv/bin/python bench/notifier.py [--reminders 3000] [--batch-sizes 5,20,100]
                                       [--partitions 12] [--bootstrap HOST:PORT]
                                       [--warmup 600] [--rounds 1]

Without --bootstrap a local broker is started (deploy/kafka/kafka-local). For each batch
size the records (configs, appointments, preferences, due reminders) are published under
a fresh topic prefix first; then one notifier instance starts and the clock runs until
every reminder has a committed outcome. The SMTP sink runs in its own process (it would
otherwise share the GIL with the notifier). Printed per batch size: partition load
time, reminders/s from "all partitions ready" to "every outcome committed", the mean
batch time (decide + send + transaction), the transactions per second and the notifier's
CPU per reminder (less sensitive than reminders/s to other load on a shared machine).

Both the notifier and its floor run on the event loop the notifier's app names
(``services.common.loops.preferred_loop``: uvloop where installed, as ``reminders run
notifier`` runs it), one ``asyncio.Runner`` per round: the same loop for both, so the
ratio compares the notifier with the mail library, not one loop with another.

A warm-up round comes first (``--warmup`` reminders at the first batch size, 0: none),
the same as the others but not reported: a fresh broker spends its first seconds of
transactions compiling (JIT) and loading coordinators, and without it the first round,
the notifier's, paid for that alone (its floor comes after it, on a warm broker).

The floor, measured in the same round right after the notifier: raw aiosmtplib
``sendmail`` of the same bytes (composed beforehand by the notifier's own Deliverer,
untimed; the notifier's pool hands the same composed bytes to aiosmtplib's MAIL, RCPT
and DATA, the steps ``sendmail`` takes, without its second pass over them) over
the same number of connections (``--connections``, the notifier's SMTP pool size) to
the same sink. One line per batch size: figure, floor, ratio (target >= 70%), CPU
per reminder (target <= 1 ms) and, beside it, the floor's own client CPU per message
(``time.process_time`` around ``run_raw``: what part of the notifier's CPU is the mail
library itself). ``--rounds N`` runs N such rounds per batch size, a line each, then a
line with the medians (the ratio is the median of each round's own ratio): on a shared
machine one round's ratio moved between 33% and 69% within the same hour.

Under each round's line, the CPU per reminder the sink's process and the broker's spent
in the notifier's phase and in the floor's (the broker's with ``--broker-pid`` beside
``--bootstrap``, or the broker the bench starts): on one machine they share its cores
with the notifier, and the exactly-once transactions are the broker's work.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `services` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


from prometheus_client import REGISTRY

from bench.proc import cpu_seconds
from bench.smtp_pool import run_raw
from devkit.sinks.smtp_sink import SmtpSink
from schemas.models import (
    Appointment,
    PatientPreferences,
    PracticeConfig,
    ReminderDue,
    appointment_key,
)
from schemas.topics import Topics
from services.common.kafka import create_topics, make_producer
from services.common.loops import preferred_loop
from services.common.settings import (
    KafkaSettings,
    MetricsSettings,
    NotifierSettings,
    Settings,
    SmtpSettings,
)
from services.domain.codec import encode
from services.domain.mime import ComposedMail
from services.domain.partition import partition_for
from services.domain.render import render_reminder
from services.notifier.app import NotifierService
from services.notifier.delivery import Deliverer
from services.notifier.patient_mail import patient_mail_from_settings
from services.notifier.retry import RetryPolicy
from services.notifier.samples import (
    sample_appointment,
    sample_config,
    sample_due,
    sample_preferences,
)


def _sink_process(conn: Connection) -> None:
    sink = SmtpSink(keep_messages=False)
    sink.start()
    conn.send(sink.port)
    while conn.recv() == "count":
        conn.send(sink.received_count)
    sink.stop()


Joined = tuple[ReminderDue, PracticeConfig, Appointment, PatientPreferences]


async def _publish(kafka: KafkaSettings, reminders: int, practices: int) -> list[Joined]:
    topics = Topics(kafka.topic_prefix)
    producer = make_producer(kafka, linger_ms=20)
    await producer.start()
    now = datetime.now(UTC)
    start = (now + timedelta(days=1)).replace(microsecond=0)
    try:
        ids = [f"{n:08d}" for n in range(practices)]
        configs = {}
        for practice in ids:
            config = configs[practice] = sample_config(practice)
            await producer.send(
                topics.practice_config,
                encode(config),
                key=practice.encode(),
                partition=partition_for(practice, kafka.partitions),
            )
        dues = []
        joined: list[Joined] = []
        for i in range(reminders):
            practice = ids[i % practices]
            part = partition_for(practice, kafka.partitions)
            patient = f"pat-{i}"
            appt = sample_appointment(practice, f"appt-{i}", start=start, patient_id=patient)
            prefs = sample_preferences(practice, patient, updated_at=now)
            await producer.send(
                topics.appointments, encode(appt), key=appt.key.encode(), partition=part
            )
            await producer.send(
                topics.patient_preferences, encode(prefs), key=prefs.key.encode(), partition=part
            )
            dues.append((sample_due(appt, fired_at=now), part))
            joined.append((dues[-1][0], configs[practice], appt, prefs))
        await producer.flush()
        for due, part in dues:
            key = appointment_key(due.practice_id, due.appointment_id).encode()
            await producer.send(topics.reminders_due, encode(due), key=key, partition=part)
        await producer.flush()
    finally:
        await producer.stop()
    return joined


class _Capture:
    def __init__(self) -> None:
        self.sent: list[ComposedMail] = []

    async def send(self, msg: ComposedMail) -> None:
        self.sent.append(msg)


async def _same_messages(settings: Settings, joined: list[Joined]) -> list[ComposedMail]:
    """What the notifier sent, composed by its own Deliverer (for the raw floor)."""
    capture = _Capture()
    deliverer = Deliverer(
        email=capture,
        push=None,
        policy=RetryPolicy(attempts=1, base_delay=0.01, max_delay=0.01),
        message_id_domain=settings.smtp.message_id_domain,
        patient_mail=patient_mail_from_settings(settings),
    )
    now = datetime.now(UTC)
    for due, config, appt, prefs in joined:
        rendered = render_reminder(config, appt, prefs.language, channels=("email",))
        await deliverer.deliver(due, ("email",), config, appt, prefs, rendered, now)
    return capture.sent


async def _until(check: Callable[[], bool]) -> None:
    while not check():  # noqa: ASYNC110 - polling counters of the service under test
        await asyncio.sleep(0.01)


def _batch_stats() -> tuple[float, float]:
    count = REGISTRY.get_sample_value("reminders_notifier_batch_seconds_count") or 0.0
    total = REGISTRY.get_sample_value("reminders_notifier_batch_seconds_sum") or 0.0
    return count, total


async def _round(
    bootstrap: str,
    partitions: int,
    batch_size: int,
    reminders: int,
    practices: int,
    port: int,
    connections: int,
    others: dict[str, int],
) -> _Figures:
    kafka = KafkaSettings(
        bootstrap_servers=bootstrap,
        topic_prefix=f"bench{uuid.uuid4().hex[:8]}.",
        partitions=partitions,
        client_id="bench-notifier",
    )
    await create_topics(kafka)
    joined = await _publish(kafka, reminders, practices)
    settings = Settings(
        kafka=kafka,
        smtp=SmtpSettings(host="127.0.0.1", port=port, security="none", pool_size=connections),
        metrics=MetricsSettings(port=0),
        notifier=NotifierSettings(batch_size=batch_size),
    )
    service = NotifierService(settings)
    batches_before, seconds_before = _batch_stats()
    began = time.perf_counter()
    await service.start()
    try:
        await _until(
            lambda: (
                len(service.workers) == partitions
                and all(w.ready for w in service.workers.values())
            )
        )
        ready = time.perf_counter()
        cpu_ready = time.process_time()
        others_ready = _cpu_of(others)
        await _until(
            lambda: sum(w.outcomes_committed for w in service.workers.values()) >= reminders
        )
        done = time.perf_counter()
        cpu = time.process_time() - cpu_ready
        others_notifier = _cpu_of(others, since=others_ready, per=reminders)
    finally:
        await service.stop()
    batches_after, seconds_after = _batch_stats()
    batches = batches_after - batches_before
    mean_batch = (seconds_after - seconds_before) / batches if batches else 0.0
    rate = reminders / (done - ready)
    messages = await _same_messages(settings, joined)
    floor_cpu_start = time.process_time()
    others_floor = _cpu_of(others)
    floor = await run_raw(port, messages, connections, connections)
    floor_cpu_ms = (time.process_time() - floor_cpu_start) / len(messages) * 1e3
    others_floor = _cpu_of(others, since=others_floor, per=len(messages))
    cpu_ms = cpu / reminders * 1e3
    line = (
        f"batch {batch_size:>4}: notifier {rate:6.0f} reminders/s, floor raw aiosmtplib "
        f"{floor:6.0f} msg/s ({connections} connections, same messages), ratio "
        f"{rate / floor:6.1%} (target >= 70%); notifier CPU {cpu_ms:5.2f} ms/reminder "
        f"(target <= 1), floor client CPU {floor_cpu_ms:5.2f} ms/msg; "
        f"load {ready - began:5.2f} s, mean batch {mean_batch * 1000:6.1f} ms, "
        f"{batches / (done - ready):5.1f} txn/s"
    )
    if others:
        shares = ", ".join(
            f"{name} {others_notifier[name]:.2f} / {others_floor[name]:.2f}" for name in others
        )
        line += f"\n    other processes' CPU per reminder (ms), notifier / floor: {shares}"
    return _Figures(rate, floor, cpu_ms, line)


def _cpu_of(
    pids: dict[str, int], *, since: dict[str, float] | None = None, per: int = 1
) -> dict[str, float]:
    """CPU seconds of each process so far; with ``since``, milliseconds per item since."""
    now = {name: cpu_seconds(pid) for name, pid in pids.items()}
    if since is None:
        return now
    return {name: (now[name] - since[name]) / per * 1e3 for name in pids}


@dataclass(frozen=True)
class _Figures:
    rate: float  # reminders per second, end to end
    floor: float  # raw aiosmtplib messages per second, right after
    cpu_ms: float  # notifier CPU per reminder
    line: str


def _median_line(batch_size: int, rounds: list[_Figures]) -> str:
    ratios = [r.rate / r.floor for r in rounds]
    return (
        f"batch {batch_size:>4}, median of {len(rounds)} rounds (notifier, floor, notifier, "
        f"floor, ...): notifier {statistics.median(r.rate for r in rounds):6.0f} reminders/s, "
        f"floor {statistics.median(r.floor for r in rounds):6.0f} msg/s, ratio "
        f"{statistics.median(ratios):6.1%} ({min(ratios):.1%}-{max(ratios):.1%}; target >= "
        f"70%); notifier CPU {statistics.median(r.cpu_ms for r in rounds):5.2f} ms/reminder "
        "(target <= 1)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reminders", type=int, default=3000)
    parser.add_argument("--practices", type=int, default=60)
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--batch-sizes", default="5,20,100")
    parser.add_argument("--bootstrap", default=None)
    parser.add_argument("--connections", type=int, default=8, help="SMTP connections (both)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="rounds per batch size (each the notifier, then its floor), and their medians",
    )
    parser.add_argument(
        "--broker-pid",
        type=int,
        default=None,
        help="the broker's process (with --bootstrap), to print its CPU per reminder",
    )
    parser.add_argument(
        "--warmup", type=int, default=600, help="reminders of the unreported first round"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    # aiokafka's retries while the fresh topics get their leaders: noise beside the figures
    logging.getLogger("aiokafka").setLevel(logging.ERROR)

    broker = None
    bootstrap = args.bootstrap
    if bootstrap is None:
        from devkit.local_kafka import LocalKafka

        broker = LocalKafka()
        bootstrap = broker.start()
    parent, child = multiprocessing.Pipe()
    sink = multiprocessing.Process(target=_sink_process, args=(child,), daemon=True)
    sink.start()
    port = parent.recv()
    # The CPU the sink and the broker spend per reminder in each phase: they share this
    # machine's cores with the notifier (and with the floor's client).
    others = {"sink": sink.pid} if sink.pid is not None else {}
    broker_pid = args.broker_pid
    if broker_pid is None and broker is not None:
        broker_pid = broker.pid
    if broker_pid is not None:
        others["broker"] = broker_pid
    try:
        factory = preferred_loop()  # what the notifier app names as its loop_factory
        loop_name = "asyncio" if factory is None else f"{factory.__module__.split('.')[0]}"
        print(
            f"notifier end to end: {args.reminders} reminders, {args.practices} practices, "
            f"{args.partitions} partitions, one instance, SMTP sink in its own process; "
            f"notifier and floor on the notifier's loop ({loop_name})"
        )
        sizes = [int(s) for s in args.batch_sizes.split(",")]
        if args.warmup > 0:
            with asyncio.Runner(loop_factory=factory) as runner:
                runner.run(
                    _round(
                        bootstrap,
                        args.partitions,
                        sizes[0],
                        args.warmup,
                        args.practices,
                        port,
                        args.connections,
                        others,
                    )
                )
            print(f"warm-up round: {args.warmup} reminders at batch {sizes[0]}, not reported")
        for size in sizes:
            rounds: list[_Figures] = []
            for _ in range(args.rounds):
                with asyncio.Runner(loop_factory=factory) as runner:
                    figures = runner.run(
                        _round(
                            bootstrap,
                            args.partitions,
                            size,
                            args.reminders,
                            args.practices,
                            port,
                            args.connections,
                            others,
                        )
                    )
                rounds.append(figures)
                print(figures.line, flush=True)
            if len(rounds) > 1:
                print(_median_line(size, rounds), flush=True)
        parent.send("count")
        print(f"messages accepted by the sink (notifier and floor): {parent.recv()}")
    finally:
        parent.send("stop")
        sink.join(timeout=10)
        if broker is not None:
            broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
