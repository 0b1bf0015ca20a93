"""The follow-up projection (insights) and its read side, shared by insights,
``reminders report`` and practice-admin's ``follow-up`` and ``verzendlog`` pages."""

from services.common.followup._calendar import (
    LEAD_BUCKETS,
    ZONE,
    as_utc,
    iso_week,
    lead_bucket,
    lead_days,
    start_of_reminder,
    week_monday,
    weeks_back,
)
from services.common.followup._charts import CHARTS, chart_svg, report_charts
from services.common.followup._figures import (
    CANCEL_BUCKETS,
    CAUTION,
    AppointmentFact,
    Figure,
    OutcomeCount,
    Report,
    build_report,
    figures_from_facts,
)
from services.common.followup._render import CSV_COLUMNS, report_csv, report_text
from services.common.followup._sendlog import (
    DecidedCount,
    SendLogEntry,
    UpcomingAppointment,
    count_outcomes,
    decided_since,
    recent_outcomes,
    upcoming_appointments,
)
from services.common.followup._tables import (
    FollowupAppointment,
    FollowupOutcome,
    FollowupPosition,
    FollowupReminded,
)

__all__ = [
    "CANCEL_BUCKETS",
    "CAUTION",
    "CHARTS",
    "CSV_COLUMNS",
    "LEAD_BUCKETS",
    "ZONE",
    "AppointmentFact",
    "DecidedCount",
    "Figure",
    "FollowupAppointment",
    "FollowupOutcome",
    "FollowupPosition",
    "FollowupReminded",
    "OutcomeCount",
    "Report",
    "SendLogEntry",
    "UpcomingAppointment",
    "as_utc",
    "build_report",
    "chart_svg",
    "count_outcomes",
    "decided_since",
    "figures_from_facts",
    "iso_week",
    "lead_bucket",
    "lead_days",
    "recent_outcomes",
    "report_charts",
    "report_csv",
    "report_text",
    "start_of_reminder",
    "upcoming_appointments",
    "week_monday",
    "weeks_back",
]
