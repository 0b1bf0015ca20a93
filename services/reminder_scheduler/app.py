"""The scheduler as a FastStream app: ``reminders run scheduler``.

Also ``faststream run services.reminder_scheduler.app:create_app --factory``. The work
is done with aiokafka (transactions); the FastStream broker only carries the app's
lifecycle and the Prometheus middleware.
"""

from __future__ import annotations

from faststream import FastStream

from services.common.clock import Clock
from services.common.runtime import make_app
from services.common.settings import Settings
from services.reminder_scheduler.service import SchedulerService

__all__ = ["SchedulerService", "create_app"]


def create_app(settings: Settings | None = None, clock: Clock | None = None) -> FastStream:
    settings = settings or Settings()
    return make_app(SchedulerService(settings, clock), settings)
