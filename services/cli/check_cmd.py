"""``reminders check``: one line for each thing the settings name, exit 0 only when all answer.

Brokers, every topic with the configured partition count, SMTP (connect, TLS, AUTH),
the push key, the database and its schema. A line never carries a password: the
messages come from the same diagnoses the services log.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from dataclasses import dataclass
from typing import Any, Literal

from aiokafka.errors import KafkaError

from schemas.topics import Topics
from services.cli._base import add_kafka_options, run_async, settings_from
from services.common.db import check_database
from services.common.kafka import admin_client, explain_unreachable
from services.common.settings import Settings
from services.notifier.app import smtp_options, vapid_options
from services.notifier.dkim import dkim_check
from services.notifier.email import SmtpPool
from services.notifier.push import WebPushSender

__all__ = ["CheckLine", "register", "run_checks"]

_KAFKA_SECONDS = 20.0
_UNKNOWN_TOPIC = 3
_TOPIC_AUTHORIZATION_FAILED = 29


@dataclass(frozen=True)
class CheckLine:
    status: Literal["ok", "FAIL", "skip"]
    what: str
    text: str

    @property
    def passed(self) -> bool:
        return self.status != "FAIL"

    def __str__(self) -> str:
        return f"{self.status:<4}  {self.what:<9} {self.text}"


def register(sub: argparse._SubParsersAction[Any]) -> None:
    check = sub.add_parser(
        "check",
        help="check brokers, topics, SMTP, the push key and the database (one line each)",
        description=(
            "Tell, one line each, whether what the settings name answers: the Kafka brokers, "
            "every topic with REMINDERS_KAFKA__PARTITIONS partitions, the mail server "
            "(connect, TLS, AUTH), the Web Push key, the database and its schema. Exit 0 only "
            "when all pass. No secret is printed."
        ),
    )
    add_kafka_options(check)
    check.set_defaults(handler=_check)


def _check(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    # The diagnoses are printed here; the loggers behind them would say it twice.
    for name in ("services.notifier.mail", "aiokafka"):
        logging.getLogger(name).setLevel(logging.CRITICAL)

    async def go() -> int:
        lines = await run_checks(settings)
        for line in lines:
            print(line, flush=True)
        return 0 if all(line.passed for line in lines) else 1

    return run_async(go())


async def run_checks(settings: Settings) -> list[CheckLine]:
    lines = await _kafka(settings)
    lines.append(await _smtp(settings))
    status, text = dkim_check(settings)
    lines.append(CheckLine(status, "dkim", text))
    lines.append(_push(settings))
    lines.append(await _database(settings))
    return lines


async def _kafka(settings: Settings) -> list[CheckLine]:
    kafka = settings.kafka
    names = [spec.name for spec in Topics(kafka.topic_prefix).specs()]
    admin = admin_client(kafka)
    try:
        async with asyncio.timeout(_KAFKA_SECONDS):
            await admin.start()
            cluster = await admin.describe_cluster()
            described = await admin.describe_topics(names)
    except (KafkaError, OSError, TimeoutError) as exc:
        reason = await explain_unreachable(kafka, exc)
        return [
            CheckLine("FAIL", "kafka", reason),
            CheckLine("FAIL", "topics", "not checked: Kafka does not answer"),
        ]
    finally:
        await admin.close()
    brokers = len(cluster.get("brokers", []))
    who = f", as {kafka.sasl_username!r}" if kafka.sasl_username else ""
    lines = [
        CheckLine(
            "ok",
            "kafka",
            f"{kafka.bootstrap_servers} answers ({brokers} broker{'s' * (brokers != 1)}, "
            f"{kafka.security_protocol}{who})",
        )
    ]
    by_name = {t["topic"]: t for t in described}
    for name in names:
        topic = by_name.get(name)
        code = topic["error_code"] if topic is not None else _UNKNOWN_TOPIC
        count = len(topic["partitions"]) if topic is not None else 0
        if code == _TOPIC_AUTHORIZATION_FAILED:
            lines.append(
                CheckLine("FAIL", "topic", f"{name}: this principal may not describe it (ACLs)")
            )
        elif code == _UNKNOWN_TOPIC or count == 0:
            lines.append(
                CheckLine("FAIL", "topic", f"{name}: missing; run `reminders topics create`")
            )
        elif count != kafka.partitions:
            lines.append(
                CheckLine(
                    "FAIL",
                    "topic",
                    f"{name}: {count} partitions, but REMINDERS_KAFKA__PARTITIONS="
                    f"{kafka.partitions}; all topics and the setting must agree",
                )
            )
        else:
            lines.append(CheckLine("ok", "topic", f"{name}: {count} partitions"))
    return lines


async def _smtp(settings: Settings) -> CheckLine:
    try:
        options = smtp_options(settings.smtp)
    except ValueError as exc:
        return CheckLine("FAIL", "smtp", str(exc))
    pool = SmtpPool(options)
    try:
        await pool.start()
        problem, text = await pool.probe()
    finally:
        await pool.close()
    return CheckLine("ok" if problem is None else "FAIL", "smtp", text)


def _push(settings: Settings) -> CheckLine:
    vapid = vapid_options(settings.push)
    if vapid is None:
        return CheckLine(
            "skip", "push", "no REMINDERS_PUSH__VAPID_PRIVATE_KEY: Web Push is off, e-mail only"
        )
    try:
        sender = WebPushSender(vapid)
    except ValueError as exc:
        return CheckLine("FAIL", "push", f"REMINDERS_PUSH__VAPID_*: {exc}")
    return CheckLine(
        "ok",
        "push",
        f"VAPID key loads; applicationServerKey {sender.application_server_key[:16]}...",
    )


async def _database(settings: Settings) -> CheckLine:
    ok, text = await check_database(settings.database)
    return CheckLine("ok" if ok else "FAIL", "database", text.removeprefix("database "))
