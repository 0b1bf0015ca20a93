"""his-gateway as ``reminders run`` builds it: refusals with exit status 2, and the OpenAPI
document shipped for vendors equal to the one served."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import SecretStr

from services.common.settings import DatabaseSettings, GatewaySettings, Settings
from services.his_gateway.app import create_app
from services.his_gateway.gateway import GatewayConfigError, token_secret_for
from services.his_gateway.openapi import DOCUMENT, openapi_document


def _settings(tmp_path: Path, **gateway: object) -> Settings:
    return Settings(
        database=DatabaseSettings(url=SecretStr(f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite3'}")),
        gateway=GatewaySettings.model_validate(gateway),
    )


async def test_without_a_token_secret_it_refuses_with_exit_status_2(tmp_path: Path) -> None:
    app = create_app(_settings(tmp_path))
    await app.run()
    assert app.exit_code == 2


async def test_on_a_database_without_the_schema_it_refuses_with_exit_status_2(
    tmp_path: Path,
) -> None:
    app = create_app(_settings(tmp_path, token_secret="s" * 40))
    await app.run()
    assert app.exit_code == 2


def test_token_secret_rules() -> None:
    assert token_secret_for(GatewaySettings(token_secret=SecretStr("k" * 32))) == "k" * 32
    assert len(token_secret_for(GatewaySettings(demo=True))) >= 32
    for bad in (GatewaySettings(), GatewaySettings(token_secret=SecretStr("short"))):
        try:
            token_secret_for(bad)
        except GatewayConfigError as exc:
            assert "REMINDERS_GATEWAY__TOKEN_SECRET" in str(exc)
        else:
            raise AssertionError("a missing or short secret must be refused")


def test_the_shipped_openapi_document_is_the_served_one() -> None:
    shipped = json.loads(DOCUMENT.read_text(encoding="utf-8"))
    assert shipped == json.loads(json.dumps(openapi_document())), (
        "regenerate it: python -m services.his_gateway.openapi"
    )
    assert set(shipped["paths"]) >= {
        "/oauth/token",
        "/fhir/Appointment/{appointment_id}",
        "/fhir/metadata",
        "/v1/appointment-events",
    }
