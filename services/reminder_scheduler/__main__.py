"""``python -m services.reminder_scheduler``: the scheduler alone, settings from the environment.

The same as ``reminders run scheduler``; the fault tests start it this way and kill it.
"""

from __future__ import annotations

import asyncio

from services.common.logs import setup_logging
from services.common.settings import Settings
from services.reminder_scheduler.app import create_app


def main() -> None:
    settings = Settings()
    setup_logging(settings.log_level, settings.log_format)
    asyncio.run(create_app(settings).run())


if __name__ == "__main__":
    main()
