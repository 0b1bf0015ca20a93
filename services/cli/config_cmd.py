"""``reminders config``, ``reminders preferences`` and ``reminders preview``.

The practice side (config files to ``practice.config.v1``, the reminders switch, a
preview of the messages) and the patient side (preferences to ``patient.preferences.v1``,
for tests and demos; the patient portal publishes the real ones by the same rule).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from schemas.models import PatientPreferences, PracticeConfig
from schemas.topics import Topics
from services.cli._base import CliError, add_kafka_options, run_async, settings_from
from services.common.clock import SystemClock
from services.common.kafka import KafkaUnavailable, describe_partitions, make_producer
from services.common.practice_config import (
    ConfigRejected,
    explain_validation_error,
    practice_config_table,
    validate_practice_config,
)
from services.common.publishing import publish_on_practice_partitions
from services.common.settings import KafkaSettings
from services.domain.codec import encode
from services.domain.render import (
    RenderedReminder,
    TemplateRejected,
    render_reminder,
    sample_appointment,
)

__all__ = ["dump_yaml", "load_document", "register"]

_LOAD_TIMEOUT = 30.0


# --------------------------------------------------------------------------- files


class _CoreLoader(yaml.SafeLoader):
    """YAML with the YAML 1.2 core schema's scalars.

    PyYAML follows YAML 1.1, where an unquoted ``18:00`` is the number 1080, ``01234567``
    an octal number, ``no``/``on`` booleans and ``2026-12-01`` a date. In a practice config
    those are times, AGB codes, type codes and text: here only ``true``/``false``, ``null``,
    plain decimal numbers without leading zeros and floats are not strings.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        keys: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in keys:
                raise yaml.constructor.ConstructorError(
                    None, None, f"the key {key!r} appears twice", key_node.start_mark
                )
            keys.add(key)
        return super().construct_mapping(node, deep=deep)


_REPLACED = {
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:timestamp",
}
_CoreLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in _REPLACED]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_CoreLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_CoreLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^[-+]?(?:0|[1-9][0-9]*)$"), list("-+0123456789")
)
_CoreLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9]+\.[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?$"),
    list("-+0123456789."),
)


def load_document(path: str) -> Any:
    """A YAML or JSON file as data; CliError with the line of the problem otherwise."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise CliError(f"{path}: no such file") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise CliError(f"{path}: cannot read the file: {exc}") from exc
    if file.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise CliError(f"{path}: not valid JSON: line {exc.lineno}: {exc.msg}") from exc
    try:
        return yaml.load(text, Loader=_CoreLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise CliError(f"{path}: not valid YAML: {where}{problem}") from exc


class _Dumper(yaml.SafeDumper):
    pass


_AMBIGUOUS = re.compile(
    r"^(?:[-+.:0-9_eE]+|y|n|yes|no|on|off|true|false|null|~|\d{4}-\d\d-\d\d.*)$", re.IGNORECASE
)


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    # Quote what another YAML reader could take for a number, time, date or boolean.
    style = '"' if _AMBIGUOUS.match(value) else None
    if "\n" in value:
        style = "|"
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def dump_yaml(data: Any) -> str:
    return yaml.dump(data, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)


def _config_for_output(config: PracticeConfig) -> dict[str, Any]:
    # Times as "18:00", the way they are written in a config file.
    data: dict[str, Any] = config.model_dump(mode="json")
    if "time" in data["send"]:
        data["send"]["time"] = data["send"]["time"][:5]
    if data.get("quiet_hours"):
        for edge in ("start", "end"):
            data["quiet_hours"][edge] = data["quiet_hours"][edge][:5]
    return data


# --------------------------------------------------------------------------- Kafka


async def _partition_count(settings: KafkaSettings, topic: str) -> int:
    try:
        counts = await describe_partitions(settings, [topic])
    except KafkaUnavailable as exc:
        raise CliError(str(exc), code=1) from exc
    count = counts.get(topic, 0)
    if count == 0:
        raise CliError(f"topic {topic} does not exist; run `reminders topics create` first", 1)
    return count


async def _publish(
    settings: KafkaSettings,
    topic: str,
    records: Sequence[tuple[str, str, bytes | None]],
) -> dict[str, int]:
    """Publish (practice_id, key, value) records on the practice's partition; key -> partition."""
    count = await _partition_count(settings, topic)
    producer = make_producer(settings)
    placed: dict[str, int] = {}
    try:
        await producer.start()
        placed = await publish_on_practice_partitions(producer, topic, count, records)
    except KafkaError as exc:
        message = f"cannot publish to {topic} at {settings.bootstrap_servers}: {exc}"
        raise CliError(message, 1) from exc
    finally:
        await producer.stop()
    return placed


@dataclass(frozen=True)
class _Current:
    config: PracticeConfig | None
    # The reason a record newer than ``config`` was rejected, if one was.
    rejected: str | None


async def _current_config(settings: KafkaSettings, practice_id: str) -> _Current:
    """The config in force for a practice: what every service's table holds right now."""
    topic = Topics(settings.topic_prefix).practice_config
    await _partition_count(settings, topic)
    rejected: dict[str, str] = {}

    def on_change(key: str, old: PracticeConfig | None, new: PracticeConfig | None) -> None:
        rejected.pop(key, None)

    async def on_invalid(record: Any, error: Any) -> None:
        if record.key == practice_id.encode("utf-8"):
            rejected[practice_id] = error.detail

    table = practice_config_table(
        settings, on_invalid=on_invalid, on_change=on_change, log_rejections=False
    )
    try:
        await table.start()
        await asyncio.wait_for(table.wait_loaded(), _LOAD_TIMEOUT)
        return _Current(table.get(practice_id), rejected.get(practice_id))
    except KafkaError as exc:
        raise CliError(f"cannot read {topic} at {settings.bootstrap_servers}: {exc}", 1) from exc
    except TimeoutError as exc:
        raise CliError(f"reading {topic} took longer than {_LOAD_TIMEOUT:.0f} s", 1) from exc
    finally:
        await table.stop()


def _describe(config: PracticeConfig) -> str:
    state = "on" if config.reminders_enabled else "off"
    return (
        f"practice {config.practice_id} ({config.name}), version {config.version}, "
        f"reminders {state}"
    )


# --------------------------------------------------------------------------- config


def _validated_file(path: str) -> PracticeConfig:
    data = load_document(path)
    try:
        return validate_practice_config(data)
    except ConfigRejected as exc:
        raise CliError(f"{path}: {exc.reason}") from exc


def _validate(args: argparse.Namespace) -> int:
    failed = 0
    for path in args.files:
        try:
            config = _validated_file(path)
        except CliError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
            continue
        types = len(config.appointment_types)
        print(f"ok: {path}: {_describe(config)}, {types} appointment types")
    return 2 if failed else 0


def _apply(args: argparse.Namespace) -> int:
    config = _validated_file(args.file)
    settings = settings_from(args).kafka
    topic = Topics(settings.topic_prefix).practice_config

    async def go() -> int:
        current = (await _current_config(settings, config.practice_id)).config
        new = config
        if current is not None:
            if current.model_dump(exclude={"version"}) == config.model_dump(exclude={"version"}):
                print(f"unchanged: {_describe(current)}; nothing published")
                return 0
            if config.version <= current.version:
                new = config.model_copy(update={"version": current.version + 1})
        placed = await _publish(settings, topic, [(new.practice_id, new.practice_id, encode(new))])
        print(f"published {_describe(new)} to {topic} partition {placed[new.practice_id]}")
        return 0

    return run_async(go())


def _show(args: argparse.Namespace) -> int:
    settings = settings_from(args).kafka
    practice_id = args.practice_id.strip()

    async def go() -> int:
        current = await _current_config(settings, practice_id)
        if current.rejected:
            print(
                f"note: a newer config for {practice_id} was rejected and is not in force: "
                f"{current.rejected}",
                file=sys.stderr,
            )
        if current.config is None:
            topic = Topics(settings.topic_prefix).practice_config
            raise CliError(
                f"no config for practice {practice_id} on {topic}: reminders are off until one "
                "is applied with `reminders config apply FILE`",
                1,
            )
        data = _config_for_output(current.config)
        if args.format == "json":
            print(json.dumps(data, indent=2, ensure_ascii=False))
        else:
            print(dump_yaml(data), end="")
        return 0

    return run_async(go())


def _switch(args: argparse.Namespace) -> int:
    settings = settings_from(args).kafka
    practice_id = args.practice_id.strip()
    enable = args.state == "on"
    topic = Topics(settings.topic_prefix).practice_config

    async def go() -> int:
        current = (await _current_config(settings, practice_id)).config
        if current is None:
            raise CliError(
                f"no config for practice {practice_id}; apply one first with "
                "`reminders config apply FILE`"
            )
        if current.reminders_enabled == enable:
            print(f"already {args.state}: {_describe(current)}; nothing published")
            return 0
        data = current.model_dump(mode="python")
        data.update(reminders_enabled=enable, version=current.version + 1)
        try:
            new = validate_practice_config(data)
        except ConfigRejected as exc:
            raise CliError(
                f"cannot switch reminders {args.state} for {practice_id}: {exc.reason}"
            ) from exc
        await _publish(settings, topic, [(practice_id, practice_id, encode(new))])
        print(f"reminders {args.state}: {_describe(new)}")
        return 0

    return run_async(go())


# --------------------------------------------------------------------------- preferences


def _preferences(data: Any, where: str) -> PatientPreferences:
    if not isinstance(data, dict):
        raise CliError(f"{where}: preferences are a mapping of fields, not {type(data).__name__}")
    record = dict(data)
    record.setdefault("updated_at", SystemClock().now().isoformat())
    try:
        return PatientPreferences.model_validate(record)
    except ValidationError as exc:
        raise CliError(f"{where}: {explain_validation_error(exc, PatientPreferences)}") from exc


def _set_preferences(args: argparse.Namespace) -> int:
    settings = settings_from(args).kafka
    topic = Topics(settings.topic_prefix).patient_preferences
    practice_id = args.practice.strip()
    patient_id = args.patient.strip()
    key = f"{practice_id}/{patient_id}"
    value: bytes | None
    if args.delete:
        given = [args.email, args.push_endpoint, args.p256dh, args.auth, args.lang, args.reminders]
        if any(v is not None for v in given):
            raise CliError("--delete publishes a tombstone; leave out the other preferences")
        # Check the ids as a record would, so the tombstone lands under a valid key.
        _preferences({"practice_id": practice_id, "patient_id": patient_id}, "preferences")
        value = None
    else:
        record: dict[str, Any] = {
            "practice_id": practice_id,
            "patient_id": patient_id,
            "reminders": (args.reminders or "on") == "on",
            "language": args.lang or "nl",
        }
        if args.email is not None:
            record["email"] = args.email
        push = (args.push_endpoint, args.p256dh, args.auth)
        if any(v is not None for v in push):
            if not all(v is not None for v in push):
                raise CliError("a push subscription needs --push-endpoint, --p256dh and --auth")
            record["push_subscriptions"] = [
                {"endpoint": args.push_endpoint, "keys": {"p256dh": args.p256dh, "auth": args.auth}}
            ]
        value = encode(_preferences(record, "preferences"))

    async def go() -> int:
        placed = await _publish(settings, topic, [(practice_id, key, value)])
        what = "deleted (no consent)" if value is None else "published"
        print(f"preferences {what}: {key} on {topic} partition {placed[key]}")
        return 0

    return run_async(go())


def _apply_preferences(args: argparse.Namespace) -> int:
    settings = settings_from(args).kafka
    topic = Topics(settings.topic_prefix).patient_preferences
    data = load_document(args.file)
    if isinstance(data, dict) and "preferences" in data:
        data = data["preferences"]
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not data:
        raise CliError(f"{args.file}: expected a list of preferences under `preferences:`")
    # All or nothing: every record is checked before the first is published.
    records = [_preferences(item, f"{args.file}: record {i + 1}") for i, item in enumerate(data)]

    async def go() -> int:
        await _publish(settings, topic, [(p.practice_id, p.key, encode(p)) for p in records])
        print(f"published {len(records)} preferences to {topic}")
        return 0

    return run_async(go())


# --------------------------------------------------------------------------- preview


def _format_preview(
    rendered: RenderedReminder, language: str, type_code: str, rendered_date: str
) -> str:
    rule = "-" * 72
    return "\n".join(
        [
            f"E-mail ({language}), type {type_code}, for a sample appointment on {rendered_date}",
            rule,
            f"Subject: {rendered.email.subject}",
            rule,
            rendered.email.text.rstrip("\n"),
            rule,
            "HTML part:",
            rendered.email.html.rstrip("\n"),
            rule,
            f"Push ({language})",
            f"Title: {rendered.push.title}",
            f"Body:  {rendered.push.body}",
            "",
        ]
    )


def _preview(args: argparse.Namespace) -> int:
    practice_id = args.practice_id.strip()
    type_code = args.type.strip()
    if not type_code:
        raise CliError("--type is empty; give the HIS appointment type code, e.g. --type C10")

    if args.file is not None:
        config = _validated_file(args.file)
        if config.practice_id != practice_id:
            raise CliError(
                f"{args.file} is the config of practice {config.practice_id}, not {practice_id}"
            )
    else:
        settings = settings_from(args).kafka
        found = asyncio.run(_current_config(settings, practice_id))
        if found.config is None:
            raise CliError(
                f"no config for practice {practice_id}; apply one first, or preview a file "
                "with --file"
            )
        config = found.config

    if type_code in config.meeting_rules.appointment_type_codes:
        raise CliError(
            f"type {type_code} is a meeting (meeting_rules.appointment_type_codes): it is never "
            "reminded, so there is nothing to preview"
        )
    if config.remind_only_types is not None and type_code not in config.remind_only_types:
        raise CliError(
            f"type {type_code} is not in remind_only_types: patients get no reminder for it"
        )
    if not config.phone:
        raise CliError(
            f"practice {practice_id} has no phone number; every reminder tells the patient to "
            "phone the practice for urgent matters, so add `phone` to the config first"
        )
    if type_code not in config.appointment_types:
        print(
            f"note: type {type_code} has no entry in appointment_types; the message says "
            "'uw afspraak' instead of the practice's text",
            file=sys.stderr,
        )
    if not config.reminders_enabled:
        print(
            f"note: reminders are off for {practice_id}; patients get this once they are "
            f"switched on with `reminders config reminders {practice_id} on`",
            file=sys.stderr,
        )
    appointment = sample_appointment(config, type_code, SystemClock().now())
    try:
        rendered = render_reminder(config, appointment, args.lang, logo_src="data")
    except TemplateRejected as exc:
        raise CliError(exc.reason) from exc
    if args.html_out is not None:
        Path(args.html_out).write_text(rendered.email.html, encoding="utf-8")
    when = appointment.start.strftime("%Y-%m-%d %H:%M")
    print(_format_preview(rendered, args.lang, type_code, when), end="")
    return 0


# --------------------------------------------------------------------------- parsers


class _Formatter(argparse.HelpFormatter):
    """Wraps descriptions; keeps text with explicit line breaks (the examples) as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


_FORMATTER = _Formatter


def register(sub: argparse._SubParsersAction[Any]) -> None:
    _register_config(sub)
    _register_preferences(sub)
    _register_preview(sub)


def _register_config(sub: argparse._SubParsersAction[Any]) -> None:
    config = sub.add_parser(
        "config",
        help="check, publish and show practice configs; switch reminders on or off",
        description=(
            "A practice config (YAML or JSON) holds the practice's phone number, when reminders "
            "go out, the texts per appointment type and the reminders switch. It is checked "
            "before it is published to practice.config.v1; the services pick it up without a "
            "restart. An invalid config is refused with the reason, and the practice's last "
            "valid config stays in force."
        ),
        epilog=(
            "examples:\n"
            "  reminders config validate deploy/examples/practice-01999001-de-linde.yaml\n"
            "  reminders config apply deploy/examples/practice-01999001-de-linde.yaml\n"
            "  reminders config show 01999001\n"
            "  reminders config reminders 01999001 off"
        ),
        formatter_class=_FORMATTER,
    )
    csub = config.add_subparsers(dest="config_command", metavar="ACTION", required=True)

    validate = csub.add_parser(
        "validate",
        help="check config files without publishing them",
        description=(
            "Check one or more practice config files (YAML or JSON) exactly as the services "
            "will: required fields, phone number, time zone, times, channels, e-mail addresses, "
            "meeting rules and templates (compiled and test-rendered). Prints one line per "
            "file; exits 2 if any file is invalid. Needs no Kafka."
        ),
        formatter_class=_FORMATTER,
    )
    validate.add_argument("files", nargs="+", metavar="FILE", help="config file (.yaml or .json)")
    validate.set_defaults(handler=_validate)

    apply = csub.add_parser(
        "apply",
        help="check a config file and publish it to practice.config.v1",
        description=(
            "Check the config file and publish it under the practice id, on the practice's "
            "partition. Nothing is published if the file is invalid (exit 2). If the file's "
            "version is not above the version in force, the next version number is used; an "
            "unchanged config is not published again."
        ),
        formatter_class=_FORMATTER,
    )
    apply.add_argument("file", metavar="FILE", help="config file (.yaml or .json)")
    add_kafka_options(apply)
    apply.set_defaults(handler=_apply)

    show = csub.add_parser(
        "show",
        help="print the config in force for a practice",
        description=(
            "Print the practice's config as the services hold it now (the last valid one), "
            "with every default filled in. Exits 1 if the practice has no config."
        ),
        formatter_class=_FORMATTER,
    )
    show.add_argument("practice_id", metavar="PRACTICE", help="practice id (AGB code)")
    show.add_argument("--format", choices=["yaml", "json"], default="yaml", help="default: yaml")
    add_kafka_options(show)
    show.set_defaults(handler=_show)

    switch = csub.add_parser(
        "reminders",
        help="switch reminders on or off for a practice",
        description=(
            "Switch the practice's reminders on or off: publishes the config in force with "
            "reminders_enabled changed and the next version number. Off also stops reminders "
            "that are already scheduled. Switching on needs a phone number (and a sender for "
            "e-mail) in the config."
        ),
        formatter_class=_FORMATTER,
    )
    switch.add_argument("practice_id", metavar="PRACTICE", help="practice id (AGB code)")
    switch.add_argument("state", choices=["on", "off"], metavar="on|off")
    add_kafka_options(switch)
    switch.set_defaults(handler=_switch)


def _register_preferences(sub: argparse._SubParsersAction[Any]) -> None:
    prefs = sub.add_parser(
        "preferences",
        help="publish patient preferences (consent, channels) for tests and demos",
        description=(
            "Publish patient preferences to patient.preferences.v1 under the key "
            "PRACTICE/PATIENT on the practice's partition, as the patient portal does. "
            "A patient without preferences gets no reminders."
        ),
        epilog=(
            "examples:\n"
            "  reminders preferences set --practice 01999001 --patient pt-3f9a1c "
            "--email patient@example.org\n"
            "  reminders preferences set --practice 01999001 --patient pt-3f9a1c --delete\n"
            "  reminders preferences apply deploy/examples/preferences.yaml"
        ),
        formatter_class=_FORMATTER,
    )
    psub = prefs.add_subparsers(dest="preferences_command", metavar="ACTION", required=True)

    put = psub.add_parser(
        "set",
        help="publish one patient's preferences (or delete them)",
        description=(
            "Publish one patient's preferences. Reminders default to on and the language to "
            "nl. --delete publishes a tombstone: the patient then counts as not consenting."
        ),
        formatter_class=_FORMATTER,
    )
    put.add_argument("--practice", required=True, metavar="PRACTICE", help="practice id")
    put.add_argument(
        "--patient", required=True, metavar="PATIENT", help="pseudonymous portal id (never a BSN)"
    )
    put.add_argument("--email", metavar="ADDRESS", help="e-mail address for reminders")
    put.add_argument("--push-endpoint", metavar="URL", help="Web Push subscription endpoint")
    put.add_argument("--p256dh", metavar="KEY", help="the subscription's p256dh key")
    put.add_argument("--auth", metavar="SECRET", help="the subscription's auth secret")
    put.add_argument("--lang", choices=["nl", "en"], help="message language (default: nl)")
    put.add_argument(
        "--reminders", choices=["on", "off"], help="consent to reminders (default: on)"
    )
    put.add_argument("--delete", action="store_true", help="publish a tombstone (no consent)")
    add_kafka_options(put)
    put.set_defaults(handler=_set_preferences)

    apply = psub.add_parser(
        "apply",
        help="publish the preferences in a YAML or JSON file",
        description=(
            "Publish every record listed under `preferences:` in the file. All records are "
            "checked first; if one is invalid nothing is published. A missing updated_at is "
            "set to now."
        ),
        formatter_class=_FORMATTER,
    )
    apply.add_argument("file", metavar="FILE", help="preferences file (.yaml or .json)")
    add_kafka_options(apply)
    apply.set_defaults(handler=_apply_preferences)


def _register_preview(sub: argparse._SubParsersAction[Any]) -> None:
    preview = sub.add_parser(
        "preview",
        help="show the reminder e-mail and push a patient would get",
        description=(
            "Render the reminder e-mail (subject, text, HTML) and push message for a sample "
            "appointment of type CODE on the next working day at 09:30, with the practice's "
            "config in force (or the config in --file), so you see what patients get before "
            "switching reminders on. The line about urgent questions is always added by the "
            "system."
        ),
        epilog="example:\n  reminders preview 01999001 --type C10 --lang en",
        formatter_class=_FORMATTER,
    )
    preview.add_argument("practice_id", metavar="PRACTICE", help="practice id (AGB code)")
    preview.add_argument(
        "--type", required=True, metavar="CODE", help="the HIS appointment type code"
    )
    preview.add_argument("--lang", choices=["nl", "en"], default="nl", help="default: nl")
    preview.add_argument(
        "--file", metavar="FILE", help="preview this config file instead of the one in force"
    )
    preview.add_argument(
        "--html-out", metavar="PATH", help="also write the HTML part to PATH (open it in a browser)"
    )
    add_kafka_options(preview)
    preview.set_defaults(handler=_preview)
