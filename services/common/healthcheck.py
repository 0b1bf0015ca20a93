"""The container's health check: ``python -m services.common.healthcheck``.

One image runs every service (deploy/Dockerfile). A Kafka service serves ``/readyz`` on
its metrics port (``REMINDERS_METRICS__PORT``, 9400); the web doors serve it on their own
HTTP port (``REMINDERS_ADMIN__PORT``, 8080, and ``REMINDERS_GATEWAY__PORT``, 8081). The
check asks ``/readyz`` on loopback on each of those ports in that order, and the first
port that answers decides: exit 0 for 200, 1 for any other answer or when none answers.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

from services.common.settings import AdminSettings, GatewaySettings, MetricsSettings

__all__ = ["main", "ports"]

_PORTS = (
    ("REMINDERS_METRICS__PORT", MetricsSettings),
    ("REMINDERS_ADMIN__PORT", AdminSettings),
    ("REMINDERS_GATEWAY__PORT", GatewaySettings),
)


def ports(environ: dict[str, str] | os._Environ[str] = os.environ) -> list[int]:
    """The ports to ask, in order; 0 (a free port picked at start) cannot be asked."""
    found: list[int] = []
    for variable, settings in _PORTS:
        default = settings.model_fields["port"].default
        try:
            port = int(environ.get(variable, default))
        except ValueError:
            continue
        if 0 < port < 65536 and port not in found:
            found.append(port)
    return found


def main(timeout: float = 2.0) -> int:
    for port in ports():
        url = f"http://127.0.0.1:{port}/readyz"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                return 0 if response.status == 200 else 1
        except urllib.error.HTTPError:
            return 1  # it answered: not ready
        except OSError:
            continue  # nothing listens here: this container runs another service
    return 1


if __name__ == "__main__":
    sys.exit(main())
