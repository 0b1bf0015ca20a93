"""The practice CLI without Kafka: help, validate, preview, YAML and one-line errors."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from services.cli import build_parser, main
from services.cli.config_cmd import dump_yaml, load_document

EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples"
DE_LINDE = str(EXAMPLES / "practice-01054321-de-linde.yaml")
HET_ANKER = str(EXAMPLES / "practice-01999002-het-anker.yaml")
NOWHERE = ["--bootstrap", "127.0.0.1:1"]  # any Kafka call would fail with exit 1

DUTCH_DATE = re.compile(
    r"(maandag|dinsdag|woensdag|donderdag|vrijdag) \d{1,2} "
    r"(januari|februari|maart|april|mei|juni|juli|augustus|september|oktober|november|december) "
    r"\d{4} om 09:30"
)
ENGLISH_DATE = re.compile(
    r"(Monday|Tuesday|Wednesday|Thursday|Friday) \d{1,2} "
    r"(January|February|March|April|May|June|July|August|September|October|November|December) "
    r"\d{4} at 09:30"
)


def one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return lines[0]


def _subcommand_paths(parser: argparse.ArgumentParser, prefix: list[str]) -> list[list[str]]:
    paths = [prefix]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                paths += _subcommand_paths(child, [*prefix, name])
    return paths


MY_COMMANDS = [
    ["config"],
    ["config", "validate"],
    ["config", "apply"],
    ["config", "show"],
    ["config", "reminders"],
    ["preferences"],
    ["preferences", "set"],
    ["preferences", "apply"],
    ["preview"],
]


def test_every_help_reads_and_exits_zero(capsys: pytest.CaptureFixture[str]) -> None:
    paths = _subcommand_paths(build_parser(), [])
    for wanted in MY_COMMANDS:
        assert wanted in paths
    for path in paths:
        with pytest.raises(SystemExit) as done:
            main([*path, "--help"])
        assert done.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith("usage: reminders")
        if path in MY_COMMANDS:
            # A description, wrapped to the terminal, not one endless line.
            assert max(len(line) for line in out.splitlines()) <= 100, path
            assert len(out.splitlines()) >= 6


def test_top_level_help_lists_the_practice_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for command in ("config", "preferences", "preview", "partition"):
        assert f"    {command}" in out


def test_validate_examples(capsys: pytest.CaptureFixture[str]) -> None:
    files = sorted(str(p) for p in EXAMPLES.glob("practice-*.yaml"))
    assert len(files) >= 2
    assert main(["config", "validate", *files]) == 0
    out = capsys.readouterr().out
    assert out.count("ok: ") == len(files)
    assert "practice 01054321 (Huisartsenpraktijk De Linde), version 1, reminders on" in out


def test_validate_invalid_file_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text('practice_id: "01999001"\nname: X\nreminders_enabled: true\n')
    assert main(["config", "validate", str(bad)]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert line.startswith(f"error: {bad}: phone is required when reminders are on")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("name: x\npractice_id: [", "not valid YAML: line 2"),
        ("name: a\nname: b\n", "not valid YAML: line 2: the key 'name' appears twice"),
        ("- a\n- b\n", "a practice config is a mapping of fields"),
        ('{"practice_id": "01999001", "name": "X", "colour": 1}', "unknown field 'colour'"),
    ],
)
def test_validate_reports_file_problems(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, expected: str
) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(content)
    assert main(["config", "validate", str(path)]) == 2
    assert expected in one_line_error(capsys.readouterr().err)


def test_missing_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "validate", "/nonexistent/p.yaml"]) == 2
    assert one_line_error(capsys.readouterr().err) == "error: /nonexistent/p.yaml: no such file"


def test_apply_invalid_config_publishes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"practice_id": "01999001", "name": "X", "timezone": "Nowhere/Land"}')
    # Exit 2 (the config), not 1 (Kafka): validation comes before any connection.
    assert main(["config", "apply", str(bad), *NOWHERE]) == 2
    assert "unknown time zone 'Nowhere/Land'" in one_line_error(capsys.readouterr().err)


def test_kafka_unreachable_is_one_line_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show", "01999001", *NOWHERE]) == 1
    assert "cannot reach Kafka at 127.0.0.1:1" in one_line_error(capsys.readouterr().err)


def test_yaml_reads_times_ids_and_codes_as_text(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "practice_id: 01234567\ntime: 18:00\ncodes: [no, on, off, yes, 007]\n"
        "date: 2026-12-01\nflag: true\nhours: 24\nfraction: 1.5\nnothing: null\n"
    )
    assert load_document(str(path)) == {
        "practice_id": "01234567",
        "time": "18:00",
        "codes": ["no", "on", "off", "yes", "007"],
        "date": "2026-12-01",
        "flag": True,
        "hours": 24,
        "fraction": 1.5,
        "nothing": None,
    }


def test_yaml_output_quotes_what_readers_could_misread() -> None:
    text = dump_yaml({"practice_id": "01234567", "time": "18:00", "code": "no", "name": "De Linde"})
    assert 'practice_id: "01234567"' in text
    assert 'time: "18:00"' in text
    assert 'code: "no"' in text
    assert "name: De Linde" in text


@pytest.mark.parametrize(
    ("language", "urgent", "date"),
    [
        ("nl", "Heeft u een spoedeisende vraag? Bel dan de praktijk: 030-1234567.", DUTCH_DATE),
        ("en", "Urgent question? Call the practice: 030-1234567.", ENGLISH_DATE),
    ],
)
def test_preview_of_a_file_holds_the_urgent_line_and_the_date_in_words(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    language: str,
    urgent: str,
    date: re.Pattern[str],
) -> None:
    html_out = tmp_path / "preview.html"
    argv = ["preview", "01054321", "--type", "OOR", "--lang", language, "--file", DE_LINDE]
    assert main([*argv, "--html-out", str(html_out)]) == 0
    out = capsys.readouterr().out
    assert out.count(urgent) == 3  # text, HTML, push
    assert date.search(out)
    assert "Oren uitspuiten" in out
    assert "Subject: " in out and "Title: " in out and "Body: " in out
    assert urgent in html_out.read_text()


def test_preview_notes_that_reminders_are_off(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["preview", "01999002", "--type", "CONS", "--file", HET_ANKER]) == 0
    captured = capsys.readouterr()
    assert "reminders are off for 01999002" in captured.err
    assert "Bel dan de praktijk: 010-7654321." in captured.out


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["01054321", "--type", "MDO", "--file", DE_LINDE], "type MDO is a meeting"),
        (["01999002", "--type", "MDO", "--file", HET_ANKER], "type MDO is a meeting"),
        (["01999002", "--type", "XYZ", "--file", HET_ANKER], "not in remind_only_types"),
        (["01999001", "--type", "C10", "--file", DE_LINDE], "is the config of practice 01054321"),
        (
            [
                "01999003",
                "--type",
                "C10",
                "--file",
                str(EXAMPLES / "practice-01999003-zeezicht.yaml"),
            ],
            "01999003 has no phone number",
        ),
    ],
)
def test_preview_refusals_are_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    assert main(["preview", *argv]) == 2
    assert expected in one_line_error(capsys.readouterr().err)


def test_preview_of_an_unknown_type_uses_the_neutral_label(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["preview", "01054321", "--type", "ZZZ", "--file", DE_LINDE]) == 0
    captured = capsys.readouterr()
    assert "type ZZZ has no entry in appointment_types" in captured.err
    assert "Wat: uw afspraak" in captured.out


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--email", "not-an-address"], "email: value is not a valid email address"),
        (["--push-endpoint", "https://push.example.invalid/x"], "needs --push-endpoint, --p256dh"),
        (["--email", "a@example.org", "--delete"], "--delete publishes a tombstone"),
    ],
)
def test_preferences_set_checks_before_publishing(
    capsys: pytest.CaptureFixture[str], argv: list[str], expected: str
) -> None:
    base = ["preferences", "set", "--practice", "01999001", "--patient", "pt-1"]
    assert main([*base, *argv, *NOWHERE]) == 2
    assert expected in one_line_error(capsys.readouterr().err)


def test_preferences_refuse_a_bsn_as_patient_id(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["preferences", "set", "--practice", "01999001", "--patient", "123456782"]
    assert main([*argv, "--delete", *NOWHERE]) == 2
    assert "looks like a BSN" in one_line_error(capsys.readouterr().err)


def test_preferences_file_is_checked_whole(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "prefs.yaml"
    path.write_text(
        "preferences:\n"
        '  - {practice_id: "01999001", patient_id: pt-1, reminders: true}\n'
        '  - {practice_id: "01999001", patient_id: pt-2, language: de}\n'
    )
    assert main(["preferences", "apply", str(path), *NOWHERE]) == 2
    line = one_line_error(capsys.readouterr().err)
    assert "record 2: language: value must be 'nl' or 'en'" in line


def test_example_preferences_file_is_valid() -> None:
    from schemas.models import PatientPreferences

    data = load_document(str(EXAMPLES / "preferences.yaml"))
    for item in data["preferences"]:
        item.setdefault("updated_at", "2026-11-30T12:00:00+01:00")
        PatientPreferences.model_validate(item)
    assert len(data["preferences"]) >= 4
