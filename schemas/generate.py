"""Write the JSON Schema files beside the models, and check them for drift."""

from __future__ import annotations

import json
from pathlib import Path

from schemas.models import model_json_schemas

__all__ = ["SCHEMA_DIR", "drifted", "render", "write"]

SCHEMA_DIR = Path(__file__).parent / "json"


def render() -> dict[str, str]:
    return {
        name: json.dumps(schema, indent=2, ensure_ascii=False, sort_keys=True) + "\n"
        for name, schema in model_json_schemas().items()
    }


def write(directory: Path = SCHEMA_DIR) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


def drifted(directory: Path = SCHEMA_DIR) -> list[str]:
    """Names of schema files that are missing or differ from the models."""
    out = []
    for name, text in render().items():
        path = directory / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            out.append(name)
    return out


if __name__ == "__main__":
    for p in write():
        print(p)
