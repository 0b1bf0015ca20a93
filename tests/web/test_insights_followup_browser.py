"""The follow-up page in a real browser: the numbers of the CSV, charts without JavaScript.

A migrated SQLite database holds a projected synthetic workload (the rows insights
writes), practice-admin runs as ``reminders run practice-admin`` against the real broker,
and a beheerder signs in with the code from the SMTP sink. Screenshot:
test-artifacts/screenshots/insights-follow-up.png.
"""

from __future__ import annotations

import asyncio
import csv
import io
import os
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from devkit.demo.pipeline import Pipeline
from devkit.insights_samples import generate
from schemas.models import PracticeConfig
from services.common.db import create_engine
from services.common.settings import KafkaSettings
from services.insights.projection import (
    appointment_row,
    dedupe_appointments,
    dedupe_outcomes,
    outcome_row,
)
from services.insights.store import write_batch
from tests.web.conftest import SCREENSHOTS

pytestmark = [pytest.mark.web, pytest.mark.kafka, pytest.mark.slow, pytest.mark.db]

PRACTICE = "01880000"
USER = "praktijk@delinde.example"
CODE = re.compile(r"\b(\d{6})\b")


@dataclass
class Stack:
    pipeline: Pipeline
    url: str


def _cli(env: dict[str, str], *args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
async def stack(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    out = tmp_path_factory.mktemp("followup-web")
    kafka = KafkaSettings(
        bootstrap_servers=kafka_bootstrap,
        topic_prefix=f"f{uuid.uuid4().hex[:8]}.",
        partitions=3,
        client_id="followup-web-test",
    )
    pipeline = Pipeline(kafka=kafka, out_dir=out)
    await pipeline.start_infrastructure()
    db_url = f"sqlite+aiosqlite:///{out / 'admin.sqlite3'}"
    env = {**os.environ, "REMINDERS_DATABASE__URL": db_url}
    _cli(env, "db", "upgrade")
    _cli(
        env, "admin", "user", "add", "--email", USER, "--practice", PRACTICE, "--role", "medewerker"
    )
    workload = generate(now=datetime.now(UTC), practices=1, appointments=400)
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
    config = PracticeConfig.model_validate(
        {
            "practice_id": PRACTICE,
            "name": "Huisartsenpraktijk De Linde",
            "phone": "020-1234567",
            "reminders_enabled": True,
            "sender": {"email": "noreply@delinde.example", "name": "De Linde"},
            "version": 1,
        }
    )
    await pipeline.publish_configs([config])
    url = pipeline.start_practice_admin(db_url, secret_key="test-" + uuid.uuid4().hex)
    try:
        await pipeline.wait_ready([*pipeline.services])
        yield Stack(pipeline, url)
    finally:
        await pipeline.stop()


async def _sign_in(browser: Any, stack: Stack) -> Any:
    smtp = stack.pipeline.smtp
    assert smtp is not None
    seen = len([m for m in smtp.messages if USER in m.rcpt_tos])
    context = await browser.new_context(base_url=stack.url, locale="nl-NL", accept_downloads=True)
    page = await context.new_page()
    await page.goto("/login")
    await page.get_by_label("E-mailadres").fill(USER)
    await page.get_by_role("button", name="Stuur mij een code").click()
    await page.get_by_role("heading", name="Code invullen").wait_for()
    code = None
    for _ in range(100):
        mails = [m for m in smtp.messages if USER in m.rcpt_tos]
        if len(mails) > seen:
            body = mails[-1].message.get_body(("plain",))
            assert body is not None
            found = CODE.search(body.get_content())
            assert found
            code = found.group(1)
            break
        await asyncio.sleep(0.1)
    assert code, "no sign-in mail arrived"
    await page.get_by_label("Code (6 cijfers)").fill(code)
    await page.get_by_role("button", name="Inloggen").click()
    await page.wait_for_url(f"**/praktijk/{PRACTICE}/")
    return page


async def test_follow_up_page_shows_the_numbers_of_the_csv_with_charts(
    browser: Any, stack: Stack
) -> None:
    page = await _sign_in(browser, stack)
    await page.goto(f"/praktijk/{PRACTICE}/follow-up")
    assert await page.locator("#followup-caution").is_visible()
    assert "geen proef" in await page.locator("#followup-caution").inner_text()

    # The CSV, downloaded as a person would.
    async with page.expect_download() as info:
        await page.get_by_role("link", name="Download als CSV").click()
    download = await info.value
    path = await download.path()
    with open(path, encoding="utf-8") as handle:
        rows = list(csv.DictReader(io.StringIO(handle.read())))
    assert rows and all(r["practice_id"] == PRACTICE for r in rows)

    # Every figure of the CSV is in the page's table of all figures, and nothing else.
    await page.locator("details summary", has_text="Alle cijfers").click()
    cells = await page.locator("#followup-figures tbody tr").evaluate_all(
        "rows => rows.map(r => Array.from(r.cells).map(c => c.textContent.trim()))"
    )
    assert cells == [[r["week"], r["measure"], r["key"], r["count"], r["base"]] for r in rows]

    # The weekly table carries the same counts.
    by = {(r["week"], r["measure"], r["key"]): r for r in rows}
    weekly = await page.locator("#followup-weeks tbody tr").evaluate_all(
        "rows => rows.map(r => Array.from(r.cells).map(c => c.textContent.trim()))"
    )
    assert len(weekly) == 12
    for week, appointments, *_rest in weekly:
        assert appointments == by[(week, "appointments", "")]["count"]
        reach = by[(week, "reach", "")]
        if reach["base"] != "0":
            assert _rest[3].startswith(f"{reach['count']}/{reach['base']} ")

    # Charts: SVG images drawn by the server, loaded from this host only, no script.
    images = page.locator(".chart img")
    assert await images.count() == 3
    for i in range(3):
        loaded = await images.nth(i).evaluate("img => img.complete && img.naturalWidth > 0")
        assert loaded
        src = await images.nth(i).get_attribute("src")
        assert src and src.startswith(f"/praktijk/{PRACTICE}/follow-up/")
        svg = await page.request.get(src)
        assert svg.headers["content-type"].startswith("image/svg+xml")
        assert "<script" not in await svg.text()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(SCREENSHOTS / "insights-follow-up.png"), full_page=True)
    await page.context.close()


async def test_follow_up_of_another_practice_answers_404(browser: Any, stack: Stack) -> None:
    page = await _sign_in(browser, stack)
    for path in ("follow-up", "follow-up.csv", "follow-up/bereik.svg"):
        response = await page.goto(f"/praktijk/01880001/{path}")
        assert response is not None and response.status == 404, path
    await page.context.close()
