"""Which event loop each service runs on (``reminders run`` reads the app's loop_factory)."""

from __future__ import annotations

import asyncio

import uvloop

from services.common.loops import preferred_loop
from services.common.settings import Settings


def test_the_preferred_loop_is_uvloop_where_it_is_installed() -> None:
    factory = preferred_loop()
    assert factory is uvloop.new_event_loop
    loop = factory()
    try:
        assert isinstance(loop, uvloop.Loop)
        assert loop.run_until_complete(asyncio.sleep(0, "ran")) == "ran"
    finally:
        loop.close()


def test_the_notifier_and_the_gateway_name_uvloop_the_others_asyncio() -> None:
    from services.booking_events.app import create_app as booking_app
    from services.his_gateway.app import create_app as gateway_app
    from services.notifier.app import create_app as notifier_app
    from services.reminder_scheduler.app import create_app as scheduler_app

    settings = Settings()
    assert notifier_app(settings).loop_factory is uvloop.new_event_loop
    assert gateway_app(settings).loop_factory is uvloop.new_event_loop
    # uvloop showed no gain in the scheduler's burst beyond the noise; booking_events untried
    assert getattr(scheduler_app(settings), "loop_factory", None) is None
    assert getattr(booking_app(settings), "loop_factory", None) is None
