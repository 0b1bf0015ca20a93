"""How one SMTP connection is secured, for a setting and a host (DESIGN.md, Messages).

The same rule as the notifier's ``tls_plan`` (services/notifier/email.py), here in
common so practice-admin's mail (sign-in codes) follows it without importing the
notifier; the notifier's copy should become an import of this one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from services.common.settings import is_loopback_host

__all__ = ["SmtpSecurity", "TlsPlan", "tls_plan"]

SmtpSecurity = Literal["auto", "none", "starttls", "tls"]


@dataclass(frozen=True)
class TlsPlan:
    implicit_tls: bool  # TLS from the first byte (port 465)
    start_tls: bool | None  # True: required; None: when the server offers it; False: never
    verify: bool  # check the certificate chain and host name


def tls_plan(host: str, security: SmtpSecurity) -> TlsPlan:
    """``auto``: STARTTLS with a checked certificate for any host but a loopback relay,
    which gets STARTTLS when it offers it, unchecked (the hop never leaves the machine)."""
    if security == "tls":
        return TlsPlan(implicit_tls=True, start_tls=False, verify=True)
    if security == "starttls":
        return TlsPlan(implicit_tls=False, start_tls=True, verify=True)
    if security == "none":
        return TlsPlan(implicit_tls=False, start_tls=False, verify=False)
    if is_loopback_host(host):
        return TlsPlan(implicit_tls=False, start_tls=None, verify=False)
    return TlsPlan(implicit_tls=False, start_tls=True, verify=True)
