"""schemas/asyncapi.json: generated with FastStream from the models, never out of date."""

from __future__ import annotations

import json

from schemas.asyncapi import ASYNCAPI_PATH, drifted, render
from schemas.models import model_json_schemas
from schemas.topics import Topics


def test_asyncapi_document_is_up_to_date() -> None:
    assert not drifted(), f"{ASYNCAPI_PATH.name} is out of date: run python -m schemas.asyncapi"


def test_rendering_is_deterministic() -> None:
    assert render() == render()


def test_every_topic_is_a_channel_with_a_payload_schema() -> None:
    doc = json.loads(ASYNCAPI_PATH.read_text(encoding="utf-8"))
    assert doc["asyncapi"] == "3.0.0"
    assert doc["info"]["title"] and doc["info"]["version"] and doc["info"]["description"]
    addresses = {channel["address"] for channel in doc["channels"].values()}
    assert addresses == {spec.name for spec in Topics().specs()}
    messages = doc["components"]["messages"]
    schemas = doc["components"]["schemas"]
    for name, channel in doc["channels"].items():
        kafka = channel["bindings"]["kafka"]
        assert kafka["topic"] == channel["address"]
        assert kafka["topicConfiguration"]["cleanup.policy"]
        for ref in channel["messages"].values():
            message = messages[ref["$ref"].removeprefix("#/components/messages/")]
            assert message["bindings"]["kafka"]["key"]["type"] == "string", name
            payload = message["payload"]
            if "$ref" in payload:
                assert payload["$ref"].removeprefix("#/components/schemas/") in schemas
        operation = doc["operations"][name]
        assert operation["channel"] == {"$ref": f"#/channels/{name}"}


def test_directions_and_record_models() -> None:
    doc = json.loads(ASYNCAPI_PATH.read_text(encoding="utf-8"))
    topics = Topics()
    received = {topics.his_appointments, topics.practice_config, topics.patient_preferences}
    for name, operation in doc["operations"].items():
        expected = "receive" if name in received else "send"
        assert operation["action"] == expected, name
    models = {name.removesuffix(".schema.json") for name in model_json_schemas()}
    assert models <= set(doc["components"]["schemas"])
    # The model schemas are the same as the JSON Schema files beside the models.
    for model, schema in model_json_schemas().items():
        properties = doc["components"]["schemas"][model.removesuffix(".schema.json")]
        assert set(properties.get("properties", {})) == set(schema.get("properties", {}))


def test_dead_letter_topics_document_their_headers() -> None:
    doc = json.loads(ASYNCAPI_PATH.read_text(encoding="utf-8"))
    for source in Topics().inputs():
        dlq = Topics.dlq(source)
        message = doc["components"]["messages"][f"{dlq}:Message"]
        assert set(message["headers"]["required"]) == {
            "error-reason",
            "error-detail",
            "source-topic",
            "source-partition",
            "source-offset",
        }
    his = doc["channels"][Topics().his_appointments]["messages"]
    assert "FhirAppointment" in his
