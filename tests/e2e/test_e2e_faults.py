"""The fault suite at CI size: the real services as processes, a broker of its own.

After each scenario: nothing lost, nothing twice (except what a killed notifier had sent
but not committed, counted apart), the scheduler never emits a duplicate, no message for
a meeting, an opted-out patient or a switched-off practice (they are not in the expected
set, so any such message counts as unexpected), every bad record in a DLQ, no service
crashed on bad input, and no personal data in the logs. ``bench/faults.py`` runs the
same scenarios at full size.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from devkit.faults import SCENARIOS, run_scenario
from devkit.local_kafka import LocalKafka

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    """A broker this module may kill and restart without disturbing other tests."""
    broker = LocalKafka(tmp_path_factory.mktemp("fault-kafka"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def test_the_local_broker_names_its_process(own_broker: LocalKafka) -> None:
    """The benchmarks read the broker's CPU from the process LocalKafka names."""
    pid = own_broker.pid
    assert pid is not None
    assert b"kafka.Kafka" in Path(f"/proc/{pid}/cmdline").read_bytes()


@pytest.mark.parametrize("scenario", list(SCENARIOS))
async def test_fault_scenario(scenario: str, own_broker: LocalKafka, tmp_path: Path) -> None:
    assert own_broker.bootstrap is not None
    report = await run_scenario(
        scenario,
        bootstrap=own_broker.bootstrap,
        broker=own_broker,
        out_dir=tmp_path,
        practices=3,
        patients=25,
        appointments=30,
        lead=(10.0, 25.0),
        timeout=150.0,
    )
    print(report.line())
    for note in report.notes:
        print("   ", note)
    assert report.expected > 0
    assert report.lost == 0, report.line() + " " + "; ".join(report.notes)
    assert report.unexpected == 0, report.line()
    assert report.scheduler_duplicates == 0, report.line()
    assert report.duplicates == report.duplicates_in_crash_window, report.line()
    assert report.missing_outcomes == 0, report.line()
    assert report.dlq >= report.dlq_expected, report.line()
    assert not report.crashes, report.crashes
    assert report.services_stopped == 0, report.line() + " " + "; ".join(report.notes)
    assert report.odd_unprocessed == 0, report.line() + " " + "; ".join(report.notes)
    assert not report.leaks, report.leaks
