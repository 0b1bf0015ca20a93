"""The reason codes of the dead-letter topics (the ``error-reason`` header): one contract.

The code, the DLQ headers, the HIS gateway's OperationOutcome and the AsyncAPI document
use these names; they are extended, never renamed. The outcome reasons of
``notifications.outcomes.v1`` are ``schemas.models.OutcomeReason``.
"""

from __future__ import annotations

from typing import Final

__all__ = ["DEAD_LETTER_REASONS", "HIS_EVENT_REASONS", "RECORD_REASONS"]

# What the one HIS parser refuses (his.appointments.v1.dlq.v1 and the gateway's 4xx), in
# the order that names the fault that matters most when a record has several: privacy
# first, then what a connector developer most likely got wrong.
HIS_EVENT_REASONS: Final[dict[str, str]] = {
    "no_value": "a record without a value (his.appointments.v1 has no tombstones)",
    "not_json": "not a JSON object",
    "not_an_appointment": "FHIR, but resourceType is not Appointment",
    "bsn_like_patient_id": "the patient id looks like a BSN, or the patient is named by BSN",
    "empty_practice_id": "the practice id is empty",
    "unknown_status": "a status that is not a FHIR R4 Appointment status",
    "time_without_offset": "a time without a UTC offset",
    "end_before_start": "end is not after start",
    "missing_field": "a required field is absent",
    "invalid_field": "a field has the wrong type or shape",
    "key_mismatch": "the record key is not the event's practice id",
    "wrong_partition": "the record is not on its practice's partition",
    "invalid_practice_id": "the practice id is not an AGB code (8 digits)",
    "duplicate_key": "a JSON object names the same key twice",
    "control_character": (
        "a text holds a control, line-separator, direction or invisible character, or an "
        "RFC 2047 encoded word"
    ),
    "time_out_of_range": "a time outside 2000-01-01 .. 2100-01-01 (UTC)",
    "number_out_of_range": "an integer beyond 64 bits, or a version that is not ASCII digits",
}

# What the internal topics' readers and the compacted tables refuse.
RECORD_REASONS: Final[dict[str, str]] = {
    "empty": "a record without a value where a value is required",
    "invalid": "the record does not match its schema",
    "no_key": "a record without a key on a keyed topic",
    "bad_key": "the key is not of the topic's form",
    "invalid_config": "a practice configuration that fails validation",
    "processing_failed": (
        "accepted at the edge, but a later stage raised on it (the exception class and a "
        "scrubbed message are in error-detail)"
    ),
}

DEAD_LETTER_REASONS: Final[dict[str, str]] = {**HIS_EVENT_REASONS, **RECORD_REASONS}
