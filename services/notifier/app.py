"""The notifier service: consumer group member on ``reminders.due.v1`` (the handler of
a :class:`~services.common.partitions.GroupMember`: membership, rebalance listener and
fetch loop), one worker per owned partition (engine.py), and the FastStream app around it.

Tables: ``practice.config.v1`` is read whole (every practice's config, validated with
the templates checked, an invalid one keeping the last valid in force);
``patient.preferences.v1``, ``appointments.v1`` and ``notifications.outcomes.v1`` (the
ledger) only for the owned partitions. Kafka transactions are not wrapped by
FastStream, so the work is done with aiokafka; the FastStream broker only documents the
topics and lets ``reminders run notifier`` / ``faststream run
services.notifier.app:app`` run the service.

Consumer group id and transactional ids carry the topic prefix, so instances on
different prefixes (tests, acceptance on a shared cluster) never meet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Final

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from faststream.kafka import KafkaBroker

from schemas.models import Outcome
from schemas.topics import Topics
from services.common.clock import Clock, SystemClock
from services.common.health import loops_alive
from services.common.kafka import admin_client, check_partitions, make_consumer, make_producer
from services.common.loops import preferred_loop
from services.common.partitions import Batches, GroupMember
from services.common.runtime import ServiceApp, StartRefused, make_app, make_broker, module_app
from services.common.settings import PushSettings, Settings, SmtpSettings
from services.notifier.delivery import Deliverer, EmailTransport, PushTransport
from services.notifier.dkim import DkimSigner, DkimSigningTransport, load_dkim_key
from services.notifier.email import SmtpOptions, SmtpPool
from services.notifier.engine import NotifierContext, PartitionWorker
from services.notifier.patient_mail import patient_mail_from_settings
from services.notifier.push import KNOWN_PUSH_SERVICES, VapidOptions, WebPushSender
from services.notifier.retry import RetryPolicy
from services.notifier.tables import NotifierTables

__all__ = [
    "NAME",
    "NotifierService",
    "create_app",
    "smtp_options",
    "vapid_options",
]

log = logging.getLogger(__name__)

# The service's name: its default group id, its transactional ids and its labels.
NAME: Final = "notifier"

_WORKER_RESTART_SECONDS = 5.0


def smtp_options(settings: SmtpSettings) -> SmtpOptions:
    return SmtpOptions(
        host=settings.host,
        port=settings.port,
        security=settings.security,
        username=settings.username,
        password=settings.password.get_secret_value() if settings.password else None,
        ca_file=settings.ca_file,
        pool_size=settings.pool_size,
        max_messages_per_connection=settings.max_messages_per_connection,
        idle_noop_seconds=settings.idle_noop_seconds,
        timeout=settings.timeout,
    )


def vapid_options(settings: PushSettings) -> VapidOptions | None:
    if settings.vapid_private_key is None:
        return None
    return VapidOptions(
        private_key=settings.vapid_private_key.get_secret_value(), subject=settings.vapid_subject
    )


def _push_sender(settings: PushSettings) -> WebPushSender | None:
    vapid = vapid_options(settings)
    if vapid is None:
        return None
    hosts = list(
        settings.allowed_hosts if settings.allowed_hosts is not None else KNOWN_PUSH_SERVICES
    )
    if settings.allow_insecure_loopback:
        hosts += ["127.0.0.1", "localhost"]
    return WebPushSender(
        vapid,
        timeout=settings.timeout,
        allow_insecure_loopback=settings.allow_insecure_loopback,
        allowed_host_suffixes=hosts,
    )


class NotifierService:
    """Reads due reminders, decides, sends, and commits one outcome per reminder; the
    :class:`~services.common.partitions.PartitionHandler` of its group member."""

    name = NAME

    def __init__(
        self,
        settings: Settings,
        clock: Clock | None = None,
        smtp: EmailTransport | None = None,
        push: PushTransport | None = None,
    ) -> None:
        self.settings = settings
        self.clock: Clock = clock if clock is not None else SystemClock()
        self.topics = Topics(settings.kafka.topic_prefix)
        self.group_id = f"{settings.kafka.topic_prefix}{settings.notifier.group_id}"
        self.broker: KafkaBroker = make_broker(settings, self.name)
        self._declare_topics()
        self._smtp: EmailTransport | None = smtp
        self._push: PushTransport | None = push
        self._owned: list[SmtpPool | WebPushSender] = []  # senders made here, closed on stop
        self._pool: SmtpPool | None = None
        self._ctx: NotifierContext | None = None
        self._workers: dict[int, PartitionWorker] = {}
        self._assigned: set[int] = set()
        self._consumer: AIOKafkaConsumer | None = None
        self._member: GroupMember | None = None
        self._probe: AIOKafkaConsumer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._dlq_producer: AIOKafkaProducer | None = None
        self._tables: NotifierTables | None = None
        self._started = False
        self._stopping = False
        self.partition_count = 0

    def _declare_topics(self) -> None:
        """Publishers for the AsyncAPI document (`faststream docs gen`)."""
        self.broker.publisher(
            self.topics.outcomes,
            title="notifications.outcomes.v1",
            description=(
                "One Outcome per due reminder: sent, suppressed or failed, with the reason."
            ),
            schema=Outcome,
            include_in_schema=True,
        )

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        settings, topics = self.settings, self.topics
        kafka = settings.kafka
        self.partition_count = await check_partitions(
            kafka,
            [
                topics.reminders_due,
                topics.appointments,
                topics.patient_preferences,
                topics.practice_config,
                topics.outcomes,
                Topics.dlq(topics.reminders_due),
                Topics.dlq(topics.patient_preferences),
            ],
        )
        try:
            await self._start(settings)
        except BaseException:
            await self.stop()
            raise
        self._started = True
        log.info(
            "notifier started",
            extra={"partitions": self.partition_count, "group_id": self.group_id},
        )

    async def _start(self, settings: Settings) -> None:
        kafka, topics = settings.kafka, self.topics
        if self._smtp is None:
            pool = SmtpPool(smtp_options(settings.smtp))
            await pool.start()
            pool.watch()  # says at once, and on /readyz, when no mail can go out
            self._owned.append(pool)
            self._smtp = pool
            self._pool = pool
        if self._push is None:
            try:
                sender = _push_sender(settings.push)
            except ValueError as exc:  # the messages name the problem, never the key
                raise StartRefused(f"Web Push (REMINDERS_PUSH__VAPID_*): {exc}") from None
            if sender is None:
                log.warning("no VAPID key configured: Web Push is off, e-mail only")
            else:
                self._owned.append(sender)
                self._push = sender
        policy = RetryPolicy(
            attempts=settings.notifier.max_attempts,
            base_delay=settings.notifier.retry_base_seconds,
            max_delay=settings.notifier.retry_max_seconds,
        )
        email_transport = self._smtp
        dkim_key = load_dkim_key(settings.smtp)  # DkimKeyError says what to fix
        if dkim_key is not None and email_transport is not None:
            email_transport = DkimSigningTransport(email_transport, DkimSigner(dkim_key))
            log.info(
                "DKIM signing on",
                extra={"dkim_domain": dkim_key.domain, "dkim_algorithm": dkim_key.algorithm},
            )
        deliverer = Deliverer(
            email=email_transport,
            push=self._push,
            policy=policy,
            message_id_domain=settings.smtp.message_id_domain,
            sleep=self.clock.sleep,
            patient_mail=patient_mail_from_settings(settings),
        )
        self._dlq_producer = make_producer(kafka)
        await self._dlq_producer.start()
        self._probe = make_consumer(kafka, group_id=None)
        await self._probe.start()
        self._admin = admin_client(kafka)
        await self._admin.start()
        self._tables = NotifierTables(
            kafka,
            topics,
            self.clock,
            dead_letter_producer=self._dlq_producer,
            probe=self._probe,
        )
        await self._tables.start()

        self._consumer = make_consumer(
            kafka,
            group_id=self.group_id,
            session_timeout_ms=settings.notifier.session_timeout_ms,
            heartbeat_interval_ms=settings.notifier.heartbeat_interval_ms,
        )
        self._ctx = NotifierContext(
            settings=settings,
            topics=topics,
            clock=self.clock,
            group_id=self.group_id,
            partitions=self.partition_count,
            consumer=self._consumer,
            admin=self._admin,
            tables=self._tables,
            deliverer=deliverer,
        )
        self._member = GroupMember(self._consumer, [topics.reminders_due], self, name=NAME)
        await self._member.start()

    async def stop(self) -> None:
        self._stopping = True
        member = self._member
        if member is not None:
            member.cancel()
        await self._stop_workers(set(self._workers))
        if member is not None:
            await member.stop()  # leaves the group
        elif self._consumer is not None:
            await self._consumer.stop()  # made, never started: closes its client
        self._member = self._consumer = None
        if self._tables is not None:
            await self._tables.stop()
            self._tables = None
        for client in (self._probe, self._dlq_producer):
            if client is not None:
                await client.stop()
        self._probe = self._dlq_producer = None
        if self._admin is not None:
            await self._admin.close()
            self._admin = None
        for owned in reversed(self._owned):
            await owned.close()
            if owned is self._smtp:
                self._smtp = self._pool = None
            if owned is self._push:
                self._push = None
        self._owned.clear()
        self._started = False

    @property
    def lag_topics(self) -> list[str]:
        """Topics whose consumer lag the runtime reports (reminders_consumer_lag_records)."""
        return [self.topics.reminders_due]

    def readiness(self) -> tuple[bool, dict[str, object]]:
        states = {str(p): w.state for p, w in sorted(self._workers.items())}
        ready = (
            self._started
            and not self._stopping
            and self._member is not None
            and self._member.running
            and all(w.ready for w in self._workers.values())
        )
        details: dict[str, object] = {"partitions": states}
        problem = self._pool.problem if self._pool is not None else None
        if problem is not None:
            # No mail can go out at all: not ready, whatever the partitions say.
            ready = False
            details["reason"] = f"no mail can be sent: {problem.message}"
            details["mail"] = {"problem": problem.reason}
        return ready, details

    def liveness(self) -> tuple[bool, dict[str, object]]:
        """/healthz: fails once the dispatching loop or a table has died."""
        died = self._member.failed if self._member is not None else None
        loops: dict[str, BaseException | None] = {"dispatch": died}
        if self._tables is not None:
            loops.update(self._tables.failures())
        return loops_alive(loops)

    # ------------------------------------------------------------------ views for tests
    @property
    def workers(self) -> dict[int, PartitionWorker]:
        return dict(self._workers)

    def idle(self) -> bool:
        """Every owned partition loaded, nothing queued or in progress."""
        return bool(self._workers) and all(w.ready and w.idle for w in self._workers.values())

    # ------------------------------------------------------------------ group membership
    async def _stop_workers(self, partitions: set[int]) -> None:
        timeout = self.settings.notifier.drain_seconds
        workers = [self._workers.pop(p) for p in sorted(partitions) if p in self._workers]
        await asyncio.gather(*(w.stop(timeout) for w in workers))

    def fetch_timeout_ms(self) -> int:
        return 200

    async def revoked(self, partitions: set[int]) -> None:
        log.info("partitions revoked", extra={"partitions": sorted(partitions)})
        await self._stop_workers(partitions)

    async def assigned(self, partitions: set[int]) -> None:
        ctx = self._ctx
        assert ctx is not None
        log.info("partitions assigned", extra={"partitions": sorted(partitions)})
        gone = self._assigned - partitions
        self._assigned = set(partitions)
        for p in sorted(partitions):
            if p not in self._workers:
                self._start_worker(p)
        if gone:
            await self._stop_workers(gone)
            await ctx.tables.unfollow(gone)

    def _start_worker(self, partition: int) -> None:
        ctx = self._ctx
        assert ctx is not None
        worker = PartitionWorker(ctx, partition)
        self._workers[partition] = worker
        worker.start()

    # ------------------------------------------------------------------ fetching
    async def handle(self, batches: Batches) -> None:
        member = self._member
        assert member is not None
        for tp, records in batches.items():
            if not records:
                continue
            worker = self._workers.get(tp.partition)
            if worker is None:
                # Not ours (any more): never drop records silently, fetch them again.
                member.seek({tp: records[0].offset})
                continue
            worker.enqueue(records)
            member.consumer.pause(tp)  # the worker resumes it when its queue is empty
        await self._restart_failed()

    async def _restart_failed(self) -> None:
        """A worker that failed (fenced, or an unexpected error) starts over from the
        committed offset, with a new producer (which fences again) and the in-flight marker."""
        consumer = self._consumer
        for p, worker in list(self._workers.items()):
            if worker.state != "failed" or p not in self._assigned:
                continue
            if (
                worker.failed_at is None
                or time.monotonic() - worker.failed_at < _WORKER_RESTART_SECONDS
            ):
                continue
            log.warning("restarting partition worker", extra={"partition": p})
            await self._stop_workers({p})
            if consumer is not None and worker.tp in consumer.assignment():
                with contextlib.suppress(KafkaError):
                    await consumer.seek_to_committed(worker.tp)
            self._start_worker(p)


def create_app(
    settings: Settings,
    *,
    clock: Clock | None = None,
    smtp: EmailTransport | None = None,
    push: PushTransport | None = None,
) -> ServiceApp:
    """The FastStream app of ``reminders run notifier``; transports for tests. Its
    ``loop_factory`` names the event loop ``reminders run`` runs it on."""
    app = make_app(NotifierService(settings, clock=clock, smtp=smtp, push=push), settings)
    # The notifier spends much of each reminder in the loop and its transports (SMTP
    # sessions, Kafka round trips); bench/notifier.py runs it and its floor on this loop.
    app.loop_factory = preferred_loop()
    return app


# ``faststream run services.notifier.app:app``
__getattr__ = module_app(create_app)
