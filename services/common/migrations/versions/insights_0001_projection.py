"""insights: the follow-up projection (appointments' last state, outcomes, positions).

Revision ID: insights_0001
Revises: core_0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "insights_0001"
down_revision = "core_0001"
branch_labels = ("insights",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "insights_appointments",
        sa.Column("practice_id", sa.String(64), nullable=False),
        sa.Column("appointment_id", sa.String(64), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("week", sa.String(8), nullable=False),
        sa.Column("booked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lead_days", sa.Integer(), nullable=False),
        sa.Column("type_code", sa.String(64), nullable=False),
        sa.Column("type_display", sa.String(200), nullable=False),
        sa.Column("patient_id", sa.String(64), nullable=False),
        sa.Column("is_meeting", sa.Boolean(), nullable=False),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancelled_via", sa.String(16), nullable=True),
        sa.Column("cancelled_before_s", sa.Integer(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(
            "practice_id", "appointment_id", name=op.f("pk_insights_appointments")
        ),
    )
    # Covering the report's reads (services/common/followup/_tables.py says why).
    op.create_index(
        "ix_insights_appointments_report",
        "insights_appointments",
        [
            "practice_id",
            "week",
            "status",
            "type_code",
            "lead_days",
            "is_meeting",
            "cancelled_before_s",
            "cancelled_via",
            "cancelled_at",
            "appointment_id",
        ],
    )
    op.create_table(
        "insights_outcomes",
        sa.Column("reminder_id", sa.String(200), nullable=False),
        sa.Column("practice_id", sa.String(64), nullable=False),
        sa.Column("appointment_id", sa.String(64), nullable=False),
        sa.Column("start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("week", sa.String(8), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("channel", sa.String(16), nullable=True),
        sa.Column("reason", sa.String(64), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("reminder_id", name=op.f("pk_insights_outcomes")),
    )
    op.create_index(
        "ix_insights_outcomes_report",
        "insights_outcomes",
        ["practice_id", "start", "week", "status", "channel", "reason"],
    )
    op.create_table(
        "insights_reminded",
        sa.Column("practice_id", sa.String(64), nullable=False),
        sa.Column("appointment_id", sa.String(64), nullable=False),
        sa.Column("first_sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("practice_id", "appointment_id", name=op.f("pk_insights_reminded")),
    )
    op.create_table(
        "insights_positions",
        sa.Column("topic", sa.String(255), nullable=False),
        sa.Column("partition", sa.Integer(), nullable=False),
        sa.Column("next_offset", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("topic", "partition", name=op.f("pk_insights_positions")),
    )


def downgrade() -> None:
    op.drop_table("insights_positions")
    op.drop_table("insights_reminded")
    op.drop_index("ix_insights_outcomes_report", table_name="insights_outcomes")
    op.drop_table("insights_outcomes")
    op.drop_index("ix_insights_appointments_report", table_name="insights_appointments")
    op.drop_table("insights_appointments")
