"""The demo's HIS also sends final statuses, so the follow-up has something to show."""

from __future__ import annotations

from datetime import UTC, datetime

from devkit.demo.workload import generate


def test_final_statuses_follow_the_appointments_and_reminded_patients_stay_away_less() -> None:
    now = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
    workload = generate(now=now, practices=3, patients=60, appointments=300, seed=11)
    last = {}
    for event in workload.events:
        key = (event.practice_id, event.appointment_id)
        if key not in last or event.sequence > last[key].sequence:
            last[key] = event
    assert workload.final_events
    reminded: dict[str, list[bool]] = {"yes": [], "no": []}
    for final in workload.final_events:
        before = last[(final.practice_id, final.appointment_id)]
        assert final.sequence == before.sequence + 1 and final.start == before.start
        assert before.status == "booked"
        got = any(
            rid.startswith(f"{final.practice_id}/{final.appointment_id}/")
            for rid in workload.expected.deliveries
        )
        if final.status == "cancelled":
            assert got and final.occurred_at < final.start and final.booked_via == "portal"
        else:
            assert final.status in ("fulfilled", "noshow") and final.occurred_at > final.start
            reminded["yes" if got else "no"].append(final.status == "noshow")
    rate = {k: sum(v) / len(v) for k, v in reminded.items()}
    assert rate["yes"] < rate["no"]
