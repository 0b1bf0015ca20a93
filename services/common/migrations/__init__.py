"""Alembic migrations of the shared database (one branch per package)."""
