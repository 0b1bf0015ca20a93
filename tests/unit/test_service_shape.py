"""Every Kafka pipeline service has one shape: a NAME that is its default group id (and so
its transactional ids and labels), and the factory ``create_app(settings, *, clock=None)``."""

from __future__ import annotations

import inspect
from types import ModuleType

import pytest

from services.booking_events import app as booking_events
from services.common.settings import Settings
from services.notifier import app as notifier
from services.reminder_scheduler import app as scheduler_app
from services.reminder_scheduler import service as scheduler

DEFAULTS = Settings()


@pytest.mark.parametrize(
    ("module", "name", "group_id"),
    [
        (booking_events, booking_events.NAME, DEFAULTS.booking_events.group_id),
        (scheduler_app, scheduler.NAME, DEFAULTS.scheduler.group_id),
        (notifier, notifier.NAME, DEFAULTS.notifier.group_id),
    ],
    ids=["booking-events", "reminder-scheduler", "notifier"],
)
def test_one_name_and_one_factory_shape(module: ModuleType, name: str, group_id: str) -> None:
    assert name == group_id
    parameters = inspect.signature(module.create_app).parameters
    first, *rest = parameters.values()
    assert first.name == "settings" and first.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is None for p in rest)
    assert "clock" in parameters
