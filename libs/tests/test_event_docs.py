"""Event contract documents: docs/events must match the catalogue, and describe what is on the wire.

No PostgreSQL or Kafka needed: everything here is rendered and validated in-process.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator, Draft202012Validator
from jsonschema.exceptions import ValidationError as SchemaValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from payloop.events import new_event
from payloop.events import schema_docs
from payloop.events.catalogue import CATALOGUE

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCS = REPO_ROOT / "docs" / "events"
ASYNCAPI_URI = "urn:payloop:asyncapi"
FORMATS = Draft202012Validator.FORMAT_CHECKER  # checks uuid and date (date-time needs an extra package)

PSA = {"source": "connectwise", "external_id": "INV-1001"}
PROCESSOR = {"name": "stripe", "payment_intent_id": "pi_123", "charge_id": "ch_123"}
CARD = {"type": "card", "brand": "visa", "last4": "4242"}

SAMPLES: dict[str, tuple[str | None, dict[str, Any]]] = {
    "invoice.created": ("cli_1", {
        "invoice_id": "inv_1",
        "psa": PSA,
        "number": "1001",
        "agreement": {"id": "agr_1", "kind": "managed_services", "name": "Managed IT"},
        "currency": "USD",
        "issued_on": "2025-03-01",
        "due_on": "2025-03-31",
        "terms": "Net 30",
        "status": "open",
        "subtotal_minor": 150000,
        "tax_minor": 0,
        "total_minor": 150000,
        "balance_minor": 150000,
        "lines": [
            {"kind": "recurring", "description": "Managed IT", "quantity": "1",
             "unit_price_minor": 100000, "amount_minor": 100000, "agreement_line_id": "agl_1"},
            {"kind": "per_device", "description": "Workstations", "quantity": "25",
             "unit_price_minor": 2000, "amount_minor": 50000, "agreement_line_id": None},
        ],
    }),
    "payment.failed": ("cli_1", {
        "payment_id": "pay_1",
        "method": {"type": "ach", "brand": "Chase", "last4": "6789"},
        "amount_minor": 150000,
        "currency": "USD",
        "allocations": [{"invoice_id": "inv_1", "amount_minor": 150000}],
        "attempt": 2,
        "processor": PROCESSOR,
        "decline_code": "insufficient_funds",
        "retryable": True,
        "next_attempt_at": "2025-04-03T15:00:00Z",
    }),
    "payout.paid": (None, {
        "payout_id": "po_1",
        "arrival_date": "2025-04-04",
        "amount_minor": 9680,
        "currency": "USD",
        "items": [
            {"type": "charge", "payment_id": "pay_1", "gross_minor": 10000, "fee_minor": 320,
             "net_minor": 9680},
        ],
    }),
    "reminder.sent": ("cli_1", {
        "invoice_ids": ["inv_1"],
        "step": 3,
        "level": "friendly",
        "channel": "email",
        "to": ["ap@client.example"],
        "template": "overdue_friendly",
    }),
    "payment.settled": ("cli_1", {
        "payment_id": "pay_2",
        "method": CARD,
        "amount_minor": 10000,
        "currency": "EUR",
        "fee_minor": 320,
        "allocations": [
            {"invoice_id": "inv_1", "amount_minor": 6000},
            {"invoice_id": "inv_2", "amount_minor": 4000},
        ],
        "processor": PROCESSOR,
        "unknown_but_additive": {"kept": True},
    }),
    "tenant.updated": (None, {
        "tenant_id": "ten_1", "name": "Acme MSP", "timezone": "America/Chicago", "currency": "USD",
    }),
}


def _schema(type: str, version: int) -> dict[str, Any]:
    return json.loads((REPO_ROOT / schema_docs.schema_path(type, version)).read_text(encoding="utf-8"))


def _asyncapi() -> dict[str, Any]:
    return yaml.safe_load((DOCS / "asyncapi.yaml").read_text(encoding="utf-8"))


def _wire(type: str) -> dict[str, Any]:
    client_id, data = SAMPLES[type]
    producer = CATALOGUE.current(type).producer
    envelope = new_event(type, tenant_id="ten_1", client_id=client_id, data=data, producer=producer)
    return json.loads(envelope.to_bytes())


# --- drift ------------------------------------------------------------------------------------------

def test_docs_events_match_the_catalogue():
    drift = schema_docs.check_documents(REPO_ROOT)
    assert drift == [], (
        "docs/events is out of date with libs/payloop/events/catalogue.py; run `make schemas` "
        "(payloop events schema --write) and commit the result. Drifted: " + ", ".join(drift)
    )


def test_rendering_is_deterministic_and_newline_terminated():
    first, second = schema_docs.render_documents(), schema_docs.render_documents()
    assert first == second
    assert list(first) == sorted(first)
    assert all(content.endswith("\n") and not content.endswith("\n\n") for content in first.values())
    expected = {schema_docs.schema_path(t, v) for t, v in CATALOGUE.entries}
    expected |= {"docs/events/asyncapi.yaml", "docs/events/README.md"}
    assert set(first) == expected


def test_write_then_check_repairs_missing_stale_and_extra_files(tmp_path: Path):
    written = schema_docs.write_documents(tmp_path)
    assert written == sorted(schema_docs.render_documents())
    assert schema_docs.check_documents(tmp_path) == []
    assert schema_docs.write_documents(tmp_path) == []  # idempotent

    stale = tmp_path / schema_docs.schema_path("invoice.created", 1)
    stale.write_text("{}\n")
    missing = tmp_path / "docs/events/README.md"
    missing.unlink()
    extra = tmp_path / "docs/events/schemas/invoice.retired.v1.json"
    extra.write_text("{}\n")
    expected = sorted(p.relative_to(tmp_path).as_posix() for p in (stale, missing, extra))
    assert schema_docs.check_documents(tmp_path) == expected

    assert schema_docs.write_documents(tmp_path) == expected
    assert not extra.exists()
    assert schema_docs.check_documents(tmp_path) == []


# --- JSON Schemas -----------------------------------------------------------------------------------

@pytest.mark.parametrize("type,version", sorted(CATALOGUE.entries))
def test_json_schema_is_valid_draft_2020_12(type: str, version: int):
    schema = _schema(type, version)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"https://payloop.dev/events/{type}.v{version}.json"
    assert schema["title"]
    assert schema["properties"]["type"]["const"] == type
    assert schema["properties"]["version"]["const"] == version
    assert schema.get("additionalProperties", True) is not False  # envelope fields may be added
    assert {"id", "type", "version", "tenant_id", "occurred_at", "producer", "correlation_id", "data"} <= set(
        schema["required"]
    )


@pytest.mark.parametrize("type", sorted(SAMPLES))
def test_sample_envelope_validates_against_its_schema(type: str):
    wire = _wire(type)
    validator = Draft202012Validator(_schema(type, wire["version"]), format_checker=FORMATS)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(wire)]
    assert errors == []


def test_schema_rejects_what_the_catalogue_rejects():
    wire = _wire("invoice.created")
    validator = Draft202012Validator(_schema("invoice.created", 1), format_checker=FORMATS)

    def rejected(mutate) -> bool:
        doc = json.loads(json.dumps(wire))
        mutate(doc)
        return not validator.is_valid(doc)

    assert rejected(lambda d: d["data"]["lines"][0].__setitem__("amount_minor", 10.5))
    assert rejected(lambda d: d["data"].__setitem__("total_minor", "150000"))
    assert rejected(lambda d: d["data"].__setitem__("currency", "usd"))
    assert rejected(lambda d: d["data"]["psa"].__setitem__("source", "quickbooks"))
    assert rejected(lambda d: d["data"].pop("invoice_id"))
    assert rejected(lambda d: d.__setitem__("type", "invoice.updated"))
    assert rejected(lambda d: d.__setitem__("version", 2))
    assert rejected(lambda d: d.__setitem__("id", "not-a-uuid"))
    assert not rejected(lambda d: d.__setitem__("surprise", 1))  # envelope fields may be added too
    assert not rejected(lambda d: d["data"].__setitem__("surprise", 1))  # data is open (additive)


# --- AsyncAPI ---------------------------------------------------------------------------------------

def test_asyncapi_has_a_channel_message_and_send_operation_per_catalogue_type():
    doc = _asyncapi()
    assert doc["asyncapi"] == "3.0.0"
    assert doc["info"]["title"] == "Payloop events" and doc["info"]["version"]
    assert doc["servers"]["kafka"]["protocol"] == "kafka"
    channels = {c["address"]: (cid, c) for cid, c in doc["channels"].items()}
    assert set(channels) == set(CATALOGUE.types())
    messages = doc["components"]["messages"]
    for type in CATALOGUE.types():
        channel_id, channel = channels[type]
        assert channel["bindings"]["kafka"]["topic"] == type
        names = {}
        for ref in channel["messages"].values():
            message = _resolve(doc, ref["$ref"])
            names[(message["name"], message["payload"]["$ref"])] = message
        for version in CATALOGUE.versions(type):
            keyed = [m for (n, p), m in names.items() if n == type and p.endswith(f"/{type}.v{version}")]
            assert len(keyed) == 1, f"{type} v{version} has no message in channel {channel_id}"
            message = keyed[0]
            assert message["bindings"]["kafka"]["key"]["type"] == "string"
            assert "{tenant_id}:{client_id}" in message["bindings"]["kafka"]["key"]["description"]
            headers = _resolve(doc, message["headers"]["$ref"])
            assert set(headers["properties"]) == {"event-type", "event-id", "tenant-id", "traceparent"}
        sends = [
            op for op in doc["operations"].values()
            if op["action"] == "send" and op["channel"]["$ref"] == f"#/channels/{channel_id}"
        ]
        assert len(sends) == 1, f"{type} needs exactly one send operation"
        producer = CATALOGUE.current(type).producer
        assert producer in [tag["name"] for tag in sends[0]["tags"]]
        assert producer in sends[0]["description"]
        for ref in sends[0]["messages"]:
            assert ref["$ref"].startswith(f"#/channels/{channel_id}/messages/")
    assert len(messages) == len(CATALOGUE.entries)


def test_asyncapi_references_all_resolve():
    doc = _asyncapi()
    refs = list(_refs(doc))
    assert refs
    for ref in refs:
        assert ref.startswith("#/"), f"unexpected external reference {ref}"
        _resolve(doc, ref)


@pytest.mark.parametrize("type", sorted(SAMPLES))
def test_sample_envelope_validates_against_the_asyncapi_payload(type: str):
    """The AsyncAPI payloads (draft-07 based) describe the same wire format as the JSON Schemas."""
    doc = _asyncapi()
    wire = _wire(type)
    registry = Registry().with_resource(ASYNCAPI_URI, Resource(contents=doc, specification=DRAFT7))
    channel_id = next(cid for cid, c in doc["channels"].items() if c["address"] == type)
    channel_messages = doc["channels"][channel_id]["messages"].values()
    payload_refs = [_resolve(doc, ref["$ref"])["payload"]["$ref"] for ref in channel_messages]
    assert payload_refs
    validator = Draft7Validator({"$ref": ASYNCAPI_URI + payload_refs[-1]}, registry=registry)
    assert [e.message for e in validator.iter_errors(wire)] == []
    for broken in ({**wire, "data": {}}, {**wire, "version": 99}):
        with pytest.raises(SchemaValidationError):
            validator.validate(broken)


# --- README -----------------------------------------------------------------------------------------

def test_readme_lists_every_type_and_states_the_rules():
    text = (DOCS / "README.md").read_text(encoding="utf-8")
    for (type, version), entry in CATALOGUE.entries.items():
        row = next((line for line in text.splitlines() if line.startswith(f"| `{type}` | {version} |")), None)
        assert row is not None, f"README has no row for {type} v{version}"
        assert entry.producer in row and f"schemas/{type}.v{version}.json" in row
    for phrase in ('"{tenant_id}:{client_id}"', "at least once", "{topic}.dlq.{consumer_group}", "upcaster",
                   "traceparent", "make schemas"):
        assert phrase in text


# --- helpers ----------------------------------------------------------------------------------------

def _refs(node: Any):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    node: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"unresolvable reference {ref}"
        node = node[part]
    return node


def test_a_second_version_gets_its_own_schema_and_message_in_the_same_channel():
    from payloop.events.catalogue import Catalogue, CatalogueEntry, EventData

    class WidgetV1(EventData):
        widget_id: str

    class WidgetV2(EventData):
        widget_id: str
        colour: str

    catalogue = Catalogue()
    catalogue.add(CatalogueEntry("widget.changed", 1, WidgetV1, "tenants", "A widget changed"))
    catalogue.add(CatalogueEntry("widget.changed", 2, WidgetV2, "tenants", "A widget changed",
                                 upcast_from_previous=lambda d: {**d, "colour": "blue"}))
    docs = schema_docs.render_documents(catalogue)
    v1, v2 = (json.loads(docs[schema_docs.schema_path("widget.changed", v)]) for v in (1, 2))
    assert (v1["properties"]["version"]["const"], v2["properties"]["version"]["const"]) == (1, 2)
    assert "colour" in v2["properties"]["data"]["required"]
    assert "colour" not in v1["properties"]["data"]["properties"]
    doc = yaml.safe_load(docs["docs/events/asyncapi.yaml"])
    assert list(doc["channels"]) == ["widgetChanged"]
    assert sorted(doc["channels"]["widgetChanged"]["messages"]) == ["widgetChangedV1", "widgetChangedV2"]
    (operation,) = doc["operations"].values()
    assert len(operation["messages"]) == 2
    assert "| `widget.changed` | 2 | tenants |" in docs["docs/events/README.md"]
