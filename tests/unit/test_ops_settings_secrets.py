"""No secret is ever printed (issue 14, point 4): every settings error path, run the way an
operator meets it (`reminders run`, `reminders check`, `reminders topics list`), with a
known password in the environment, and the output searched for it."""

from __future__ import annotations

import json

import pytest

from services.cli import main
from services.common.settings import Settings, SettingsInvalid, load_settings

PASSWORD = "Kn0wn-Passw0rd-4-Tests"

# name -> (environment, a field the error must name)
CASES: dict[str, tuple[dict[str, str], str]] = {
    "sasl without a mechanism": (
        {
            "REMINDERS_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
            "REMINDERS_KAFKA__SASL_USERNAME": "notifier",
            "REMINDERS_KAFKA__SASL_PASSWORD": PASSWORD,
        },
        "REMINDERS_KAFKA__SASL_MECHANISM",
    ),
    "sasl without a user": (
        {
            "REMINDERS_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "REMINDERS_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
            "REMINDERS_KAFKA__SASL_PASSWORD": PASSWORD,
        },
        "REMINDERS_KAFKA__SASL_USERNAME",
    ),
    "unknown security protocol": (
        {
            "REMINDERS_KAFKA__SECURITY_PROTOCOL": "SASL_TLS",
            "REMINDERS_KAFKA__SASL_PASSWORD": PASSWORD,
        },
        "REMINDERS_KAFKA__SECURITY_PROTOCOL",
    ),
    "unknown mechanism": (
        {
            "REMINDERS_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
            "REMINDERS_KAFKA__SASL_MECHANISM": "SCRAM-SHA-1",
            "REMINDERS_KAFKA__SASL_USERNAME": "notifier",
            "REMINDERS_KAFKA__SASL_PASSWORD": PASSWORD,
        },
        "REMINDERS_KAFKA__SASL_MECHANISM",
    ),
    "password pasted into a number field": (
        {"REMINDERS_KAFKA__PARTITIONS": PASSWORD},
        "REMINDERS_KAFKA__PARTITIONS",
    ),
    "password pasted into the smtp port": (
        {"REMINDERS_SMTP__PORT": PASSWORD, "REMINDERS_SMTP__PASSWORD": PASSWORD},
        "REMINDERS_SMTP__PORT",
    ),
    "unknown smtp security": (
        {"REMINDERS_SMTP__SECURITY": "ssl", "REMINDERS_SMTP__PASSWORD": PASSWORD},
        "REMINDERS_SMTP__SECURITY",
    ),
    "smtp auth in the clear to a remote host": (
        {
            "REMINDERS_SMTP__HOST": "smtp.example.org",
            "REMINDERS_SMTP__SECURITY": "none",
            "REMINDERS_SMTP__USERNAME": "notifier",
            "REMINDERS_SMTP__PASSWORD": PASSWORD,
        },
        "REMINDERS_SMTP__SECURITY",
    ),
    "nested json that does not parse": (
        {"REMINDERS_KAFKA": '{"sasl_password": "' + PASSWORD + '", '},
        "REMINDERS_KAFKA",
    ),
    "nested json with a bad field": (
        {"REMINDERS_KAFKA": json.dumps({"sasl_password": PASSWORD, "partitions": 0})},
        "REMINDERS_KAFKA__PARTITIONS",
    ),
    "secret key where a number belongs": (
        {
            "REMINDERS_ADMIN__SECRET_KEY": PASSWORD,
            "REMINDERS_ADMIN__PORT": PASSWORD,
            "REMINDERS_DATABASE__URL": f"postgresql+asyncpg://app:{PASSWORD}@db/reminders",
        },
        "REMINDERS_ADMIN__PORT",
    ),
    "bad log format with a push key": (
        {"REMINDERS_LOG_FORMAT": "xml", "REMINDERS_PUSH__VAPID_PRIVATE_KEY": PASSWORD},
        "REMINDERS_LOG_FORMAT",
    ),
}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("REMINDERS_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(str(tmp_path))  # no .env from the working tree


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize(
    "argv",
    [["run", "notifier"], ["check"], ["topics", "list"], ["partition", "01054321"]],
    ids=lambda argv: " ".join(argv),
)
def test_settings_errors_name_the_field_and_never_print_a_secret(
    case: str,
    argv: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    env, field = CASES[case]
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 2
    assert PASSWORD not in out + err
    assert field in err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    if argv[0] == "run":
        entry = json.loads(lines[0])
        assert entry["level"] == "error" and entry["msg"].startswith("settings invalid: ")


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_settings_error_itself_carries_no_secret(
    case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env, field = CASES[case]
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsInvalid) as info:
        load_settings()
    assert PASSWORD not in str(info.value) + repr(info.value.problems)
    assert field in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_valid_settings_do_not_show_secrets_in_their_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REMINDERS_KAFKA__SASL_PASSWORD", PASSWORD)
    monkeypatch.setenv("REMINDERS_SMTP__PASSWORD", PASSWORD)
    settings = Settings()
    assert PASSWORD not in repr(settings) + str(settings)
