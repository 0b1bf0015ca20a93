"""practice-admin: staff accounts, memberships, login codes, sessions, audit, rate limits.

Revision ID: admin_0001
Revises: core_0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "admin_0001"
down_revision = "core_0001"
branch_labels = ("admin",)
depends_on = None

_TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "admin_users",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("email", sa.String(254), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_admin_users"),
        sa.UniqueConstraint("email", name="uq_admin_users_email"),
    )
    op.create_table(
        "admin_memberships",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("practice_id", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.PrimaryKeyConstraint("user_id", "practice_id", name="pk_admin_memberships"),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["admin_users.id"],
            ondelete="CASCADE",
            name="fk_admin_memberships_user_id_admin_users",
        ),
        sa.CheckConstraint("role in ('beheerder', 'medewerker')", name="ck_admin_memberships_role"),
    )
    op.create_table(
        "admin_login_codes",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("code_hash", sa.String(64), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("expires_at", _TS, nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("spent_at", _TS, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_admin_login_codes"),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["admin_users.id"],
            ondelete="CASCADE",
            name="fk_admin_login_codes_user_id_admin_users",
        ),
    )
    op.create_table(
        "admin_sessions",
        sa.Column("id_hash", sa.String(64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_at", _TS, nullable=False),
        sa.Column("last_seen_at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id_hash", name="pk_admin_sessions"),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["admin_users.id"],
            ondelete="CASCADE",
            name="fk_admin_sessions_user_id_admin_users",
        ),
    )
    op.create_table(
        "admin_audit",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("at", _TS, nullable=False),
        sa.Column("practice_id", sa.String(64), nullable=False),
        sa.Column("actor", sa.String(254), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("fields", sa.Text(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_admin_audit"),
    )
    op.create_index("ix_admin_audit_practice_id", "admin_audit", ["practice_id"])
    op.create_table(
        "admin_login_attempts",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False),
        sa.Column("at", _TS, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_admin_login_attempts"),
    )
    op.create_index(
        "ix_admin_login_attempts_scope_key_at",
        "admin_login_attempts",
        ["scope", "key_hash", "at"],
    )


def downgrade() -> None:
    op.drop_table("admin_login_attempts")
    op.drop_table("admin_audit")
    op.drop_table("admin_sessions")
    op.drop_table("admin_login_codes")
    op.drop_table("admin_memberships")
    op.drop_table("admin_users")
