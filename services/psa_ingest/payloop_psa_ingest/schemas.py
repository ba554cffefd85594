"""Pydantic models of the psa_ingest API. Credentials go in, never out (only a masked hint)."""
from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from payloop_psa_ingest.connectors import CREDENTIAL_MODELS
from payloop_psa_ingest.connectors.autotask import DEFAULT_URL as DEFAULT_AUTOTASK_URL, AutotaskCredentials
from payloop_psa_ingest.connectors.connectwise import ConnectWiseCredentials
from payloop_psa_ingest.connectors.halopsa import HaloCredentials
from payloop_psa_ingest.connectors.superops import DEFAULT_URL as DEFAULT_SUPEROPS_URL, SuperOpsCredentials

DEFAULT_URLS = {
    "connectwise": "https://api-na.myconnectwise.net/v4_6_release/apis/3.0",
    "autotask": DEFAULT_AUTOTASK_URL,
    "superops": DEFAULT_SUPEROPS_URL,
}


def http_url(value: str | None) -> str | None:
    if value is not None and not value.startswith(("https://", "http://")):
        raise ValueError("base_url must be an http(s) URL")
    return value.rstrip("/") if value else value


class ConnectionSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    page_size: int = Field(250, ge=1, le=1000)
    timeout_s: float = Field(30, gt=0, le=300)
    max_attempts: int = Field(5, ge=1, le=10)
    backoff_initial_s: float = Field(0.5, gt=0, le=60)
    dispute_ticket_type: str = Field("Billing Dispute", min_length=1)
    default_currency: str = Field("USD", pattern=r"^[A-Z]{3}$")
    paid_dates: bool = Field(False, description="ConnectWise: read each paid invoice's payments for the day it was "
                             "paid (one more request per paid invoice, so off unless asked); without it reporting "
                             "dates a payment made outside Payloop by the sync that saw it")
    line_kind_prefixes: dict[str, Literal["recurring", "per_device", "per_user", "tiered", "time", "product",
                                          "proration", "adjustment", "credit"]] = Field(
        default_factory=dict, description="Product identifier prefix -> line kind, over the defaults")


class ConnectionCreate(BaseModel):
    source: Literal["connectwise", "autotask", "halopsa", "superops"] = "connectwise"
    name: str = Field("PSA", min_length=1, max_length=200)
    base_url: str | None = Field(None, description="The PSA's API root (ConnectWise: "
                                 "https://api-na.myconnectwise.net/v4_6_release/apis/3.0; Autotask: the zone "
                                 "discovery root, https://webservices.autotask.net/ATServicesRest/V1.0; HaloPSA: the "
                                 "instance root serving /auth and /api, required; SuperOps: the GraphQL endpoint, "
                                 "https://api.superops.ai/msp or https://euapi.superops.ai/msp); defaults to the "
                                 "vendor's")
    credentials: ConnectWiseCredentials | AutotaskCredentials | HaloCredentials | SuperOpsCredentials = Field(
        description="The vendor's credential fields (see the schema of each vendor)")
    settings: ConnectionSettings = Field(default_factory=ConnectionSettings)
    poll_interval_s: int = Field(300, ge=5, le=86_400, description="Incremental sync every this many seconds")

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return http_url(value)

    @model_validator(mode="after")
    def _fits_the_source(self) -> "ConnectionCreate":
        if not isinstance(self.credentials, CREDENTIAL_MODELS[self.source]):
            raise ValueError(f"credentials are not {self.source} credentials")
        if self.base_url is None and self.source not in DEFAULT_URLS:
            raise ValueError(f"a {self.source} connection needs its instance's base_url")
        self.base_url = self.base_url or DEFAULT_URLS[self.source]
        return self


class ConnectionUpdate(BaseModel):
    """Fields to change; credentials, when given, replace the stored ones whole (the vendor's fields)."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=200)
    base_url: str | None = Field(None, description="The PSA's API root, as on connect")
    credentials: dict[str, Any] | None = Field(None, description="All of the vendor's credential fields")
    settings: ConnectionSettings | None = None
    poll_interval_s: int | None = Field(None, ge=5, le=86_400)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return http_url(value)

    def credentials_for(self, source: str) -> dict[str, Any] | None:
        """The credentials validated as `source`'s; raises ValueError with the vendor's field errors."""
        if self.credentials is None:
            return None
        return CREDENTIAL_MODELS[source].model_validate(self.credentials).model_dump()


class ConnectionOut(BaseModel):
    id: uuid.UUID
    source: str
    name: str
    base_url: str
    credentials: dict[str, str | None] = Field(description="Masked: the last four characters of each secret")
    settings: dict[str, Any]
    status: str
    last_error: str | None
    cursors: dict[str, str]
    poll_interval_s: int
    next_sync_at: datetime | None
    webhook_ids: list[str]
    created_at: datetime


class ConnectionList(BaseModel):
    items: list[ConnectionOut]


class ConnectionCheck(BaseModel):
    ok: bool
    detail: str
    psa: dict[str, Any] | None = None


class SyncRequest(BaseModel):
    full: bool = Field(False, description="Ignore the cursors and re-read everything (unchanged data publishes nothing)")


class SyncRunOut(BaseModel):
    id: uuid.UUID
    connection_id: uuid.UUID
    trigger: str
    full: bool
    status: str
    counts: dict[str, int]
    errors: list[dict[str, Any]]
    error: str | None
    started_at: datetime
    finished_at: datetime | None


class SyncRunList(BaseModel):
    items: list[SyncRunOut]


class WebhookRegistration(BaseModel):
    public_url: str = Field("https://payloop.example.com", description="Where the PSA can reach this service")


class WritebackOut(BaseModel):
    id: uuid.UUID
    connection_id: uuid.UUID
    payment_id: str
    invoice_id: uuid.UUID
    reference: str
    amount_minor: int
    currency: str
    paid_on: date
    status: str
    external_id: str | None
    attempts: int
    last_error: str | None
    next_attempt_at: datetime | None


class WritebackList(BaseModel):
    items: list[WritebackOut]


class PsaRecordOut(BaseModel):
    id: uuid.UUID
    kind: str
    external_id: str
    data: dict[str, Any]
    updated_at: datetime


class PsaRecordPage(BaseModel):
    items: list[PsaRecordOut]
    next_cursor: str | None
