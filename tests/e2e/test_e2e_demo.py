"""The README's main job at a small size, from the command line, against the real broker."""

from __future__ import annotations

import mailbox
import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from devkit.demo.pipeline import MESSAGE_ID_DOMAIN
from devkit.demo.workload import generate
from schemas import PushSubscriptionRecord
from tests.support.logscan import scan_logs

_FAKE_SUB = PushSubscriptionRecord.model_validate(
    {
        "endpoint": "https://push.example.org/x",
        "keys": {"p256dh": "B" + "A" * 86, "auth": "AAAAAAAAAAAAAAAAAAAAAA"},
    }
)

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def test_demo_summary_matches_what_the_sinks_received(kafka_bootstrap: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REMINDERS_")}
    env["REMINDERS_KAFKA__BOOTSTRAP_SERVERS"] = kafka_bootstrap
    out = tmp_path / "demo"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "services.cli",
            "demo",
            "--practices",
            "3",
            "--patients",
            "12",
            "--appointments",
            "14",
            "--out",
            str(out),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    output = result.stdout
    assert result.returncode == 0, output + result.stderr
    assert "every number above matches what the sinks received" in output

    received = re.search(
        r"received\s+(\d+) mails \(expected (\d+)\), (\d+) push messages \(expected (\d+)\)",
        output,
    )
    assert received, output
    mails, want_mails, pushes, want_pushes = map(int, received.groups())
    assert (mails, pushes) == (want_mails, want_pushes)
    assert mails > 0 and pushes > 0

    # The summary's sent counts are the notifier's outcomes; they match the sinks.
    sent = re.search(r"sent\s+(.*)", output)
    assert sent, output
    by_channel = dict((k, int(v)) for k, v in re.findall(r"(email|push) (\d+)", sent.group(1)))
    assert by_channel.get("email", 0) + by_channel.get("push", 0) >= max(mails, pushes)

    # The mails really are in the mbox the summary names, one per reminder.
    box = mailbox.mbox(str(out / "mail.mbox"))
    ids = [m["Message-ID"] for m in box]
    box.close()
    assert len(ids) == mails == len(set(ids))
    suppressed = re.search(r"suppressed\s+(.*)", output)
    assert suppressed and "patient_discussion" in suppressed.group(1)
    assert "reminders_disabled" in suppressed.group(1)
    dlq = re.search(r"dead-letter\s+(.*)", output)
    assert dlq and "his.appointments.v1.dlq.v1" in dlq.group(1)

    # Every log line of the run: no patient e-mail address, BSN-like number or name.
    workload = generate(
        now=datetime.now(UTC),
        practices=3,
        patients=12,
        appointments=14,
        seed=7,
        push_factory=lambda: _FAKE_SUB,
    )
    lines = [
        line
        for path in sorted((out / "logs").glob("*.log"))
        for line in path.read_text(encoding="utf-8").splitlines()
    ]
    assert len(lines) > 20
    assert all(line.startswith("{") for line in lines), "every log line is JSON"
    findings = scan_logs(
        lines,
        workload.patient_names.values(),
        workload.emails,
        allowed_domains=[MESSAGE_ID_DOMAIN],
        allowed_emails=[c.sender.email for c in workload.practices if c.sender],
    )
    assert findings == []
