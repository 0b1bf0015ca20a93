"""Access tokens: short-lived JWTs (HS256, joserfc) naming the client.

A token carries the client id (``sub``), issuer, audience, issue time, expiry and an id;
not the practices: those are read from the client's current record on every request, so
a change or a revocation applies at once (within the client cache's few seconds).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from joserfc import jwt
from joserfc.errors import ExpiredTokenError, JoseError
from joserfc.jwk import OctKey

__all__ = ["AccessToken", "InvalidToken", "TokenIssuer"]

ISSUER: Final = "urn:e-afspraken:his-gateway"
AUDIENCE: Final = "urn:e-afspraken:his-gateway:fhir"
_ALGORITHMS: Final = ["HS256"]
_LEEWAY: Final = 5  # seconds of clock skew tolerated on exp
_MAX_VERIFIED: Final = 10_000


class InvalidToken(Exception):
    """Why a bearer token is refused, in words for ``WWW-Authenticate``'s description."""


@dataclass(frozen=True)
class AccessToken:
    value: str
    client_id: str
    expires_in: int


class TokenIssuer:
    def __init__(self, secret: str, *, ttl_seconds: int, now: Callable[[], float]) -> None:
        if len(secret.encode("utf-8")) < 32:
            raise ValueError("the token secret must be at least 32 bytes")
        self._key = OctKey.import_key(secret)
        self._ttl = ttl_seconds
        self._now = now
        # Tokens already verified: value -> (client id, exp). A token cannot change, so
        # only its expiry needs checking again; revocation is the client cache's job.
        self._verified: dict[str, tuple[str, int]] = {}

    def issue(self, client_id: str) -> AccessToken:
        issued = int(self._now())
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": client_id,
            "iat": issued,
            "exp": issued + self._ttl,
            "jti": secrets.token_urlsafe(12),
        }
        value = jwt.encode({"alg": "HS256"}, claims, self._key, algorithms=_ALGORITHMS)
        return AccessToken(value, client_id, self._ttl)

    def verify(self, value: str) -> str:
        """The client id of a valid token; :class:`InvalidToken` otherwise."""
        known = self._verified.get(value)
        if known is not None:
            if known[1] > self._now() - _LEEWAY:
                return known[0]
            del self._verified[value]
            raise InvalidToken("the access token has expired")
        client_id, expires = self._verify(value)
        if len(self._verified) >= _MAX_VERIFIED:
            self._verified.clear()
        self._verified[value] = (client_id, expires)
        return client_id

    def _verify(self, value: str) -> tuple[str, int]:
        try:
            token = jwt.decode(value, self._key, algorithms=_ALGORITHMS)
            registry = jwt.JWTClaimsRegistry(
                now=int(self._now()),
                leeway=_LEEWAY,
                iss={"essential": True, "value": ISSUER},
                aud={"essential": True, "value": AUDIENCE},
                sub={"essential": True},
                exp={"essential": True},
            )
            registry.validate(token.claims)
        except ExpiredTokenError:
            raise InvalidToken("the access token has expired") from None
        except (JoseError, ValueError, TypeError):
            raise InvalidToken("the access token is not valid") from None
        subject, expires = token.claims["sub"], token.claims["exp"]
        if not isinstance(subject, str) or not isinstance(expires, int):
            raise InvalidToken("the access token is not valid")
        return subject, expires
