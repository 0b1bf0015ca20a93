"""The beheeromgeving in a real browser, against the real pipeline.

One stack for the module: a Kafka broker (tests/conftest.py), the three services,
insights and practice-admin each as ``reminders run NAME``, the SMTP sink, and a migrated
SQLite database whose users were added with ``reminders admin user add`` (insights
projects the outcomes into it; the send log reads them there). A person signs in
with the code from the SMTP sink, switches reminders off (and the notifier stops
sending), edits a text and watches the preview, tries a meeting text, reads the send
log, and finds every page of another practice answering 404. axe-core checks the main
pages. Screenshots: test-artifacts/screenshots/.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from devkit.demo.pipeline import Pipeline
from schemas.models import AppointmentEvent, Outcome, PatientPreferences, PracticeConfig
from services.common.patient_links import PatientLinkSigner
from services.common.settings import KafkaSettings
from tests.web.conftest import SCREENSHOTS

pytestmark = [pytest.mark.web, pytest.mark.kafka, pytest.mark.slow]

P1, P2 = "01999001", "01999002"
BEHEERDER = "assistent@delinde.example"
CODE = re.compile(r"\b(\d{6})\b")


def _config(practice_id: str, name: str) -> PracticeConfig:
    return PracticeConfig.model_validate(
        {
            "practice_id": practice_id,
            "name": name,
            "phone": "020-1234567",
            "reminders_enabled": True,
            "quiet_hours": None,
            "min_lead_minutes": 1,
            "sender": {"email": "noreply@delinde.example", "name": name},
            "appointment_types": {
                "C10": {
                    "label": "Consult 10 minuten",
                    "with_whom": "de huisarts",
                    "instructions": "Neem uw medicijnen mee.",
                },
                "OREN": {"label": "Oren uitspuiten", "with_whom": "de assistente"},
            },
            "version": 1,
        }
    )


@dataclass
class Stack:
    pipeline: Pipeline
    url: str
    env: dict[str, str]
    secret: str


def _cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
async def stack(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Stack]:
    out = tmp_path_factory.mktemp("admin-web")
    kafka = KafkaSettings(
        bootstrap_servers=kafka_bootstrap,
        topic_prefix=f"w{uuid.uuid4().hex[:8]}.",
        partitions=3,
        client_id="admin-web-test",
    )
    pipeline = Pipeline(kafka=kafka, out_dir=out)
    await pipeline.start_infrastructure()
    db_url = f"sqlite+aiosqlite:///{out / 'admin.sqlite3'}"
    env = {**os.environ, "REMINDERS_DATABASE__URL": db_url}
    _cli(env, "db", "upgrade")
    _cli(env, "admin", "user", "add", "--email", BEHEERDER, "--practice", P1, "--role", "beheerder")
    listed = _cli(env, "admin", "user", "list")
    assert f"{P1}\tbeheerder\t{BEHEERDER}" in listed
    await pipeline.publish_configs(
        [_config(P1, "Huisartsenpraktijk De Linde"), _config(P2, "Praktijk Elders")]
    )
    pipeline.start_services()
    pipeline.start_insights(db_url)  # the send log reads its projection
    secret = "test-" + uuid.uuid4().hex
    url = pipeline.start_practice_admin(db_url, secret_key=secret)
    try:
        await pipeline.wait_ready([*pipeline.services])
        yield Stack(pipeline, url, env, secret)
    finally:
        await pipeline.stop()


async def _code_for(stack: Stack, email: str, seen: int) -> str:
    assert stack.pipeline.smtp is not None
    for _ in range(100):
        mails = [m for m in stack.pipeline.smtp.messages if email in m.rcpt_tos]
        if len(mails) > seen:
            body = mails[-1].message.get_body(("plain",))
            assert body is not None
            found = CODE.search(body.get_content())
            assert found
            return found.group(1)
        await asyncio.sleep(0.1)
    raise AssertionError("no sign-in mail arrived in the SMTP sink")


async def _sign_in(browser: Any, stack: Stack, shots: bool = False) -> Any:
    assert stack.pipeline.smtp is not None
    seen = len([m for m in stack.pipeline.smtp.messages if BEHEERDER in m.rcpt_tos])
    context = await browser.new_context(base_url=stack.url, locale="nl-NL")
    page = await context.new_page()
    await page.goto("/login")
    if shots:
        await page.screenshot(path=str(SCREENSHOTS / "01-login.png"), full_page=True)
    await page.get_by_label("E-mailadres").fill(BEHEERDER)
    await page.get_by_role("button", name="Stuur mij een code").click()
    await page.get_by_role("heading", name="Code invullen").wait_for()
    code = await _code_for(stack, BEHEERDER, seen)
    if shots:
        await page.screenshot(path=str(SCREENSHOTS / "02-code.png"), full_page=True)
    await page.get_by_label("Code (6 cijfers)").fill(code)
    await page.get_by_role("button", name="Inloggen").click()
    await page.wait_for_url(f"**/praktijk/{P1}/")
    return page


async def _config_on_topic(stack: Stack, practice_id: str) -> dict[str, Any]:
    records = await stack.pipeline.read_topic(stack.pipeline.topics.practice_config)
    values = [v for k, v in records if k == practice_id.encode() and v is not None]
    assert values
    last: dict[str, Any] = json.loads(values[-1])
    return last


async def test_sign_in_switch_reminders_off_and_the_services_stop_sending(
    browser: Any, stack: Stack
) -> None:
    page = await _sign_in(browser, stack, shots=True)
    assert await page.get_by_text("Herinneringen staan AAN").is_visible()
    await page.screenshot(path=str(SCREENSHOTS / "03-overview.png"), full_page=True)
    # Nothing was booked yet: insights has projected nothing for the follow-up.
    await page.goto(f"/praktijk/{P1}/follow-up")
    assert await page.get_by_text("Nog geen gegevens").is_visible()
    await page.goto(f"/praktijk/{P1}/")

    menu = page.get_by_role("navigation", name="Praktijkmenu")
    await menu.get_by_role("link", name="Instellingen").click()
    await page.get_by_label("Uit: er gaan geen herinneringen uit").check()
    assert await page.get_by_text("al gepland zijn niet meer uit").is_visible()
    await page.screenshot(path=str(SCREENSHOTS / "04-instellingen.png"), full_page=True)
    await page.get_by_role("button", name="Opslaan").click()
    await page.wait_for_url("**/instellingen?opgeslagen=1")
    status = await page.get_by_role("status").inner_text()
    assert status.startswith("Opgeslagen. De diensten gebruiken de nieuwe instellingen meteen.")
    assert "Ook herinneringen die al gepland waren, gaan niet meer uit." in status
    published = await _config_on_topic(stack, P1)
    assert published["reminders_enabled"] is False and published["version"] == 2

    # The running services: a reminder that falls due now for P1 is not sent.
    now = datetime.now(UTC)
    start = now + timedelta(hours=24, seconds=5)
    await stack.pipeline.publish_preferences(
        [
            PatientPreferences(
                practice_id=P1,
                patient_id="pt-web-1",
                reminders=True,
                email="patient-web-1@example.org",
                updated_at=now,
            )
        ]
    )
    event = AppointmentEvent.model_validate(
        {
            "event_id": str(uuid.uuid4()),
            "occurred_at": now.isoformat(),
            "source_system": "medicom",
            "practice_id": P1,
            "appointment_id": "WEB-1",
            "sequence": 1,
            "status": "booked",
            "start": start.isoformat(),
            "end": (start + timedelta(minutes=10)).isoformat(),
            "appointment_type": {"code": "C10", "display": "Consult"},
            "agenda": {"id": "AG1", "display": "Dokter A"},
            "practitioner": {"id": "PR1", "display": "Dokter A"},
            "patient": {"id": "pt-web-1"},
        }
    )
    await stack.pipeline.publish_events([event])
    outcome = await _outcome_for(stack, "WEB-1")
    assert outcome.status == "suppressed" and outcome.reason == "reminders_disabled"
    assert stack.pipeline.smtp is not None
    assert not [
        m for m in stack.pipeline.smtp.messages if "patient-web-1@example.org" in m.rcpt_tos
    ]

    # The send log shows it, in plain Dutch.
    await menu.get_by_role("link", name="Verzendlog").click()
    row = page.get_by_role("row").filter(has_text="pt-web-1")
    for _ in range(50):
        if await row.count():
            break
        await page.wait_for_timeout(200)
        await page.reload()
    assert "herinneringen stonden uit voor de praktijk" in await row.inner_text()
    await page.screenshot(path=str(SCREENSHOTS / "07-verzendlog.png"), full_page=True)
    # The same projection feeds the follow-up: WEB-1 is counted there now.
    await page.goto(f"/praktijk/{P1}/follow-up")
    assert not await page.get_by_text("Nog geen gegevens").count()
    await page.context.close()


async def _outcome_for(stack: Stack, appointment_id: str, timeout: float = 60) -> Outcome:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        for outcome in await stack.pipeline.outcomes():
            if outcome.appointment_id == appointment_id:
                return outcome
        await asyncio.sleep(0.5)
    raise AssertionError(f"no outcome for {appointment_id} within {timeout:.0f} s")


async def test_edit_a_text_and_the_preview_follows_the_unsaved_form(
    browser: Any, stack: Stack
) -> None:
    page = await _sign_in(browser, stack)
    await page.goto(f"/praktijk/{P1}/teksten?type=C10")
    preview = page.frame_locator("#preview-frame")
    await preview.locator("#preview-text").wait_for()
    assert "Neem uw medicijnen mee." in await preview.locator("#preview-text").inner_text()
    assert "Bel dan de praktijk: 020-1234567" in await preview.locator("#urgent-line").inner_text()
    await page.get_by_label("Instructies voor de patiënt").fill("Neem uw nieuwe zorgpas mee.")
    text = preview.locator("#preview-text")
    for _ in range(50):
        if "nieuwe zorgpas" in (await text.inner_text()):
            break
        await page.wait_for_timeout(100)
    assert "Neem uw nieuwe zorgpas mee." in await text.inner_text()
    await page.get_by_role("radio", name="Engels").check()
    for _ in range(50):
        if "call the practice" in (await preview.locator("#urgent-line").inner_text()).lower():
            break
        await page.wait_for_timeout(100)
    assert "call the practice" in (await preview.locator("#urgent-line").inner_text()).lower()
    await page.get_by_role("radio", name="Nederlands").check()
    await page.wait_for_timeout(600)
    await page.screenshot(path=str(SCREENSHOTS / "05-teksten.png"), full_page=True)
    await page.get_by_role("button", name="Opslaan").click()
    await page.wait_for_url("**/teksten?type=C10&opgeslagen=1")
    published = await _config_on_topic(stack, P1)
    assert published["appointment_types"]["C10"]["instructions"] == "Neem uw nieuwe zorgpas mee."
    await page.context.close()


async def test_the_meeting_box(browser: Any, stack: Stack) -> None:
    page = await _sign_in(browser, stack)
    await page.goto(f"/praktijk/{P1}/overleggen")
    await page.get_by_label("Afspraaktype of agendanaam").fill("Teamoverleg POH")
    await page.get_by_role("button", name="Probeer").click()
    verdict = await page.locator("#verdict").inner_text()
    assert "Telt als overleg: ja, door trefwoord overleg" in " ".join(verdict.split())
    await page.screenshot(path=str(SCREENSHOTS / "06-overleggen.png"), full_page=True)
    await page.context.close()


async def test_every_page_of_another_practice_answers_404(browser: Any, stack: Stack) -> None:
    page = await _sign_in(browser, stack)
    for name in ("", "instellingen", "teksten", "overleggen", "verzendlog", "follow-up"):
        for practice_id in (P2, "00000000"):
            response = await page.goto(f"/praktijk/{practice_id}/{name}")
            assert response is not None and response.status == 404, (practice_id, name)
            assert "Praktijk Elders" not in await page.content()
    await page.screenshot(path=str(SCREENSHOTS / "08-404.png"), full_page=True)
    await page.context.close()


async def test_no_serious_accessibility_violations_on_the_main_pages(
    browser: Any, stack: Stack, axe_source: str
) -> None:
    page = await _sign_in(browser, stack)
    problems: list[str] = []
    # The strict CSP must not break the pages themselves: no violation while they load.
    page.on(
        "console",
        lambda m: (
            problems.append(f"console: {m.text}") if "Content Security Policy" in m.text else None
        ),
    )
    for name in ("", "instellingen", "teksten", "overleggen", "verzendlog", "follow-up"):
        await page.goto(f"/praktijk/{P1}/{name}")
        if name == "teksten":
            await page.frame_locator("#preview-frame").locator("#preview-text").wait_for()
        # Through the DevTools protocol: the page's CSP (rightly) forbids inline scripts.
        await page.evaluate(axe_source)
        result = await page.evaluate(
            "async () => await axe.run(document, {resultTypes: ['violations']})"
        )
        for violation in result["violations"]:
            if violation["impact"] in ("serious", "critical"):
                targets = [n["target"] for n in violation["nodes"]][:3]
                problems.append(f"{name or 'overview'}: {violation['id']} {targets}")
    await page.context.close()
    context = await browser.new_context(base_url=stack.url)
    login = await context.new_page()
    await login.goto("/login")
    await login.evaluate(axe_source)
    result = await login.evaluate("async () => await axe.run(document)")
    problems += [
        f"login: {v['id']}" for v in result["violations"] if v["impact"] in ("serious", "critical")
    ]
    await context.close()
    assert problems == []


async def test_the_patient_links_are_served_one_click_switches_reminders_off(
    stack: Stack,
) -> None:
    now = datetime.now(UTC)
    await stack.pipeline.publish_preferences(
        [
            PatientPreferences(
                practice_id=P2,
                patient_id="pt-link-1",
                reminders=True,
                email="patient-link-1@example.org",
                updated_at=now,
            )
        ]
    )
    token = PatientLinkSigner(stack.secret).issue(P2, "pt-link-1", now)
    async with httpx.AsyncClient(base_url=stack.url) as client:
        assert (await client.get("/u/not-a-token")).status_code == 400
        page = await client.get(f"/u/{token}")
        assert page.status_code == 200 and "<button" in page.text
        # Anyone may POST here: a file part is refused at its headers, nothing changes.
        junk = {"junk": ("x.bin", b"\0" * 100_000, "application/octet-stream")}
        refused = await client.post(
            f"/u/{token}", data={"List-Unsubscribe": "One-Click"}, files=junk
        )
        assert refused.status_code == 400
        answer = None
        for _ in range(50):  # practice-admin's preferences table catches up
            answer = await client.post(f"/u/{token}", data={"List-Unsubscribe": "One-Click"})
            records = await stack.pipeline.read_topic(stack.pipeline.topics.patient_preferences)
            latest = [json.loads(v) for k, v in records if k == f"{P2}/pt-link-1".encode() and v]
            if latest and latest[-1]["reminders"] is False:
                break
            await asyncio.sleep(0.2)
        assert answer is not None and answer.status_code == 200
        assert latest[-1]["reminders"] is False
        assert latest[-1]["email"] == "patient-link-1@example.org"
