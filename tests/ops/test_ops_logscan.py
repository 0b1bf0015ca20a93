"""The log scanner itself: it must find personal data in every disguise and nothing else."""

from __future__ import annotations

import json
import logging

from services.common.logs import JsonFormatter
from tests.support.logscan import bsn_like, captured_json_logs, eleven_test, scan_logs

NAMES = ["Jan de Vries", "Zoë Çelik"]
EMAILS = ["jan.devries@example.org"]


def _scan(*lines: str) -> list[str]:
    return scan_logs(lines, NAMES, EMAILS)


def test_clean_json_log_lines_pass() -> None:
    lines = [
        json.dumps(
            {
                "ts": "2026-11-27T23:47:22.123+00:00",
                "level": "info",
                "logger": "services.notifier",
                "msg": "reminder sent",
                "practice_id": "01234567",
                "appointment_id": "A-1",
                "reminder_id": "01234567/A-1/2026-12-01T09:30:00Z",
                "partition": 2,
                "offset": 18_422,
                "elapsed": 0.123456789,
                "epoch_ms": 1_796_000_000_000,
                "metrics_url": "http://127.0.0.1:9400",
                "event_id": "5b2f0a47-1c9e-4d8a-9f1e-123456789012",
            }
        ),
        "2026-11-27 23:47:22,123 INFO kafka bootstrap 127.0.0.1:9092 connected",
        "timer at 2026-11-27T23:47:22.123456789+01:00 due",
    ]
    assert scan_logs(lines, NAMES, EMAILS) == []


def test_patient_email_found_plain_escaped_and_url_encoded() -> None:
    assert _scan('{"msg": "to jan.devries@example.org"}') == [
        "line 1: patient e-mail address 'jan.devries@example.org'"
    ]
    assert _scan("GET /unsubscribe?to=jan.devries%40example.org") == [
        "line 1: patient e-mail address 'jan.devries@example.org'"
    ]
    assert _scan("TO: JAN.DEVRIES@EXAMPLE.ORG")


def test_any_email_address_is_a_finding_unless_allowed() -> None:
    assert _scan("sending as someone@praktijk.example") == [
        "line 1: e-mail address 'someone@praktijk.example'"
    ]
    line = "vapid subject mailto:beheer@example.invalid"
    assert scan_logs([line], NAMES, EMAILS, allowed_emails=["beheer@example.invalid"]) == []
    sent = '{"msg": "sent", "message_id": "<3f9a2c.P1.A-1@reminders.invalid>"}'
    assert scan_logs([sent], NAMES, EMAILS, allowed_domains=["reminders.invalid"]) == []
    leak = "to jan.devries@example.org"
    assert scan_logs([leak], NAMES, EMAILS, allowed_domains=["example.org"]) != []


def test_bsn_like_numbers_valid_or_not() -> None:
    assert eleven_test("111222333")
    assert not eleven_test("123456789")
    assert _scan("patient 111222333 booked") == ["line 1: BSN (11-proef valid) '111222333'"]
    assert _scan('{"patient": "123456789"}') == ["line 1: BSN-like number '123456789'"]
    assert _scan("bsn 1112.22.333") == ["line 1: BSN (11-proef valid) '1112.22.333'"]
    assert _scan("ends with 111222333.") == ["line 1: BSN (11-proef valid) '111222333'"]


def test_numbers_that_are_not_bsn_like() -> None:
    assert bsn_like("epoch 1796000000 and ms 1796000000123") == []
    assert bsn_like("fraction 0.123456789 and 123456789.5") == []
    assert bsn_like("port :9092, offset 18422, id P123456789, 1234567890") == []
    assert bsn_like("uuid 5b2f0a47-1c9e-4d8a-9f1e-123456789012") == []


def test_patient_names_ignore_case_accents_and_json_escapes() -> None:
    assert _scan("dear JAN DE VRIES,") == ["line 1: patient name 'jan de vries'"]
    assert _scan(json.dumps({"msg": "hello Zoë Çelik"})) == ["line 1: patient name 'zoe celik'"]
    assert _scan("hello Zoe  Celik") == ["line 1: patient name 'zoe celik'"]
    # whole words only: a name inside a longer word is not that name
    assert scan_logs(["Jansen de Vriesland"], ["Jan de Vries"], []) == []


def test_each_finding_once_per_line_with_its_line_number() -> None:
    findings = _scan("ok", "jan.devries@example.org jan.devries@example.org 111222333")
    assert findings == [
        "line 2: patient e-mail address 'jan.devries@example.org'",
        "line 2: BSN (11-proef valid) '111222333'",
    ]


def test_the_project_json_formatter_output_is_scannable() -> None:
    record = logging.LogRecord("services.notifier", logging.INFO, __file__, 1, "sent", None, None)
    record.practice_id = "01234567"
    record.reminder_id = "01234567/A-1/2026-12-01T09:30:00Z"
    assert _scan(JsonFormatter().format(record)) == []
    record.email = "jan.devries@example.org"
    assert _scan(JsonFormatter().format(record)) != []


def test_captured_json_logs_collects_what_services_log() -> None:
    log = logging.getLogger("services.ops_test")
    with captured_json_logs() as lines:
        log.debug("planned", extra={"reminder_id": "P1/A-1/2026-12-01T09:30:00Z"})
        log.warning("to jan.devries@example.org")
    log.warning("after the block")
    assert len(lines) == 2
    assert json.loads(lines[0])["reminder_id"] == "P1/A-1/2026-12-01T09:30:00Z"
    assert _scan(*lines) == ["line 2: patient e-mail address 'jan.devries@example.org'"]
