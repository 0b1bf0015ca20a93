"""The gateway's table: its API clients (one per HIS vendor installation)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, DateTime, String
from sqlalchemy.orm import Mapped, mapped_column

from services.common.db import Base

__all__ = ["GatewayClient"]


class GatewayClient(Base):
    """A client of ``POST /oauth/token``. The secret is stored only as an argon2 hash."""

    __tablename__ = "gateway_clients"

    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    secret_hash: Mapped[str] = mapped_column(String(255))
    # AGB codes of the practices this client may write for.
    practices: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
