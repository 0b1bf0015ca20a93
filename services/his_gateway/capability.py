"""``GET /fhir/metadata``: the CapabilityStatement of the gateway's FHIR side."""

from __future__ import annotations

from typing import Any

__all__ = ["capability_statement"]


def capability_statement(base_url: str, *, date: str) -> dict[str, Any]:
    token_url = f"{base_url}/oauth/token"
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": date,
        "publisher": "e-afspraken reminders",
        "kind": "instance",
        "software": {"name": "e-afspraken his-gateway"},
        "implementation": {
            "description": "Appointment reminders for Dutch general practices: HIS front door",
            "url": f"{base_url}/fhir",
        },
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json"],
        "rest": [
            {
                "mode": "server",
                "security": {
                    "cors": False,
                    "service": [
                        {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/"
                                    "restful-security-service",
                                    "code": "OAuth",
                                }
                            ],
                            "text": "OAuth 2.0 client credentials (RFC 6749 section 4.4)",
                        }
                    ],
                    "extension": [
                        {
                            "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/"
                            "oauth-uris",
                            "extension": [{"url": "token", "valueUri": token_url}],
                        }
                    ],
                    "description": (
                        f"POST {token_url} with grant_type=client_credentials, the client "
                        "authenticated by HTTP Basic or form fields; send the access token as "
                        "Authorization: Bearer. A client writes only for its own practices."
                    ),
                },
                "resource": [
                    {
                        "type": "Appointment",
                        "interaction": [{"code": "update"}],
                        "updateCreate": True,
                        "versioning": "versioned",
                        "documentation": (
                            "PUT /fhir/Appointment/{id}: the practice's AGB code on the Location "
                            "participant (actor.identifier, system "
                            "http://fhir.nl/fhir/NamingSystem/agb-z); meta.versionId (or "
                            "meta.lastUpdated) orders the versions; repeating a PUT is harmless."
                        ),
                    }
                ],
            }
        ],
    }
