"""``reminders acl plan|apply``: least-privilege Kafka ACLs, one principal per service."""

from __future__ import annotations

import argparse
from typing import Any

from aiokafka.errors import KafkaError

from services.cli._base import CliError, add_kafka_options, run_async, settings_from
from services.common.kafka import admin_client, explain_unreachable
from services.common.kafka_acl import ROLES, acl_plan, apply_acls

_WHAT = {
    "booking-events": "HIS events in, appointment state out (transactional)",
    "scheduler": "appointments in, due reminders out (transactional)",
    "notifier": "due reminders, preferences (e-mail addresses) in, outcomes out (transactional)",
    "insights": "outcomes and appointments in, the follow-up projection (database) out",
    "practice-admin": "practice config and patient preferences out; reads them and outcomes",
    "his-gateway": "HIS events in over HTTP, his.appointments.v1 out (idempotent)",
    "his-connector": "an HIS vendor's Kafka client: his.appointments.v1 out, nothing else",
}


def register(sub: argparse._SubParsersAction[Any]) -> None:
    acl = sub.add_parser(
        "acl",
        help="least-privilege Kafka ACLs per principal (plan, apply)",
        description=(
            "One principal per service, per door (practice-admin, his-gateway) and for HIS "
            "connectors, each with only the ACLs it needs. The broker needs an authorizer "
            "(StandardAuthorizer) and apply needs a principal allowed to alter ACLs."
        ),
    )
    asub = acl.add_subparsers(dest="acl_command", metavar="ACTION", required=True)
    for name, text in (
        ("plan", "print the ACLs of every principal"),
        ("apply", "create the ACLs that are missing (idempotent)"),
    ):
        cmd = asub.add_parser(name, help=text)
        add_kafka_options(cmd)
        cmd.add_argument(
            "--principal",
            action="append",
            default=[],
            metavar="ROLE=USER",
            help=f"the SCRAM user of a role (default: the role's name); roles: {', '.join(ROLES)}",
        )
        cmd.add_argument(
            "--role",
            action="append",
            choices=ROLES,
            default=None,
            help="only this role (repeatable; default: all)",
        )
        cmd.set_defaults(handler=_plan if name == "plan" else _apply)


def _principals(args: argparse.Namespace) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for item in args.principal:
        role, sep, user = item.partition("=")
        if not sep or role not in ROLES or not user.strip():
            raise CliError(f"--principal wants ROLE=USER with ROLE one of {', '.join(ROLES)}")
        mapping[role] = user.strip()
    return mapping


def _selected(args: argparse.Namespace) -> dict[str, list[Any]]:
    plan = acl_plan(settings_from(args), _principals(args))
    roles = args.role or list(ROLES)
    return {role: plan[role] for role in ROLES if role in roles}


def _plan(args: argparse.Namespace) -> int:
    for role, acls in _selected(args).items():
        print(f"# {role}: {_WHAT[role]}")
        for acl in acls:
            print(acl)
        print()
    return 0


def _apply(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    plan = _selected(args)

    async def go() -> int:
        admin = admin_client(settings.kafka)
        try:
            await admin.start()
            for role, acls in plan.items():
                result = await apply_acls(admin, acls)
                for acl in result.added:
                    print(f"added    {acl}")
                print(f"# {role}: {len(result.added)} added, {len(result.present)} present")
        except KafkaError as exc:
            if "authoriz" in type(exc).__name__.lower() or "31" in str(exc):
                raise CliError(
                    f"Kafka refused to change ACLs for {settings.kafka.sasl_username!r}: run "
                    "acl apply as a principal with ALTER on the cluster (a super user)",
                    code=1,
                ) from None
            raise CliError(await explain_unreachable(settings.kafka, exc), code=1) from None
        finally:
            await admin.close()
        return 0

    return run_async(go())
