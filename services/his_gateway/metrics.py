"""his-gateway metrics, on the default Prometheus registry.

Labels are bounded by the code: the endpoint (a route template, never a concrete path),
the HTTP status, the result and the DLQ's reason codes. No practice id, client id or
appointment id is ever a label.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

__all__ = ["ACCEPTED", "EVENTS", "PUBLISH_SECONDS", "REFUSALS", "REQUESTS", "TOKENS"]

REQUESTS = Counter(
    "reminders_gateway_requests_total",
    "HTTP requests to his-gateway by route and status code",
    ["endpoint", "status"],
)
EVENTS = Counter(
    "reminders_gateway_events_total",
    "HIS events received: accepted (on the topic), invalid, forbidden, failed (not confirmed)",
    ["result"],
)
ACCEPTED = EVENTS.labels(result="accepted")  # bound once: the hot path
REFUSALS = Counter(
    "reminders_gateway_refusals_total",
    "Problems found in refused events, by the DLQ's reason code",
    ["reason"],
)
TOKENS = Counter(
    "reminders_gateway_token_requests_total",
    "POST /oauth/token by result: issued, invalid_client, invalid_request, "
    "unsupported_grant_type, invalid_scope, rate_limited",
    ["result"],
)
PUBLISH_SECONDS = Histogram(
    "reminders_gateway_publish_seconds",
    "Time for the broker to confirm an event (acks=all)",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0),
)
