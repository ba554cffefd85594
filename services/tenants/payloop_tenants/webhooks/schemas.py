"""API schemas of partner webhooks: strict on the way in, secrets shown only once on the way out."""
from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

from payloop.events.catalogue import CATALOGUE

# Audit entries are for the tenant's own log, not for partners.
SUBSCRIBABLE_TYPES = frozenset(t for t in CATALOGUE.types() if t != "audit.recorded")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _known_types(types: list[str]) -> list[str]:
    unknown = sorted(set(types) - SUBSCRIBABLE_TYPES)
    if unknown:
        raise ValueError(f"unknown event types {unknown}; see docs/events")
    return sorted(set(types))


class EndpointCreate(Strict):
    url: str = Field(max_length=2048, pattern=r"^https?://[^\s/$.?#][^\s]*$",
                     examples=["https://partner.example/payloop/webhooks"],
                     description="Where to POST events; https is required in production")
    description: str = Field("", max_length=200)
    event_types: list[str] = Field(default_factory=list, max_length=100,
                                   description="Event types to receive; empty for every type")

    _types = field_validator("event_types")(_known_types)


class EndpointUpdate(Strict):
    url: str | None = Field(None, max_length=2048, pattern=r"^https?://[^\s/$.?#][^\s]*$")
    description: str | None = Field(None, max_length=200)
    event_types: list[str] | None = Field(None, max_length=100)
    status: Literal["enabled", "disabled"] | None = Field(
        None, description="Re-enable an endpoint disabled after failures; pending deliveries resume in order")

    @field_validator("event_types")
    @classmethod
    def _types(cls, types: list[str] | None) -> list[str] | None:
        return None if types is None else _known_types(types)


class EndpointOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: UUID
    url: str
    description: str
    event_types: list[str]
    status: Literal["enabled", "disabled"]
    disabled_reason: str | None
    secret_hint: str = Field(description="The last characters of the current signing secret")
    previous_secret_expires_at: datetime | None = Field(
        None, description="While set and in the future, requests are signed with the old secret too")
    created_at: datetime
    updated_at: datetime


class EndpointWithSecret(EndpointOut):
    secret: str = Field(description="The signing secret (`whsec_...`); shown only in this response")


class SecretRotation(Strict):
    overlap_hours: int = Field(24, ge=0, le=168,
                               description="How long the previous secret keeps signing beside the new one")


class DeliveryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: UUID
    endpoint_id: UUID
    event_id: UUID
    event_type: str
    status: Literal["pending", "succeeded", "failed"]
    attempts: int
    next_attempt_at: datetime
    replay_of: UUID | None
    created_at: datetime
    finished_at: datetime | None


class AttemptOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    attempted_at: datetime
    request_url: str
    request_headers: dict[str, str]
    request_bytes: int
    response_status: int | None
    response_excerpt: str | None
    error: str | None
    duration_ms: int


class DeliveryDetail(DeliveryOut):
    attempts_log: list[AttemptOut]


class DeliveryPage(BaseModel):
    items: list[DeliveryOut]
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page")


class ReplayRange(Strict):
    since: AwareDatetime = Field(examples=["2026-01-01T00:00:00Z"], description="Events that occurred at or after")
    until: AwareDatetime | None = Field(None, description="... and before this instant (default: now)")
    only_undelivered: bool = Field(False, description="Skip events this endpoint already received")


class ReplayResult(BaseModel):
    scheduled: int = Field(description="Deliveries queued, in the events' original order")
