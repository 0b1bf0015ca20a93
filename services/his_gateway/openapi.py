"""The gateway's OpenAPI document, as served on ``/openapi.json``, written to a file.

    python -m services.his_gateway.openapi [PATH]

The copy in ``deploy/examples/his/his-gateway.openapi.json`` is for vendors who want the
contract before they have a gateway to ask; a test keeps it equal to what is served.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from services.common.settings import GatewaySettings
from services.his_gateway.api import build_api
from services.his_gateway.clients import MemoryClientStore
from services.his_gateway.gateway import Gateway
from services.his_gateway.publisher import MemoryPublisher

__all__ = ["DOCUMENT", "openapi_document", "render"]

DOCUMENT = (
    Path(__file__).resolve().parents[2] / "deploy" / "examples" / "his" / "his-gateway.openapi.json"
)


def openapi_document() -> dict[str, Any]:
    gateway = Gateway(
        GatewaySettings(),
        store=MemoryClientStore(),
        publisher=MemoryPublisher(),
        token_secret="only-for-the-document-" + "0" * 32,
    )
    return build_api(gateway).openapi()


def render() -> str:
    return json.dumps(openapi_document(), indent=2, ensure_ascii=False, sort_keys=True) + "\n"


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else DOCUMENT
    target.write_text(render(), encoding="utf-8")
    print(f"wrote {target}")
