"""The fault suite's odd records (issue 12): each gets the verdict it is published with."""

from __future__ import annotations

from datetime import UTC, datetime

from services.booking_events.batch import check_config
from services.domain.codec import DecodeError
from services.domain.his_events import parse_event
from tests.support.garbage import odd_records

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def test_each_odd_record_is_refused_or_accepted_as_the_fault_suite_expects() -> None:
    records = odd_records(NOW)
    assert {r.verdict for r in records} == {"dlq", "processed"}
    for record in records:
        try:
            if record.topic_kind == "his.appointments.v1":
                parse_event(record.value, fhir=record.fhir, received_at=NOW)
            else:
                check_config(record.key.encode(), record.value)
        except DecodeError:
            verdict = "dlq"
        else:
            verdict = "processed"
        assert verdict == record.verdict, record.what
