"""JSON encoding of records and keys, and decoding with a reason on failure."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError

__all__ = ["DecodeError", "decode", "encode", "validation_reason"]

M = TypeVar("M", bound=BaseModel)


class DecodeError(ValueError):
    """A record that cannot be accepted; ``reason`` is short, ``detail`` explains."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def encode(record: BaseModel) -> bytes:
    return record.model_dump_json(exclude_none=False).encode("utf-8")


def validation_reason(exc: ValidationError) -> str:
    """A readable one-line reason that names fields, never echoing the values."""
    parts = []
    for error in exc.errors(include_url=False, include_input=False):
        location = ".".join(str(p) for p in error["loc"]) or "record"
        parts.append(f"{location}: {error['msg']}")
    return "; ".join(parts)[:1000]


def decode(model: type[M], value: bytes | None) -> M:
    if value is None:
        raise DecodeError("empty", "the record has no value")
    try:
        return model.model_validate_json(value)
    except ValidationError as exc:
        kinds = {e["type"] for e in exc.errors()}
        reason = "not_json" if kinds & {"json_invalid", "json_type"} else "invalid"
        raise DecodeError(reason, validation_reason(exc)) from exc
