"""The follow-up projection on SQLite and PostgreSQL: its writes (idempotent, replayable,
tombstone-proof) and its figures against an independent count of the same workload."""

from __future__ import annotations

import random
import re
from datetime import UTC, date, datetime

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from devkit.insights_samples import FollowupWorkload, Record, generate
from schemas.models import Appointment, Outcome
from services.common.followup import (
    ZONE,
    FollowupAppointment,
    FollowupOutcome,
    FollowupPosition,
    Report,
    build_report,
    recent_outcomes,
    report_charts,
    report_csv,
    report_text,
)
from services.insights.projection import (
    appointment_row,
    dedupe_appointments,
    dedupe_outcomes,
    outcome_row,
)
from services.insights.store import load_positions, write_batch
from tests.support.insights_oracle import Figures, last_weeks, oracle

pytestmark = pytest.mark.db

NOW = datetime(2026, 12, 1, 11, 0, tzinfo=UTC)
TOPIC_A, TOPIC_O = "appointments.v1", "notifications.outcomes.v1"


def as_figures(report: Report) -> Figures:
    return {(f.week, f.measure, f.key): (f.count, f.base) for f in report.figures}


async def project(engine: AsyncEngine, records: list[Record], offsets: list[int]) -> None:
    """Write the records in one transaction, positions as a consumer would store them."""
    appointments = [
        appointment_row(r.value) for r in records if r.kind == "appointment" and r.value
    ]
    outcomes = [outcome_row(r.value) for r in records if r.kind == "outcome" and r.value]
    positions = {(TOPIC_A, 0): offsets[0], (TOPIC_O, 0): offsets[1]}
    async with engine.begin() as conn:
        await write_batch(
            conn,
            appointments=dedupe_appointments(appointments),
            outcomes=dedupe_outcomes(outcomes),
            positions=positions,
        )


async def project_with_replays(engine: AsyncEngine, workload: FollowupWorkload) -> None:
    """In batches of random size; now and then a batch already written is written again
    (what a restart after a kill -9 does), and positions are never allowed back."""
    rng = random.Random(5)
    records = workload.records
    i = 0
    done: list[tuple[int, int]] = []
    while i < len(records):
        j = min(len(records), i + rng.randint(1, 60))
        await project(engine, records[i:j], [j, j])
        done.append((i, j))
        if rng.random() < 0.2:
            a, b = rng.choice(done)
            await project(engine, records[a:b], [b, b])
        i = j


def test_samples_are_valid_contract_records() -> None:
    workload = generate(now=NOW, practices=1, appointments=40)
    kinds = {"appointment": Appointment, "outcome": Outcome}
    for record in workload.records:
        if record.value is not None:
            kinds[record.kind].model_validate_json(record.value)


async def test_figures_equal_an_independent_count_of_the_workload(
    db_engine: AsyncEngine,
) -> None:
    workload = generate(now=NOW, practices=3, appointments=400)
    await project_with_replays(db_engine, workload)
    weeks = last_weeks(NOW, 12)
    for practice in ("01880000", "01880001", "01880002"):
        async with db_engine.connect() as conn:
            report = await build_report(conn, practice, until=NOW, weeks=12)
        assert report.weeks == weeks
        assert as_figures(report) == oracle(workload, practice, weeks)
    # The figures are there, not trivially empty.
    figures = as_figures(report)
    assert sum(v[0] for k, v in figures.items() if k[1] == "appointments") > 300
    assert any(k[1] == "cancelled_after_reminder" for k in figures)
    assert any(k[1] == "noshow_reminded" and v[0] for k, v in figures.items())


async def test_replays_count_nothing_twice_and_tombstones_keep_the_final_state(
    db_engine: AsyncEngine,
) -> None:
    workload = generate(now=NOW, practices=1, appointments=120)
    await project_with_replays(db_engine, workload)
    await project(db_engine, workload.records, [1, 1])  # everything again, positions behind
    async with db_engine.connect() as conn:
        outcomes = await conn.scalar(select(func.count()).select_from(FollowupOutcome))
        rows = (await conn.execute(select(FollowupAppointment.__table__))).all()
        positions = await load_positions(conn, [TOPIC_A, TOPIC_O])
        assert await conn.scalar(select(func.count()).select_from(FollowupPosition)) == 2
    assert outcomes == len(workload.outcomes)
    assert len(rows) == len(workload.appointments)
    for row in rows:
        truth = workload.appointments[(row.practice_id, row.appointment_id)]
        assert row.status == truth.status  # not the stale first state, not deleted
    n = len(workload.records)
    assert positions == {(TOPIC_A, 0): n, (TOPIC_O, 0): n}  # never moved back


async def test_report_text_and_csv_carry_the_same_numbers(db_engine: AsyncEngine) -> None:
    workload = generate(now=NOW, practices=1, appointments=150)
    await project_with_replays(db_engine, workload)
    async with db_engine.connect() as conn:
        report = await build_report(conn, "01880000", until=NOW, weeks=4)
    csv_text = report_csv(report)
    text = report_text(report)
    lines = csv_text.strip().splitlines()
    assert lines[0] == "practice_id,week,measure,key,count,base,rate"
    assert len(lines) == len(report.figures) + 1
    assert "not a trial" in text
    for f in report.figures:
        if f.measure != "appointments":
            value = str(f.count) if f.base is None else f"{f.count}/{f.base}"
            assert f"{f.week}  {f.measure}" in text and value in text


async def test_send_log_lists_outcomes_with_type_and_pseudonymous_patient(
    db_engine: AsyncEngine,
) -> None:
    workload = generate(now=NOW, practices=1, appointments=80)
    await project_with_replays(db_engine, workload)
    async with db_engine.connect() as conn:
        everything = await recent_outcomes(conn, "01880000", day=None, status=None, limit=1000)
        assert len(everything) == len(workload.outcomes)
        assert [e.appointment_start for e in everything] == sorted(
            (e.appointment_start for e in everything), reverse=True
        )
        newest = everything[0]
        truth = workload.outcomes[newest.reminder_id]
        assert (newest.status, newest.channel, newest.reason) == (
            truth.status,
            truth.channel,
            truth.reason,
        )
        assert newest.patient_id and newest.patient_id.startswith("pt-")
        assert newest.type_code in ("C10", "C20", "OOR")
        day: date = newest.appointment_start.astimezone(ZONE).date()
        failed = await recent_outcomes(conn, "01880000", day=None, status="failed", limit=5)
        assert failed and all(e.status == "failed" for e in failed)
        of_day = await recent_outcomes(conn, "01880000", day=day, status=None, limit=1000)
        assert newest.reminder_id in {e.reminder_id for e in of_day}
        assert await recent_outcomes(conn, "09999999", day=None, status=None, limit=10) == []


async def test_charts_are_svg_that_load_and_run_nothing(db_engine: AsyncEngine) -> None:
    workload = generate(now=NOW, practices=1, appointments=150)
    await project_with_replays(db_engine, workload)
    async with db_engine.connect() as conn:
        report = await build_report(conn, "01880000", until=NOW, weeks=4)
    charts = report_charts(report)
    assert set(charts) == {"bereik", "no-show", "verstuurd"}
    for svg in charts.values():
        assert svg.lstrip().startswith("<svg") and svg.rstrip().endswith("</svg>")
        assert "<script" not in svg
        assert not re.search(r"(?:href|src)=\"(?:https?:)?//", svg)
    reach = report.value(report.weeks[0], "reach")
    assert reach is not None and reach.base
    assert f"{100 * reach.count / reach.base:.1f}".rstrip("0").rstrip(".") in charts["bereik"]


def _extreme(**changes: object) -> bytes:
    """An appointments.v1 record at the edges of what the services accept."""
    import json

    base = json.loads(generate(now=NOW, practices=1, appointments=1).records[0].value or b"")
    base.update(changes)
    return json.dumps(base).encode()


async def test_a_record_the_services_accepted_never_stops_the_projection(
    db_engine: AsyncEngine,
) -> None:
    """Records already on appointments.v1 at the edges of what was accepted (a
    cancellation 98 years ahead, a type code with control characters, written before the
    edge refused them): stored with the database's limits kept, so one record cannot
    fail every later write (a failed write is retried from the stored positions)."""
    far = _extreme(
        appointment_id="A-FAR",
        status="cancelled",
        start="2099-12-30T10:00:00+00:00",
        end="2099-12-30T10:10:00+00:00",
        booked_at="2000-01-02T09:00:00+00:00",
        updated_at="2000-01-03T09:00:00+00:00",
        appointment_type={"code": "C\u0000\u000a\u202e1", "display": "Consult\u0000"},
    )
    early = _extreme(
        appointment_id="A-EARLY",
        status="cancelled",
        start="2000-01-03T10:00:00+00:00",
        end="2000-01-03T10:10:00+00:00",
        booked_at="2000-01-01T00:00:00+00:00",
        updated_at="2099-12-31T23:00:00+00:00",
    )
    rows = [appointment_row(far), appointment_row(early)]
    async with db_engine.begin() as conn:
        await write_batch(conn, appointments=rows, outcomes=[], positions={(TOPIC_A, 0): 2})
    async with db_engine.connect() as conn:
        stored = {
            r.appointment_id: r
            for r in (await conn.execute(select(FollowupAppointment.__table__))).all()
        }
        assert await load_positions(conn, [TOPIC_A]) == {(TOPIC_A, 0): 2}
    assert stored["A-FAR"].cancelled_before_s == 2**31 - 1  # at least 68 years ahead
    assert stored["A-EARLY"].cancelled_before_s == -(2**31)
    assert "\x00" not in stored["A-FAR"].type_code + stored["A-FAR"].type_display
    assert stored["A-FAR"].type_code == "C\ufffd\ufffd\ufffd1"


async def test_a_row_the_database_refuses_is_left_out_and_the_rest_goes_on(
    db_engine: AsyncEngine, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Beyond the limits the projection knows: a row the database refuses (here a
    sequence past 64 bits) would fail its batch at every retry, for every practice. The
    batch is written again row by row: the refused row is left out and counted, the
    other rows and the positions commit. An outage is not mistaken for a bad row."""
    import time

    from services.common.settings import Settings
    from services.insights.app import InsightsService, _Prepared
    from services.insights.metrics import BAD_RECORDS

    workload = generate(now=NOW, practices=1, appointments=6)
    records = workload.records
    appointments = dedupe_appointments(
        appointment_row(r.value) for r in records if r.kind == "appointment" and r.value
    )
    outcomes = dedupe_outcomes(
        outcome_row(r.value) for r in records if r.kind == "outcome" and r.value
    )
    bad = dict(appointments[0], appointment_id="A-BAD", sequence=2**70)
    settings = Settings(database={"url": db_url})  # type: ignore[arg-type]
    service = InsightsService(settings, engine=db_engine)
    counted = BAD_RECORDS.labels(service.topics.appointments, "unstorable")
    before = counted._value.get()

    def batch(positions: dict[tuple[str, int], int]) -> _Prepared:
        return _Prepared(
            appointments=[*appointments[:2], bad, *appointments[2:]],
            outcomes=outcomes,
            positions=positions,
            records=len(records),
            fetched_at=time.monotonic(),
            started=time.perf_counter(),
        )

    # A database that is away: nothing is skipped, nothing written, the error goes up.
    async def away(*_: object, **__: object) -> None:
        raise ConnectionResetError("the database went away")

    monkeypatch.setattr("services.insights.app.write_batch", away)
    with pytest.raises(ConnectionResetError):
        await service._write(batch({(TOPIC_A, 0): 5}))
    assert counted._value.get() == before
    monkeypatch.undo()

    await service._write(batch({(TOPIC_A, 0): len(records), (TOPIC_O, 0): 7}))
    async with db_engine.connect() as conn:
        stored = {
            r.appointment_id
            for r in (await conn.execute(select(FollowupAppointment.__table__))).all()
        }
        outcome_count = await conn.scalar(select(func.count()).select_from(FollowupOutcome))
        positions = await load_positions(conn, [TOPIC_A, TOPIC_O])
    assert stored == {a["appointment_id"] for a in appointments}  # all but the refused one
    assert outcome_count == len(outcomes) > 0
    assert positions == {(TOPIC_A, 0): len(records), (TOPIC_O, 0): 7}
    assert counted._value.get() == before + 1
