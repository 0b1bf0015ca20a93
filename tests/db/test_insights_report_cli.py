"""``reminders report`` prints the figures of the projection, as text or CSV."""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from devkit.insights_samples import generate
from services.common.db import create_engine
from services.insights.projection import (
    appointment_row,
    dedupe_appointments,
    dedupe_outcomes,
    outcome_row,
)
from services.insights.store import write_batch
from tests.support.insights_oracle import last_weeks, oracle

pytestmark = pytest.mark.db

ROOT = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 12, 1, 11, 0, tzinfo=UTC)


def cli(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "REMINDERS_DATABASE__URL": db_url, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_report_prints_the_oracles_numbers_as_csv_and_text(db_url: str) -> None:
    workload = generate(now=NOW, practices=1, appointments=200)
    engine = create_engine(db_url)
    try:
        async with engine.begin() as conn:
            await write_batch(
                conn,
                appointments=dedupe_appointments(
                    appointment_row(r.value)
                    for r in workload.records
                    if r.kind == "appointment" and r.value
                ),
                outcomes=dedupe_outcomes(
                    outcome_row(r.value) for r in workload.records if r.kind == "outcome"
                ),
                positions={},
            )
    finally:
        await engine.dispose()
    args = ("report", "--practice", "01880000", "--weeks", "6", "--until", "2026-12-01")
    result = cli(db_url, *args, "--csv")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    printed = {
        (r["week"], r["measure"], r["key"]): (
            int(r["count"]),
            int(r["base"]) if r["base"] else None,
        )
        for r in rows
    }
    assert printed == oracle(workload, "01880000", last_weeks(NOW, 6))
    text = cli(db_url, *args)
    assert text.returncode == 0, text.stderr
    assert "not a trial" in text.stdout and "2026-W49" in text.stdout


def test_report_on_a_database_without_schema_names_the_command(empty_db_url: str) -> None:
    result = cli(empty_db_url, "report", "--practice", "01880000")
    assert result.returncode == 2
    assert "reminders db upgrade" in result.stderr
