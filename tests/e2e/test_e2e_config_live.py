"""Practice config against the running services: no restart needed, and the switch works
for reminders that are already scheduled."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from devkit.demo.pipeline import MESSAGE_ID_DOMAIN, Pipeline
from devkit.demo.workload import Workload, generate
from schemas import PracticeConfig
from services.common.settings import KafkaSettings
from services.notifier.email import message_id_for

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def _cli(kafka: KafkaSettings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REMINDERS_")}
    env.update(
        REMINDERS_KAFKA__BOOTSTRAP_SERVERS=kafka.bootstrap_servers,
        REMINDERS_KAFKA__TOPIC_PREFIX=kafka.topic_prefix,
        REMINDERS_KAFKA__PARTITIONS=str(kafka.partitions),
    )
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_config_changes_reach_running_services(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    pipeline = Pipeline(kafka=kafka_settings, out_dir=tmp_path)
    try:
        await pipeline.start_infrastructure()

        def workload_from_now(lead: tuple[float, float]) -> Workload:
            return generate(
                now=datetime.now(UTC),
                practices=3,
                patients=10,
                appointments=12,
                disabled_practices=1,
                lead=lead,
                push_factory=None,
                messy=False,
            )

        # Configs and consent first (they do not depend on the clock); the bookings once
        # the services are ready, so that a slow start does not eat into their lead.
        workload = workload_from_now((60.0, 90.0))
        switched_on, stays_on, switched_off = workload.practices
        assert not switched_on.reminders_enabled and stays_on.reminders_enabled
        await pipeline.publish_configs(workload.practices)
        consent = workload.preferences
        await pipeline.publish_preferences(consent)
        pipeline.start_services()
        await pipeline.wait_ready()
        # The same seed: the same practices and patients, bookings due 25-50 s from now,
        # time enough for the two switches below (a few seconds of CLI) to reach the
        # services before most of them fall due.
        workload = workload_from_now((25.0, 50.0))
        assert workload.practices == [switched_on, stays_on, switched_off]
        assert [p.model_dump(exclude={"updated_at"}) for p in workload.preferences] == [
            p.model_dump(exclude={"updated_at"}) for p in consent
        ]
        await pipeline.publish_events(workload.events)

        # While the services run and the reminders are scheduled: the practice admin
        # switches practice 0 on and practice 2 off, through the CLI practices use.
        on = _cli(kafka_settings, "config", "reminders", switched_on.practice_id, "on")
        assert on.returncode == 0, on.stderr
        off = _cli(kafka_settings, "config", "reminders", switched_off.practice_id, "off")
        assert off.returncode == 0, off.stderr
        switched_off_at = datetime.now(UTC)

        wanted = {
            rid for rid, why in workload.expected.suppressed.items() if why != "cancelled"
        } | set(workload.expected.deliveries)
        deadline = time.monotonic() + 150
        outcomes = []
        while time.monotonic() < deadline:
            outcomes = await pipeline.outcomes()
            if wanted <= {o.reminder_id for o in outcomes}:
                break
            await asyncio.sleep(2)
        last = {o.reminder_id: o for o in outcomes}
        assert wanted <= set(last)
        assert pipeline.smtp is not None
        mails = set(pipeline.smtp.message_ids())

        def practice_of(rid: str) -> str:
            return rid.split("/")[0]

        def due_of(rid: str) -> datetime:
            # The workload's practices remind 24 h before the start in the reminder id.
            start = datetime.fromisoformat(rid.split("/")[2].replace("Z", "+00:00"))
            return start - timedelta(hours=24)

        judged_off = 0
        for rid, channels in workload.expected.deliveries.items():
            mid = message_id_for(rid, MESSAGE_ID_DOMAIN)
            if practice_of(rid) == switched_off.practice_id:
                if due_of(rid) <= switched_off_at + timedelta(seconds=5):
                    # Due before the switch was published: sending it was right.
                    assert (last[rid].status == "sent") == (mid in mails)
                    continue
                judged_off += 1
                assert last[rid].reason == "reminders_disabled"
                assert mid not in mails
            else:
                assert last[rid].status == "sent", last[rid]
                assert ("email" in channels) == (mid in mails)
        # The practice switched on now reminds patients who consented, with no restart.
        assert judged_off, "no reminder of the switched-off practice fell due after the switch"
        newly = [
            rid
            for rid, why in workload.expected.suppressed.items()
            if why == "reminders_disabled" and practice_of(rid) == switched_on.practice_id
        ]
        assert newly, "the workload should have reminders for the switched-on practice"
        assert any(last[rid].status == "sent" for rid in newly)
        assert all(pipeline.services[n].alive() for n in pipeline.services)
    finally:
        await pipeline.stop()


def test_config_switch_refuses_to_turn_on_without_phone(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    async def publish() -> None:
        pipeline = Pipeline(kafka=kafka_settings, out_dir=tmp_path)
        from services.common.kafka import create_topics

        await create_topics(kafka_settings)
        config = PracticeConfig(practice_id="01997777", name="Zonder telefoon")
        await pipeline.publish_configs([config])

    asyncio.run(publish())
    result = _cli(kafka_settings, "config", "reminders", "01997777", "on")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "phone" in result.stderr
