"""Baseline: the shared database exists; packages add their tables as branches from here.

Revision ID: core_0001
Revises:
"""

from __future__ import annotations

revision = "core_0001"
down_revision = None
branch_labels = ("core",)
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
