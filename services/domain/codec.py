"""JSON encoding of records and keys, and decoding with a reason on failure."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

__all__ = [
    "DecodeError",
    "DuplicateKey",
    "decode",
    "encode",
    "no_duplicate_keys",
    "validation_reason",
]

M = TypeVar("M", bound=BaseModel)


class DecodeError(ValueError):
    """A record that cannot be accepted; ``reason`` is short, ``detail`` explains."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class DuplicateKey(ValueError):
    """A JSON object names a key twice; ``str()`` is the key."""


def no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook`` for :func:`json.loads`: refuse an object with a key twice
    (``{"id": "123456782", "id": "pt-1"}``: the last one would win silently)."""
    document = dict(pairs)
    if len(document) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKey(key)
            seen.add(key)
    return document


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
