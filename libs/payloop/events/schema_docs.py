"""Render `docs/events/` from the event catalogue (DESIGN.md section 3).

Three kinds of documents, all derived from `payloop.events.catalogue.CATALOGUE` and nothing else:

- `docs/events/schemas/<type>.v<version>.json`: a JSON Schema (draft 2020-12) of the whole envelope
  of one event type and version, its `data` being the pydantic schema of the catalogue model;
- `docs/events/asyncapi.yaml`: an AsyncAPI 3.0.0 document with one channel per topic, one message
  per (type, version) and one `send` operation per type for the service that produces it;
- `docs/events/README.md`: a table of the event types and the rules every producer and consumer follows.

Rendering is deterministic (sorted keys, stable order, no timestamps, trailing newline), so the
rendered text can be compared with what is on disk: `check_documents` lists the drift (a test
fails on it) and `write_documents` repairs it (`make schemas`, i.e. `payloop events schema --write`).
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic.json_schema import models_json_schema

from payloop.events.catalogue import CATALOGUE, Catalogue, CatalogueEntry, EventData
from payloop.events.envelope import Envelope

DOCS_DIR = "docs/events"
SCHEMAS_DIR = f"{DOCS_DIR}/schemas"
ASYNCAPI_PATH = f"{DOCS_DIR}/asyncapi.yaml"
README_PATH = f"{DOCS_DIR}/README.md"

SCHEMA_BASE_URL = "https://payloop.dev/events/"
JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
ASYNCAPI_VERSION = "3.0.0"
# Version of the AsyncAPI document itself; the schema version of each event is its `version`.
DOCUMENT_VERSION = "1.0.0"
# Kafka bindings 0.4.0: the newest one the AsyncAPI 3.0.0 JSON Schema accepts (0.5.0 has the same fields).
KAFKA_BINDING_VERSION = "0.4.0"
DEFAULT_PARTITIONS = 6
GENERATED_NOTE = (
    "Generated from libs/payloop/events/catalogue.py by payloop.events.schema_docs; "
    "do not edit by hand, run `make schemas`."
)
KEY_DESCRIPTION = (
    '"{tenant_id}:{client_id}", so one client\'s events keep their order within a topic; '
    "events that concern a whole tenant (no client) use the tenant id alone."
)


# --- public API -----------------------------------------------------------------------------------

def render_documents(catalogue: Catalogue = CATALOGUE) -> dict[str, str]:
    """Every generated document: path relative to the repository root -> content."""
    docs: dict[str, str] = {}
    for entry in _entries(catalogue):
        docs[schema_path(entry.type, entry.version)] = _dump_json(envelope_json_schema(entry))
    docs[ASYNCAPI_PATH] = _dump_yaml(asyncapi_document(catalogue))
    docs[README_PATH] = render_readme(catalogue)
    return dict(sorted(docs.items()))


def write_documents(root: Path, catalogue: Catalogue = CATALOGUE) -> list[str]:
    """Bring `docs/events/` in line with the catalogue; return the paths written or removed."""
    root = Path(root)
    docs = render_documents(catalogue)
    changed: list[str] = []
    for rel, content in docs.items():
        path = root / rel
        data = content.encode("utf-8")
        if path.is_file() and path.read_bytes() == data:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        changed.append(rel)
    for rel in _extra_schema_files(root, docs):
        (root / rel).unlink()
        changed.append(rel)
    return sorted(changed)


def check_documents(root: Path, catalogue: Catalogue = CATALOGUE) -> list[str]:
    """Paths that are missing, stale or no longer generated; empty when docs/events is in sync."""
    root = Path(root)
    docs = render_documents(catalogue)
    drift = [
        rel for rel, content in docs.items()
        if not (root / rel).is_file() or (root / rel).read_bytes() != content.encode("utf-8")
    ]
    drift.extend(_extra_schema_files(root, docs))
    return sorted(drift)


def schema_path(type: str, version: int) -> str:
    return f"{SCHEMAS_DIR}/{schema_file_name(type, version)}"


def schema_file_name(type: str, version: int) -> str:
    return f"{type}.v{version}.json"


def schema_id(type: str, version: int) -> str:
    return f"{SCHEMA_BASE_URL}{schema_file_name(type, version)}"


# --- JSON Schema of one envelope ------------------------------------------------------------------

def envelope_json_schema(entry: CatalogueEntry) -> dict[str, Any]:
    """Self-contained draft 2020-12 schema of the envelope of `entry`, nested models in `$defs`."""
    data = entry.model.model_json_schema(ref_template="#/$defs/{model}")
    defs = data.pop("$defs", {})
    schema = _envelope_base()
    schema["properties"].update(_type_version_data(entry, data))
    schema.update({
        "$schema": JSON_SCHEMA_DIALECT,
        "$id": schema_id(entry.type, entry.version),
        "$comment": GENERATED_NOTE,
        "title": f"{entry.type} v{entry.version}",
        "description": _entry_description(entry),
    })
    if defs:
        schema["$defs"] = defs
    return schema


def _envelope_base() -> dict[str, Any]:
    schema = Envelope.model_json_schema()
    assert "$defs" not in schema, "the envelope itself is expected to have no nested models"
    schema.pop("title", None)
    return schema


def _type_version_data(entry: CatalogueEntry, data_schema: dict[str, Any]) -> dict[str, Any]:
    base = Envelope.model_json_schema()["properties"]
    return {
        "type": {**base["type"], "const": entry.type},
        "version": {**base["version"], "const": entry.version},
        "data": {**data_schema, "description": _data_description(entry)},
    }


def _entry_description(entry: CatalogueEntry) -> str:
    return (
        f"{entry.summary}. Produced by the `{entry.producer}` service on Kafka topic `{entry.type}`; "
        f"key {KEY_DESCRIPTION}"
    )


def _data_description(entry: CatalogueEntry) -> str:
    doc = (entry.model.__doc__ or "").strip()
    parts = [f"Payload of {entry.type} v{entry.version} (catalogue model `{entry.model.__name__}`)."]
    if doc and doc != (EventData.__doc__ or "").strip():
        parts.append(doc)
    parts.append("Producers may add fields within a version; consumers keep the ones they do not know.")
    return " ".join(parts)


# --- AsyncAPI -------------------------------------------------------------------------------------

def asyncapi_document(catalogue: Catalogue = CATALOGUE) -> dict[str, Any]:
    entries = _entries(catalogue)
    model_refs, schemas = _component_schemas(entries)
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    ids = {_ident(t) for t in catalogue.types()}
    if len(ids) != len(catalogue.types()):
        raise ValueError("two event types map to the same AsyncAPI channel id")
    for type in catalogue.types():
        versions = [e for e in entries if e.type == type]
        current = versions[-1]
        channel_id = _ident(type)
        channel_messages = {}
        for entry in versions:
            message_id = _message_id(entry)
            channel_messages[message_id] = {"$ref": f"#/components/messages/{message_id}"}
            envelope_key = f"{entry.type}.v{entry.version}"
            schemas[envelope_key] = {
                "title": f"{entry.type} v{entry.version}",
                "description": _entry_description(entry),
                "allOf": [
                    {"$ref": "#/components/schemas/Envelope"},
                    {
                        "type": "object",
                        "properties": _type_version_data(entry, model_refs[entry.model]),
                    },
                ],
            }
            messages[message_id] = _message(entry, envelope_key)
        channels[channel_id] = {
            "address": type,
            "title": type,
            "description": (
                f"{current.summary}. One topic per event type; produced by `{current.producer}`; "
                f"versions: {', '.join(f'v{e.version}' for e in versions)}. "
                f"Failed consumers dead-letter to `{type}.dlq.{{consumer_group}}`."
            ),
            "messages": channel_messages,
            "bindings": {
                "kafka": {
                    "topic": type,
                    "partitions": DEFAULT_PARTITIONS,
                    "bindingVersion": KAFKA_BINDING_VERSION,
                },
            },
        }
        operations[f"send{_pascal(type)}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{channel_id}"},
            "title": f"{current.producer} sends {type}",
            "summary": current.summary,
            "description": (
                f"The `{current.producer}` service publishes `{type}` through its transactional outbox "
                "(at least once, acks=all)."
            ),
            "tags": [
                {"name": current.producer, "description": f"Produced by the {current.producer} service"}
            ],
            "messages": [{"$ref": f"#/channels/{channel_id}/messages/{_message_id(e)}"} for e in versions],
        }
    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": "Payloop events",
            "version": DOCUMENT_VERSION,
            "description": (
                f"{GENERATED_NOTE}\n\n"
                "Every Payloop event travels in the same JSON envelope on a Kafka topic named after its "
                f"type, keyed {KEY_DESCRIPTION} Headers repeat `event-type`, `event-id`, `tenant-id` and "
                "carry a W3C `traceparent`. Delivery is at least once: consumers de-duplicate on the "
                "envelope `id`. Changes are additive within a version; a breaking change is a new "
                "version published beside the old one, with an upcaster. See docs/events/README.md."
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "kafka": {
                "host": "{bootstrap}",
                "protocol": "kafka",
                "description": (
                    "Kafka (or the Kafka-compatible dev broker); placeholder for PAYLOOP_KAFKA_BOOTSTRAP."
                ),
                "variables": {
                    "bootstrap": {
                        "default": "127.0.0.1:9092",
                        "description": "Bootstrap servers, as in PAYLOOP_KAFKA_BOOTSTRAP.",
                    },
                },
            },
        },
        "channels": channels,
        "operations": operations,
        "components": {"schemas": schemas, "messages": messages},
    }


def _message(entry: CatalogueEntry, envelope_key: str) -> dict[str, Any]:
    return {
        "name": entry.type,
        "title": f"{entry.type} v{entry.version}",
        "summary": entry.summary,
        "description": f"Produced by the `{entry.producer}` service. JSON Schema: schemas/"
                       f"{schema_file_name(entry.type, entry.version)}",
        "contentType": "application/json",
        "headers": {"$ref": "#/components/schemas/EventHeaders"},
        "payload": {"$ref": f"#/components/schemas/{envelope_key}"},
        "correlationId": {
            "description": "Shared by every event of one business flow",
            "location": "$message.payload#/correlation_id",
        },
        "tags": [{"name": entry.producer}],
        "bindings": {
            "kafka": {
                "key": {
                    "type": "string",
                    "description": KEY_DESCRIPTION,
                },
                "bindingVersion": KAFKA_BINDING_VERSION,
            },
        },
    }


def _component_schemas(entries: list[CatalogueEntry]) -> tuple[dict[type, dict[str, str]], dict[str, Any]]:
    """Data models (and the models they nest) as `components/schemas`, plus the shared envelope parts."""
    models = sorted({e.model for e in entries}, key=lambda m: (m.__name__, m.__module__, m.__qualname__))
    refs, top = models_json_schema(
        [(m, "validation") for m in models], ref_template="#/components/schemas/{model}"
    )
    schemas: dict[str, Any] = dict(top.get("$defs", {}))
    envelope = _envelope_base()
    envelope["title"] = "Envelope"
    envelope["description"] = "The envelope every Payloop event travels in."
    reserved = {"Envelope": envelope, "EventHeaders": _headers_schema()}
    clash = sorted(set(reserved) & set(schemas))
    if clash:
        raise ValueError(f"event data models may not be named {clash}: the names are taken by the envelope")
    schemas.update(reserved)
    return {m: refs[(m, "validation")] for m in models}, schemas


def _headers_schema() -> dict[str, Any]:
    return {
        "title": "EventHeaders",
        "description": (
            "Kafka record headers (UTF-8 strings); they repeat envelope fields for routing and tracing."
        ),
        "type": "object",
        "properties": {
            "event-type": {"type": "string", "description": "The envelope `type` (also the topic)"},
            "event-id": {"type": "string", "format": "uuid", "description": "The envelope `id` (UUIDv7)"},
            "tenant-id": {"type": "string", "description": "The envelope `tenant_id`"},
            "traceparent": {
                "type": "string",
                "description": "W3C trace context of the producing span",
                "pattern": "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$",
            },
        },
        "required": ["event-type", "event-id", "tenant-id"],
    }


def _ident(type: str) -> str:
    """`psa.payment_recorded` -> `psaPaymentRecorded` (AsyncAPI ids allow no dots)."""
    pascal = _pascal(type)
    return pascal[0].lower() + pascal[1:]


def _pascal(type: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[._\-]", type) if part)


def _message_id(entry: CatalogueEntry) -> str:
    return f"{_ident(entry.type)}V{entry.version}"


# --- README ---------------------------------------------------------------------------------------

RULES = """\
## Rules

- **Topics.** One Kafka topic per event type, named as the type (`invoice.created`),
  {partitions} partitions by default.
- **Key.** `"{{tenant_id}}:{{client_id}}"`, so one client's events keep their order within a
  topic; events that concern a whole tenant (no client) use the tenant id alone.
- **Envelope.** JSON, UTF-8: `id` (UUIDv7, unique per event), `type`, `version` (schema version
  of `data`), `tenant_id`, `client_id`, `occurred_at` (UTC), `producer`, `correlation_id`,
  `causation_id`, `traceparent`, `data`. Build it with `payloop.events.new_event`, which
  validates `data` against the current version in the catalogue.
- **Headers.** `event-type`, `event-id` and `tenant-id` repeat the envelope; `traceparent`
  carries the W3C trace context.
- **Money and time.** Amounts are integer minor units (`*_minor`) with an ISO 4217 `currency`;
  never a float or a string. Instants are timezone-aware UTC; dates that are dates (`due_on`)
  stay dates.
- **Delivery is at least once.** Producers write events to an outbox table in the transaction
  that changes state and a relay publishes them after commit (acks=all). Consumers apply an
  event and record its `id` in an inbox table in one transaction, then commit the offset, so a
  redelivered event has no second effect.
- **Versioning.** Changes within a version are additive only: new optional fields, new fields
  that consumers can ignore (unknown fields are kept, never rejected). A breaking change
  (renaming, removing or retyping a field, changing its meaning) is a new version N+1 added to
  the catalogue beside N, with an upcaster from N, until every consumer has moved; consumers
  read every version through `CATALOGUE.parse`, which upcasts older versions to the newest.
- **Dead letters.** A handler failure is retried with backoff; after the last attempt the event
  goes to `{{topic}}.dlq.{{consumer_group}}` with the error, and the other keys keep flowing.
  Operators use `payloop dlq list|show|replay`.
"""


def render_readme(catalogue: Catalogue = CATALOGUE) -> str:
    rows = [
        f"| `{e.type}` | {e.version} | {e.producer} | {_md_cell(e.summary)} "
        f"| [{schema_file_name(e.type, e.version)}](schemas/{schema_file_name(e.type, e.version)}) |"
        for e in _entries(catalogue)
    ]
    lines = [
        "# Payloop events",
        "",
        f"<!-- {GENERATED_NOTE} -->",
        "",
        "Generated from the event catalogue (`libs/payloop/events/catalogue.py`), the single source of",
        "truth for event payloads. Regenerate with `make schemas` (`payloop events schema --write`);",
        "`payloop events schema --check` and the test suite fail when these files drift from the catalogue.",
        "",
        "- [asyncapi.yaml](asyncapi.yaml): AsyncAPI 3.0.0 description of every topic, message and producer.",
        "- [schemas/](schemas/): one JSON Schema (draft 2020-12) per event type and version, of the whole",
        "  envelope with its `data`.",
        "",
        "## Event types",
        "",
        "| type (= topic) | version | producer | summary | schema |",
        "|---|---|---|---|---|",
        *rows,
        "",
        *RULES.format(partitions=DEFAULT_PARTITIONS).splitlines(),
        "",
    ]
    return "\n".join(lines)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


# --- helpers --------------------------------------------------------------------------------------

def _entries(catalogue: Catalogue) -> list[CatalogueEntry]:
    return [catalogue.entries[key] for key in sorted(catalogue.entries)]


def _extra_schema_files(root: Path, docs: dict[str, str]) -> list[str]:
    directory = root / SCHEMAS_DIR
    if not directory.is_dir():
        return []
    found = (p.relative_to(root).as_posix() for p in directory.glob("*.json") if p.is_file())
    return sorted(rel for rel in found if rel not in docs)


def _dump_json(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _dump_yaml(document: dict[str, Any]) -> str:
    body = yaml.safe_dump(
        document, sort_keys=True, allow_unicode=True, default_flow_style=False, width=100, indent=2
    )
    return f"# {GENERATED_NOTE}\n{body}"


__all__ = [
    "asyncapi_document",
    "check_documents",
    "envelope_json_schema",
    "render_documents",
    "render_readme",
    "schema_path",
    "write_documents",
]
