"""The envelope every Payloop event travels in (DESIGN.md section 3).

The Kafka key is `"{tenant_id}:{client_id}"`, so one client's events keep their order within a
topic; events that concern a whole tenant use the tenant id alone.
Headers repeat `event-type`, `event-id`, `tenant-id` and carry a W3C `traceparent`.
"""
from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from payloop.ids import uuid7


class Envelope(BaseModel):
    # Unknown envelope fields are ignored, so adding one never dead-letters events in older consumers.
    model_config = ConfigDict(extra="ignore", frozen=True)

    id: UUID = Field(description="Unique per event (UUIDv7); consumers de-duplicate on it")
    type: str = Field(description="Event type, also the topic name, e.g. invoice.created")
    version: int = Field(ge=1, description="Schema version of `data`")
    tenant_id: str = Field(min_length=1)
    client_id: str | None = Field(None, description="The MSP's client the event concerns, if any")
    occurred_at: AwareDatetime
    producer: str = Field(description="Service that produced the event")
    correlation_id: str = Field(description="Id shared by every event of one business flow")
    causation_id: str | None = Field(None, description="Id of the event or request that caused this one")
    traceparent: str | None = Field(None, description="W3C trace context of the producing span")
    data: dict[str, Any]

    @property
    def key(self) -> str:
        return partition_key(self.tenant_id, self.client_id)

    def headers(self) -> list[tuple[str, bytes]]:
        headers = [
            ("event-type", self.type.encode()),
            ("event-id", str(self.id).encode()),
            ("tenant-id", self.tenant_id.encode()),
        ]
        if self.traceparent:
            headers.append(("traceparent", self.traceparent.encode()))
        return headers

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, raw: bytes) -> "Envelope":
        return cls.model_validate_json(raw)


def partition_key(tenant_id: str, client_id: str | None) -> str:
    return f"{tenant_id}:{client_id}" if client_id else tenant_id


def new_traceparent() -> str:
    return f"00-{os.urandom(16).hex()}-{os.urandom(8).hex()}-01"


def new_event(
    type: str,
    *,
    tenant_id: str,
    data: BaseModel | dict[str, Any],
    producer: str,
    client_id: str | None = None,
    correlation_id: str | None = None,
    causation: "Envelope | str | None" = None,
    occurred_at: datetime | None = None,
) -> Envelope:
    """Build an envelope, validating `data` against the catalogue's current schema for `type`."""
    from payloop.events.catalogue import CATALOGUE

    entry = CATALOGUE.current(type)
    payload = entry.model.model_validate(data if isinstance(data, dict) else data.model_dump(mode="json"))
    event_id = uuid7()
    if isinstance(causation, Envelope):
        correlation_id = correlation_id or causation.correlation_id
        causation_id: str | None = str(causation.id)
    else:
        causation_id = causation
    return Envelope(
        id=event_id,
        type=type,
        version=entry.version,
        tenant_id=tenant_id,
        client_id=client_id,
        occurred_at=occurred_at or datetime.now(UTC),
        producer=producer,
        correlation_id=correlation_id or str(event_id),
        causation_id=causation_id,
        traceparent=new_traceparent(),
        data=payload.model_dump(mode="json"),
    )
