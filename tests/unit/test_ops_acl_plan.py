"""`reminders acl plan`: least privilege per principal, derived from the settings."""

from __future__ import annotations

import pytest

from schemas.topics import Topics
from services.cli import main
from services.common.kafka_acl import ROLES, Acl, acl_plan
from services.common.settings import KafkaSettings, Settings


def _plan(prefix: str = "") -> dict[str, list[Acl]]:
    return acl_plan(Settings(kafka=KafkaSettings(topic_prefix=prefix)))


def test_an_his_connector_may_write_his_appointments_and_nothing_else() -> None:
    assert _plan()["his-connector"] == [
        Acl("User:his-connector", "topic", "literal", "his.appointments.v1", "write")
    ]


def test_only_the_notifier_and_practice_admin_read_patient_preferences() -> None:
    plan = _plan()
    readers = {
        role
        for role, acls in plan.items()
        for acl in acls
        if acl.name == "patient.preferences.v1" and acl.operation == "read"
    }
    assert readers == {"notifier", "practice-admin"}
    writers = {
        role
        for role, acls in plan.items()
        for acl in acls
        if acl.name == "patient.preferences.v1" and acl.operation == "write"
    }
    assert writers == {"practice-admin"}


@pytest.mark.parametrize(
    ("role", "group"),
    [
        ("booking-events", "booking-events"),
        ("scheduler", "reminder-scheduler"),
        ("notifier", "notifier"),
    ],
)
def test_transactional_services_own_ids_prefixed_by_their_group(role: str, group: str) -> None:
    acls = set(_plan("acc.")[role])
    principal = f"User:{role}"
    assert Acl(principal, "transactional_id", "prefixed", f"acc.{group}", "write") in acls
    assert Acl(principal, "group", "literal", f"acc.{group}", "read") in acls
    assert Acl(principal, "cluster", "literal", "kafka-cluster", "idempotent_write") in acls
    assert all(a.name.startswith("acc.") for a in acls if a.resource_type in ("topic", "group")), (
        "every topic and group carries the prefix"
    )


def test_every_service_writes_the_dlqs_of_what_it_consumes() -> None:
    t = Topics("")
    plan = _plan()
    consumed = {
        "booking-events": [t.his_appointments, t.practice_config],
        "scheduler": [t.appointments, t.practice_config],
        "notifier": [t.reminders_due, t.appointments, t.patient_preferences, t.practice_config],
    }
    for role, topics in consumed.items():
        writes = {a.name for a in plan[role] if a.operation == "write"}
        assert {Topics.dlq(topic) for topic in topics} <= writes


def test_insights_and_the_gateway_stay_in_their_lane() -> None:
    plan = _plan()
    assert {(a.name, a.operation) for a in plan["insights"] if a.resource_type == "topic"} == {
        ("notifications.outcomes.v1", "read"),
        ("appointments.v1", "read"),
        # The one reader of outcomes parks those it cannot read (and reads what it parked).
        ("notifications.outcomes.v1.dlq.v1", "read"),
        ("notifications.outcomes.v1.dlq.v1", "write"),
    }
    assert {(a.name, a.operation) for a in plan["his-gateway"]} == {
        ("his.appointments.v1", "write"),
        ("kafka-cluster", "idempotent_write"),
    }


def test_plan_prints_every_principal_and_maps_user_names(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["acl", "plan", "--principal", "notifier=svc-notifier"]) == 0
    out = capsys.readouterr().out
    for role in ROLES:
        assert f"# {role}: " in out
    assert "User:svc-notifier" in out and "User:notifier " not in out
    assert "User:svc-notifier      ALLOW READ             topic:patient.preferences.v1" in out


def test_a_bad_principal_mapping_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["acl", "plan", "--principal", "mailer=x"]) == 2
    assert capsys.readouterr().err.startswith("error: --principal wants ROLE=USER")
