"""The scheduler as a FastStream app: ``reminders run scheduler``.

Also ``faststream run services.reminder_scheduler.app:app`` (settings from the
environment). The work is done with aiokafka on the partition-ownership runtime
(transactions); the FastStream broker carries the app's lifecycle and documents the
topics.
"""

from __future__ import annotations

from faststream import FastStream

from services.common.clock import Clock
from services.common.runtime import make_app, module_app
from services.common.settings import Settings
from services.reminder_scheduler.service import SchedulerService

__all__ = ["SchedulerService", "create_app"]


def create_app(settings: Settings, *, clock: Clock | None = None) -> FastStream:
    """The FastStream app of ``reminders run scheduler``."""
    return make_app(SchedulerService(settings, clock=clock), settings)


# ``faststream run services.reminder_scheduler.app:app``
__getattr__ = module_app(create_app)
