"""How one SMTP connection is secured, for a setting and a host (DESIGN.md, Messages).

One rule for the notifier's SMTP pool (services/notifier/email.py), practice-admin's
mail (sign-in codes) and ``reminders check``; in common so no service imports another.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from services.common.settings import is_loopback_host

__all__ = ["SmtpSecurity", "TlsPlan", "tls_plan"]

SmtpSecurity = Literal["auto", "none", "starttls", "tls"]


@dataclass(frozen=True)
class TlsPlan:
    """How one SMTP connection is secured."""

    implicit_tls: bool  # TLS from the first byte (port 465)
    start_tls: bool | None  # True: required; None: when the server offers it; False: never
    verify: bool  # check the certificate chain and host name


def tls_plan(host: str, security: SmtpSecurity, *, loopback: bool | None = None) -> TlsPlan:
    """The security a setting means for a host.

    ``auto`` (the default): any host but a loopback relay must offer STARTTLS and pass the
    certificate check; a loopback relay gets STARTTLS when it offers it, unchecked, since
    the connection never leaves the machine (a local relay often has a self-signed
    certificate). ``loopback`` overrides what the host name says (tests).
    """
    if security == "tls":
        return TlsPlan(implicit_tls=True, start_tls=False, verify=True)
    if security == "starttls":
        return TlsPlan(implicit_tls=False, start_tls=True, verify=True)
    if security == "none":
        return TlsPlan(implicit_tls=False, start_tls=False, verify=False)
    local = is_loopback_host(host) if loopback is None else loopback
    if local:
        return TlsPlan(implicit_tls=False, start_tls=None, verify=False)
    return TlsPlan(implicit_tls=False, start_tls=True, verify=True)
