"""Send failures, classified so the notifier knows whether to retry.

`reason` is a short snake_case code that ends up in an Outcome; `detail` is for
operators. Neither may contain personal data (no addresses, names, endpoints).
"""

from __future__ import annotations

__all__ = ["PermanentSendError", "SendError", "SubscriptionGone", "TransientSendError"]


class SendError(Exception):
    """A message could not be handed to the mail server or push service."""

    def __init__(self, reason: str, detail: str = "", *, retry_after: float | None = None) -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail
        # Seconds the remote side asked us to wait (HTTP Retry-After), if it said so.
        self.retry_after = retry_after

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}" if self.detail else self.reason


class TransientSendError(SendError):
    """Worth retrying later: the remote side is down, slow or asked us to back off."""


class PermanentSendError(SendError):
    """Retrying cannot help: the address, subscription or message is refused."""


class SubscriptionGone(PermanentSendError):
    """The push service says the subscription no longer exists (404/410)."""
