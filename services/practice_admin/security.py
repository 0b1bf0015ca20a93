"""Security headers in one place, CSRF checks, and the session cookie's flags.

- Every page: a Content-Security-Policy that allows nothing from other hosts (and no
  inline script or style), no framing (``frame-ancestors 'none'``, ``X-Frame-Options:
  DENY``), no sniffing, no referrer, no caching of pages.
- The preview of an e-mail is the one page that may be framed, by this site only, and it
  is shown in a sandboxed iframe (no scripts, unique origin); its policy allows the
  inline styles a mail has, and images only as ``data:``.
- CSRF: every state-changing form carries a token. Signed in, it is the session's token
  (kept on the server); before sign-in, a random cookie that the form repeats
  (double submit). Compared in constant time.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from fastapi import HTTPException, Request, Response
from starlette.datastructures import FormData

__all__ = [
    "CSRF_COOKIE",
    "CSRF_FIELD",
    "PAGE_CSP",
    "PREVIEW_CSP",
    "SESSION_COOKIE",
    "check_csrf",
    "cookie_secure",
    "security_headers",
]

SESSION_COOKIE = "pa_session"
CSRF_COOKIE = "pa_csrf"
CSRF_FIELD = "csrf_token"

PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'none'; connect-src 'self'; form-action 'self'; frame-src 'self'; "
    "frame-ancestors 'none'; base-uri 'none'; object-src 'none'"
)
PREVIEW_CSP = (
    "default-src 'none'; style-src 'self' 'unsafe-inline'; img-src data:; "
    "form-action 'none'; frame-src 'self'; frame-ancestors 'self'; base-uri 'none'; "
    "object-src 'none'; sandbox"
)

_COMMON = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=()",
}


def cookie_secure(public_url: str) -> bool:
    """Secure cookies unless the site is served over http on a loopback address."""
    parts = urlsplit(public_url)
    if parts.scheme == "https":
        return True
    host = parts.hostname or ""
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True


async def security_headers(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    response = await call_next(request)
    for name, value in _COMMON.items():
        response.headers.setdefault(name, value)
    if "content-security-policy" not in response.headers:
        response.headers["Content-Security-Policy"] = PAGE_CSP
        response.headers["X-Frame-Options"] = "DENY"
    if not request.url.path.startswith("/static/"):
        response.headers.setdefault("Cache-Control", "no-store")
    if request.url.scheme == "https":
        response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
    return response


def new_csrf_cookie_value() -> str:
    return secrets.token_urlsafe(32)


def check_csrf(form: FormData, expected: str | None) -> None:
    """403 unless the form's token equals ``expected`` (the session's or the cookie's)."""
    given = form.get(CSRF_FIELD)
    if (
        not expected
        or not isinstance(given, str)
        or not hmac.compare_digest(given.encode(), expected.encode())
    ):
        raise HTTPException(status_code=403, detail="csrf")
