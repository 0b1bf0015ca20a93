"""The message renderer for previews outside the notifier (practice-admin's teksten page).

A re-export, so that no service imports another: the renderer itself still lives in
``services/notifier/render.py`` (where :mod:`services.common.practice_config` already
takes ``check_templates`` from) until it moves to the pure ``services/domain`` package.
Then only the import below changes.
"""

from __future__ import annotations

from services.domain.render import (
    RenderedReminder,
    TemplateRejected,
    render_reminder,
    sample_appointment,
    urgent_line,
)

__all__ = [
    "RenderedReminder",
    "TemplateRejected",
    "render_reminder",
    "sample_appointment",
    "urgent_line",
]
