"""The firing-lateness histogram, counted a batch at a time, reads as a Prometheus one."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from services.reminder_scheduler.metrics import FIRING_LATENESS, BatchHistogram

BUCKETS = (0.01, 0.5, 1, 2, 86400)


def _lines(registry: CollectorRegistry) -> list[str]:
    text = generate_latest(registry).decode()
    return [line for line in text.splitlines() if "_created" not in line]


def test_a_batch_histogram_exposes_what_a_histogram_observing_each_would() -> None:
    batched, plain = CollectorRegistry(), CollectorRegistry()
    histogram = BatchHistogram("x_lateness_seconds", "Lateness.", BUCKETS, registry=batched)
    reference = Histogram("x_lateness_seconds", "Lateness.", buckets=BUCKETS, registry=plain)
    # on the bounds (le is inclusive), between them and past the last; sums exact in binary
    observed = [(0.0, 3), (0.5, 1), (0.25, 5000), (1.5, 2), (2.0, 1), (90000.0, 1)]
    histogram.observe_counts(observed)
    histogram.observe(0.75)
    for amount, count in [*observed, (0.75, 1)]:
        for _ in range(count):
            reference.observe(amount)
    assert _lines(batched) == _lines(plain)


def test_the_scheduler_lateness_keeps_its_name_and_buckets() -> None:
    (family,) = FIRING_LATENESS.collect()
    assert family.name == "reminders_scheduler_firing_lateness_seconds"
    assert [s.labels["le"] for s in family.samples if s.name.endswith("_bucket")] == [
        "0.01",
        "0.05",
        "0.1",
        "0.25",
        "0.5",
        "1.0",
        "2.0",
        "5.0",
        "10.0",
        "30.0",
        "60.0",
        "300.0",
        "900.0",
        "3600.0",
        "21600.0",
        "86400.0",
        "+Inf",
    ]
