"""Staff accounts and their practices: ``reminders admin user add|list|remove`` and sign-in."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from services.practice_admin.models import ROLES, Membership, User

__all__ = [
    "AccountError",
    "AccountRow",
    "add_user",
    "find_user",
    "list_users",
    "memberships_of",
    "normalize_email",
    "remove_user",
]

_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s.]+(\.[^@\s.]+)+$")
_PRACTICE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")


class AccountError(ValueError):
    pass


@dataclass(frozen=True)
class AccountRow:
    email: str
    practice_id: str
    role: str


def normalize_email(email: str) -> str:
    """Lower-cased and stripped; AccountError if it is not an e-mail address."""
    value = email.strip().lower()
    if len(value) > 254 or not _EMAIL.match(value):
        raise AccountError("not an e-mail address")
    return value


async def find_user(session: AsyncSession, email: str) -> User | None:
    try:
        value = normalize_email(email)
    except AccountError:
        return None
    result = await session.execute(select(User).where(User.email == value))
    return result.scalar_one_or_none()


async def add_user(
    session: AsyncSession, email: str, practice_id: str, role: str, now: datetime
) -> bool:
    """Adds the membership (and the user if new); an existing membership gets ``role``.

    Returns True when something changed.
    """
    if role not in ROLES:
        raise AccountError(f"role must be one of {', '.join(ROLES)}")
    practice_id = practice_id.strip()
    if not _PRACTICE.match(practice_id):
        raise AccountError("practice id must be 1-64 letters, digits, '.', '_', ':' or '-'")
    address = normalize_email(email)
    user = await find_user(session, address)
    if user is None:
        user = User(email=address, created_at=now)
        session.add(user)
        await session.flush()
    membership = await session.get(Membership, (user.id, practice_id))
    if membership is None:
        session.add(Membership(user_id=user.id, practice_id=practice_id, role=role))
        return True
    if membership.role != role:
        membership.role = role
        return True
    return False


async def list_users(session: AsyncSession, practice_id: str | None = None) -> list[AccountRow]:
    query = select(User.email, Membership.practice_id, Membership.role).join(
        Membership, Membership.user_id == User.id
    )
    if practice_id is not None:
        query = query.where(Membership.practice_id == practice_id)
    rows = await session.execute(query.order_by(Membership.practice_id, User.email))
    return [AccountRow(email=e, practice_id=p, role=r) for e, p, r in rows.all()]


async def remove_user(session: AsyncSession, email: str, practice_id: str | None = None) -> int:
    """Removes the membership (or all of them); a user without practices is deleted.

    Returns the number of memberships removed. Their sessions end with the user.
    """
    user = await find_user(session, email)
    if user is None:
        return 0
    query = delete(Membership).where(Membership.user_id == user.id)
    if practice_id is not None:
        query = query.where(Membership.practice_id == practice_id)
    result = await session.execute(query)
    removed = getattr(result, "rowcount", 0) or 0
    left = await memberships_of(session, user.id)
    if not left:
        await session.delete(user)
    return int(removed)


async def memberships_of(session: AsyncSession, user_id: int) -> dict[str, str]:
    rows = await session.execute(
        select(Membership.practice_id, Membership.role).where(Membership.user_id == user_id)
    )
    return {p: r for p, r in rows.all()}
