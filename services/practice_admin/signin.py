"""Sign-in by a one-time code sent by e-mail, server-side sessions, and the rate limits.

- A code is 6 digits, valid ``login_code_minutes``, single use; five wrong tries void it;
  a new code voids the previous one. Stored as an HMAC with the server key (six digits
  are too few for a plain hash to hide them).
- The answers never reveal whether an address has an account: the same page follows a
  request for any address, and a wrong code reads the same as an unknown address.
- Rate limits per address and per client IP, counted in the database (every instance
  sees them), on hashed keys.
- A session id is 32 random bytes in the cookie; the database holds its SHA-256, the
  user, a CSRF token and when it was last used (idle expiry). Logout deletes the row.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.practice_admin.accounts import find_user, memberships_of
from services.practice_admin.models import LoginAttempt, LoginCode, User, WebSession

__all__ = [
    "MAX_WRONG_TRIES",
    "CodeRequest",
    "RateLimits",
    "SignIn",
    "Signed",
]

MAX_WRONG_TRIES = 5


@dataclass(frozen=True)
class RateLimits:
    window: timedelta = timedelta(minutes=15)
    codes_per_address: int = 5
    steps_per_ip: int = 30
    verifications_per_address: int = 10


@dataclass(frozen=True)
class CodeRequest:
    """What a code request led to; ``code`` and ``email`` only when a mail must go out."""

    limited: bool
    email: str | None = None
    code: str | None = None


@dataclass(frozen=True)
class Signed:
    """A live session: who, their practices and roles, the CSRF token."""

    user_id: int
    email: str
    memberships: dict[str, str]
    csrf_token: str


def _sha256(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


class SignIn:
    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        secret: bytes,
        *,
        code_minutes: int = 10,
        idle_minutes: int = 30,
        limits: RateLimits = RateLimits(),
    ) -> None:
        self._db = sessions
        self._secret = secret
        self._code_ttl = timedelta(minutes=code_minutes)
        self._idle = timedelta(minutes=idle_minutes)
        self._limits = limits

    # ------------------------------------------------------------------ rate limits
    def _key(self, value: str) -> str:
        return hmac.new(self._secret, value.encode("utf-8"), hashlib.sha256).hexdigest()

    async def _over_limit(
        self, session: AsyncSession, scope: str, value: str, limit: int, now: datetime
    ) -> bool:
        """Records this attempt and says whether the scope is over its limit."""
        key = self._key(f"{scope}:{value}")
        since = now - self._limits.window
        await session.execute(delete(LoginAttempt).where(LoginAttempt.at < since))
        count = await session.scalar(
            select(func.count())
            .select_from(LoginAttempt)
            .where(
                LoginAttempt.scope == scope, LoginAttempt.key_hash == key, LoginAttempt.at >= since
            )
        )
        session.add(LoginAttempt(scope=scope, key_hash=key, at=now))
        return int(count or 0) >= limit

    # ------------------------------------------------------------------ codes
    def _code_hash(self, user_id: int, code: str) -> str:
        return hmac.new(self._secret, f"{user_id}:{code}".encode(), hashlib.sha256).hexdigest()

    async def request_code(self, email: str, ip: str, now: datetime) -> CodeRequest:
        address = email.strip().lower()
        async with self._db.begin() as session:
            by_ip = await self._over_limit(session, "ip", ip, self._limits.steps_per_ip, now)
            by_address = await self._over_limit(
                session, "address", address, self._limits.codes_per_address, now
            )
            if by_ip or by_address:
                return CodeRequest(limited=True)
            user = await find_user(session, address)
            if user is None or not await memberships_of(session, user.id):
                return CodeRequest(limited=False)
            await session.execute(
                update(LoginCode)
                .where(LoginCode.user_id == user.id, LoginCode.spent_at.is_(None))
                .values(spent_at=now)
            )
            code = f"{secrets.randbelow(1_000_000):06d}"
            session.add(
                LoginCode(
                    user_id=user.id,
                    code_hash=self._code_hash(user.id, code),
                    created_at=now,
                    expires_at=now + self._code_ttl,
                    attempts=0,
                )
            )
            return CodeRequest(limited=False, email=user.email, code=code)

    async def verify_code(self, email: str, code: str, ip: str, now: datetime) -> int | None:
        """The user id if ``code`` is the address's live code; None (and a try used) if not."""
        address = email.strip().lower()
        code = code.strip().replace(" ", "")
        async with self._db.begin() as session:
            by_ip = await self._over_limit(session, "ip", ip, self._limits.steps_per_ip, now)
            by_address = await self._over_limit(
                session, "verify", address, self._limits.verifications_per_address, now
            )
            if by_ip or by_address:
                return None
            user = await find_user(session, address)
            if user is None:
                return None
            live = await session.scalar(
                select(LoginCode)
                .where(
                    LoginCode.user_id == user.id,
                    LoginCode.spent_at.is_(None),
                    LoginCode.expires_at > now,
                )
                .order_by(LoginCode.id.desc())
                .limit(1)
            )
            if live is None:
                return None
            expected = live.code_hash
            valid_shape = len(code) == 6 and code.isdigit()
            given = self._code_hash(user.id, code) if valid_shape else ""
            if hmac.compare_digest(expected, given):
                live.spent_at = now
                return user.id
            live.attempts += 1
            if live.attempts >= MAX_WRONG_TRIES:
                live.spent_at = now
            return None

    # ------------------------------------------------------------------ sessions
    async def start_session(self, user_id: int, now: datetime) -> str:
        token = secrets.token_urlsafe(32)
        async with self._db.begin() as session:
            session.add(
                WebSession(
                    id_hash=_sha256(token),
                    user_id=user_id,
                    csrf_token=secrets.token_urlsafe(32),
                    created_at=now,
                    last_seen_at=now,
                )
            )
        return token

    async def session_for(self, token: str | None, now: datetime) -> Signed | None:
        if not token or len(token) > 200:
            return None
        async with self._db.begin() as session:
            row = await session.get(WebSession, _sha256(token))
            if row is None:
                return None
            if now - row.last_seen_at > self._idle:
                await session.delete(row)
                return None
            user = await session.get(User, row.user_id)
            if user is None:
                return None
            memberships = await memberships_of(session, user.id)
            row.last_seen_at = now
            return Signed(
                user_id=user.id,
                email=user.email,
                memberships=memberships,
                csrf_token=row.csrf_token,
            )

    async def end_session(self, token: str | None) -> None:
        if not token:
            return
        async with self._db.begin() as session:
            await session.execute(delete(WebSession).where(WebSession.id_hash == _sha256(token)))

    async def sweep(self, now: datetime) -> None:
        """Deletes idle sessions and old codes (called now and then)."""
        async with self._db.begin() as session:
            await session.execute(
                delete(WebSession).where(WebSession.last_seen_at < now - self._idle)
            )
            await session.execute(
                delete(LoginCode).where(LoginCode.expires_at < now - timedelta(days=1))
            )
