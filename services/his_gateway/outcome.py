"""FHIR R4 ``OperationOutcome``: how the gateway says what is wrong with a request.

Every refused event gets one issue per problem; ``details.coding`` carries the reason code
of the DLQ (system :data:`REASON_SYSTEM`), so a vendor's error handling can switch on the
same codes whether a record was refused at the door or dead-lettered later.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Final

from services.his_gateway.validation import Problem

__all__ = [
    "REASON_SYSTEM",
    "issue",
    "operation_outcome",
    "outcome_for_problems",
    "status_for_problems",
]

REASON_SYSTEM: Final = "urn:e-afspraken:reason"

# FHIR issue-type codes (http://hl7.org/fhir/issue-type) for the DLQ's reasons.
_ISSUE_CODE: Final = {
    "no_value": "required",
    "not_json": "structure",
    "not_an_appointment": "structure",
    "missing_field": "required",
    "bsn_like_patient_id": "value",
    "empty_practice_id": "value",
    "unknown_status": "code-invalid",
    "time_without_offset": "value",
    "end_before_start": "invariant",
    "invalid_field": "value",
}
# The body cannot be read as the resource at all: 400; otherwise it was read and broke a
# rule: 422 (FHIR's convention for update).
_UNREADABLE: Final = frozenset({"no_value", "not_json", "not_an_appointment"})


def issue(
    code: str,
    text: str,
    *,
    reason: str | None = None,
    expression: str | None = None,
    severity: str = "error",
) -> dict[str, Any]:
    entry: dict[str, Any] = {"severity": severity, "code": code, "diagnostics": text}
    if reason is not None:
        entry["details"] = {
            "coding": [{"system": REASON_SYSTEM, "code": reason}],
            "text": text,
        }
    if expression:
        entry["expression"] = [expression]
    return entry


def operation_outcome(issues: Iterable[dict[str, Any]]) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": list(issues)}


def outcome_for_problems(found: Iterable[Problem], *, prefix: str = "") -> dict[str, Any]:
    """One issue per problem; ``prefix`` names the event in a batch (``[3]``)."""
    issues = []
    for problem in found:
        where = problem.field
        expression = f"{prefix}.{where}" if prefix and where else (where or prefix or None)
        issues.append(
            issue(
                _ISSUE_CODE.get(problem.reason, "invalid"),
                problem.detail,
                reason=problem.reason,
                expression=expression,
            )
        )
    return operation_outcome(issues)


def status_for_problems(found: Iterable[Problem]) -> int:
    return 400 if any(p.reason in _UNREADABLE for p in found) else 422
