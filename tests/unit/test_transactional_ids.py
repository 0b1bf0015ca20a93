"""Every service names its per-partition transactional producer the same way."""

from __future__ import annotations

from typing import cast
from unittest.mock import MagicMock

from aiokafka import AIOKafkaConsumer

from schemas.topics import Topics
from services.booking_events.app import BookingEventsService
from services.common.clock import SystemClock
from services.common.kafka import transactional_id
from services.common.settings import KafkaSettings, Settings
from services.notifier.engine import NotifierContext
from services.reminder_scheduler.firing import SchedulerContext
from services.reminder_scheduler.service import SchedulerService


def test_transactional_id_is_prefix_group_and_partition() -> None:
    assert transactional_id(KafkaSettings(), "notifier", 0) == "notifier-p0"
    kafka = KafkaSettings(topic_prefix="acc.")
    assert transactional_id(kafka, "reminder-scheduler", 11) == "acc.reminder-scheduler-p11"


def _custom_groups() -> Settings:
    return Settings(
        kafka={"topic_prefix": "acc."},  # type: ignore[arg-type]
        scheduler={"group_id": "sched-blue"},  # type: ignore[arg-type]
        notifier={"group_id": "notif-blue"},  # type: ignore[arg-type]
        booking_events={"group_id": "book-blue"},  # type: ignore[arg-type]
    )


def test_a_scheduler_with_a_custom_group_id_uses_it_for_its_producers() -> None:
    settings = _custom_groups()
    service = SchedulerService(settings)
    ctx = SchedulerContext(
        settings=settings,
        topics=Topics("acc."),
        clock=SystemClock(),
        partitions=12,
        consumer=cast(AIOKafkaConsumer, MagicMock()),
        policy_of=lambda _: MagicMock(),
    )
    assert ctx.transactional_id(3) == "acc.sched-blue-p3"
    assert ctx.transactional_id(3) == transactional_id(settings.kafka, "sched-blue", 3)
    # The id lives under the group's name, so the prefixed transactional-id ACL covers it.
    assert ctx.transactional_id(3).startswith(service.group_id)


def test_every_service_derives_its_transactional_id_from_its_group_id() -> None:
    settings = _custom_groups()
    booking = BookingEventsService(settings)
    assert booking._transactional_id(5) == "acc.book-blue-p5"
    assert booking._transactional_id(5).startswith(booking.group_id)
    notifier = NotifierContext(
        settings=settings,
        topics=Topics("acc."),
        clock=SystemClock(),
        group_id="acc.notif-blue",
        partitions=12,
        consumer=MagicMock(),
        admin=MagicMock(),
        tables=MagicMock(),
        deliverer=MagicMock(),
    )
    assert notifier.transactional_id(5) == "acc.notif-blue-p5"
