"""Least-privilege Kafka ACLs: one principal per service, door and HIS connector.

`acl_plan` derives every ACL from the settings (topic prefix, group ids), so the plan
follows what the services actually use: each reads its inputs and the DLQs of what it
consumes, writes its outputs and those DLQs, commits as its own group, and (transactional
services) owns the transactional ids prefixed by its group id. Only the notifier and
practice-admin may read `patient.preferences.v1`; an HIS connector may write
`his.appointments.v1` and nothing else.

aiokafka has the CreateAcls/DescribeAcls wire requests but no admin methods for them:
`apply_acls` sends them itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Literal

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.protocol.admin import CreateAclsRequest, DescribeAclsRequest

from schemas.topics import Topics
from services.common.settings import Settings

__all__ = [
    "ROLES",
    "Acl",
    "AclApplyResult",
    "acl_plan",
    "apply_acls",
    "describe_acls",
]

ResourceType = Literal["topic", "group", "transactional_id", "cluster"]
Pattern = Literal["literal", "prefixed"]
Operation = Literal["read", "write", "describe", "idempotent_write"]

# Kafka's enum codes (org.apache.kafka.common.resource / acl).
_RESOURCE: Final[dict[str, int]] = {"topic": 2, "group": 3, "cluster": 4, "transactional_id": 5}
_RESOURCE_NAME: Final[dict[int, str]] = {v: k for k, v in _RESOURCE.items()}
_PATTERN: Final[dict[str, int]] = {"literal": 3, "prefixed": 4}
_PATTERN_NAME: Final[dict[int, str]] = {v: k for k, v in _PATTERN.items()}
_OPERATION: Final[dict[str, int]] = {
    "read": 3,
    "write": 4,
    "describe": 8,
    "idempotent_write": 12,
}
_OPERATION_NAME: Final[dict[int, str]] = {v: k for k, v in _OPERATION.items()}
_ANY = 1
_ALLOW = 3
_CLUSTER = "kafka-cluster"

# The principals of the plan, in order; the default principal name is the role's name.
ROLES: Final[tuple[str, ...]] = (
    "booking-events",
    "scheduler",
    "notifier",
    "insights",
    "practice-admin",
    "his-gateway",
    "his-connector",
)


@dataclass(frozen=True, order=True)
class Acl:
    """One ALLOW binding: principal may do operation on the resource (from any host)."""

    principal: str  # "User:notifier"
    resource_type: ResourceType
    pattern: Pattern
    name: str
    operation: Operation

    def __str__(self) -> str:
        resource = f"{self.resource_type}:{self.name}" + ("*" if self.pattern == "prefixed" else "")
        return f"{self.principal:<22} ALLOW {self.operation.upper():<16} {resource}"


def _topic(principal: str, name: str, *operations: Operation) -> list[Acl]:
    return [Acl(principal, "topic", "literal", name, op) for op in operations]


def acl_plan(
    settings: Settings, principals: Mapping[str, str] | None = None
) -> dict[str, list[Acl]]:
    """role -> its ACLs. `principals` maps a role to its SCRAM user name (default: the role)."""
    names = {role: (principals or {}).get(role, role) for role in ROLES}
    prefix = settings.kafka.topic_prefix
    t = Topics(prefix)
    dlq = Topics.dlq
    plan: dict[str, list[Acl]] = {}

    def service(
        role: str,
        group: str,
        *,
        reads: Iterable[str],
        writes: Iterable[str],
        consumes: Iterable[str],
        transactional: bool,
    ) -> list[Acl]:
        p = f"User:{names[role]}"
        acls: list[Acl] = [Acl(p, "group", "literal", group, "read")]
        for topic in reads:
            acls += _topic(p, topic, "read")
        for topic in writes:
            acls += _topic(p, topic, "write")
        # A record it cannot take goes to the DLQ of that topic; reading the DLQ tells a new
        # owner what an earlier one parked. Its records are copies of what it already reads.
        for topic in consumes:
            acls += _topic(p, dlq(topic), "read", "write")
        if transactional:
            acls.append(Acl(p, "transactional_id", "prefixed", group, "write"))
        acls.append(Acl(p, "cluster", "literal", _CLUSTER, "idempotent_write"))
        return acls

    booking = f"{prefix}{settings.booking_events.group_id}"
    plan["booking-events"] = service(
        "booking-events",
        booking,
        reads=[t.his_appointments, t.practice_config, t.appointments],
        writes=[t.appointments],
        consumes=[t.his_appointments, t.practice_config],
        transactional=True,
    )
    scheduler = f"{prefix}{settings.scheduler.group_id}"
    plan["scheduler"] = service(
        "scheduler",
        scheduler,
        reads=[t.appointments, t.practice_config, t.reminders_fired],
        writes=[t.reminders_due, t.reminders_fired],
        consumes=[t.appointments, t.practice_config],
        transactional=True,
    )
    notifier = f"{prefix}{settings.notifier.group_id}"
    plan["notifier"] = service(
        "notifier",
        notifier,
        reads=[
            t.reminders_due,
            t.appointments,
            t.patient_preferences,
            t.practice_config,
            t.outcomes,
        ],
        writes=[t.outcomes],
        consumes=[t.reminders_due, t.appointments, t.patient_preferences, t.practice_config],
        transactional=True,
    )
    insights = f"{prefix}{settings.insights.group_id}"
    plan["insights"] = service(
        "insights",
        insights,
        reads=[t.outcomes, t.appointments],
        writes=[],
        consumes=[t.outcomes],  # the scheduler parks invalid appointments
        transactional=False,
    )
    p = f"User:{names['practice-admin']}"
    plan["practice-admin"] = [
        Acl(p, "group", "prefixed", f"{prefix}practice-admin", "read"),
        *_topic(p, t.practice_config, "read", "write"),
        *_topic(p, t.patient_preferences, "read", "write"),
        *_topic(p, t.outcomes, "read"),
        Acl(p, "cluster", "literal", _CLUSTER, "idempotent_write"),
    ]
    p = f"User:{names['his-gateway']}"
    plan["his-gateway"] = [
        *_topic(p, t.his_appointments, "write"),
        Acl(p, "cluster", "literal", _CLUSTER, "idempotent_write"),
    ]
    p = f"User:{names['his-connector']}"
    # Write on the topic is all an idempotent producer needs since Kafka 3.0 (KIP-679).
    plan["his-connector"] = _topic(p, t.his_appointments, "write")
    return plan


async def describe_acls(admin: AIOKafkaAdminClient, principal: str) -> set[Acl]:
    """The ALLOW bindings the cluster holds for a principal (those this module can name)."""
    request = DescribeAclsRequest(
        resource_type=_ANY,
        resource_name=None,  # null: any name
        resource_pattern_type_filter=_ANY,
        principal=principal,
        host=None,
        operation=_ANY,
        permission_type=_ALLOW,
    )
    response = await admin._send_request(request)  # no public method in aiokafka
    if response.error_code:
        raise KafkaError(
            f"DescribeAcls failed: error {response.error_code} {response.error_message}"
        )
    found: set[Acl] = set()
    for rtype, rname, ptype, acls in response.resources:
        for acl_principal, _host, operation, _permission in acls:
            kind, pattern, op = (
                _RESOURCE_NAME.get(rtype),
                _PATTERN_NAME.get(ptype),
                _OPERATION_NAME.get(operation),
            )
            if kind is None or pattern is None or op is None:
                continue
            found.add(Acl(acl_principal, kind, pattern, rname, op))  # type: ignore[arg-type]
    return found


@dataclass
class AclApplyResult:
    added: list[Acl]
    present: list[Acl]


async def apply_acls(admin: AIOKafkaAdminClient, acls: Iterable[Acl]) -> AclApplyResult:
    """Create the bindings that are missing; those present are left alone (idempotent)."""
    wanted = sorted(set(acls))
    existing: set[Acl] = set()
    for principal in sorted({a.principal for a in wanted}):
        existing |= await describe_acls(admin, principal)
    result = AclApplyResult(added=[], present=[])
    for acl in wanted:
        if acl in existing:
            result.present.append(acl)
            continue
        request = CreateAclsRequest(
            resource_type=_RESOURCE[acl.resource_type],
            resource_name=acl.name,
            resource_pattern_type_filter=_PATTERN[acl.pattern],
            principal=acl.principal,
            host="*",
            operation=_OPERATION[acl.operation],
            permission_type=_ALLOW,
        )
        response = await admin._send_request(request)
        for error_code, error_message in response.creation_responses:
            if error_code:
                raise KafkaError(f"CreateAcls {acl} failed: error {error_code} {error_message}")
        result.added.append(acl)
    return result
