"""API schemas of the collections service."""
from __future__ import annotations

from datetime import date, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from payloop_collections.policy import DEFAULT_STEPS, Channel, Level

Minor = Field(strict=True, gt=0, description="Amount in minor units (cents)")


class StepModel(BaseModel):
    model_config = ConfigDict(extra="forbid")

    offset_days: int = Field(ge=-60, le=365, description="Days relative to the due date")
    level: Level
    channel: Channel = "email"
    template: str = Field("reminder", max_length=64)


class PolicyWrite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field("Collection policy", min_length=1, max_length=200)
    is_default: bool = Field(False, description="The tenant's default for clients without an override")
    steps: list[StepModel] = Field(
        default_factory=lambda: [StepModel(**vars(s)) for s in DEFAULT_STEPS], min_length=1, max_length=20,
        description="Ordered steps; a `handoff` step creates a task for a person instead of an email")
    business_days: bool = Field(True, description="Steps falling on a weekend or tenant holiday move to the next business day")
    send_hour: int = Field(9, ge=0, le=23, description="Local hour (tenant timezone) from which a day's reminders go out")
    quiet_start_hour: int = Field(20, ge=0, le=23)
    quiet_end_hour: int = Field(8, ge=0, le=23)
    drift_shift_days: int = Field(2, ge=0, le=30, description="Drifting clients: later steps this many days earlier")
    drift_firmer: bool = Field(True, description="Drifting clients: later steps one level firmer")
    autopay_courtesy: bool = Field(True, description="Auto-pay clients get a courtesy notice before the charge")

    @field_validator("steps")
    @classmethod
    def _distinct_offsets(cls, steps: list[StepModel]) -> list[StepModel]:
        offsets = [s.offset_days for s in steps]
        if len(set(offsets)) != len(offsets):
            raise ValueError("two steps share an offset")
        return sorted(steps, key=lambda s: s.offset_days)


class PolicyOut(PolicyWrite):
    model_config = ConfigDict(from_attributes=True)

    id: str
    built_in: bool = Field(False, description="The built-in default, in force until the tenant stores one")


class ClientPolicyWrite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    policy_id: str | None = Field(None, description="A policy of the tenant; null returns to the default")


class PauseWrite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    until: date | None = Field(None, description="Resume by itself after this local date; null: until resumed")
    note: str | None = Field(None, max_length=500)


class PromiseWrite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    promised_on: date
    amount_minor: int = Minor
    currency: str | None = Field(None, pattern=r"^[A-Z]{3}$", description="Defaults to the invoices' currency")
    invoice_ids: list[str] = Field(default_factory=list, max_length=200,
                                   description="Empty: the client's whole open balance")


class PromiseOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    client_id: str
    invoice_ids: list[str]
    promised_on: date
    amount_minor: int
    currency: str

    @field_validator("id", mode="before")
    @classmethod
    def _str(cls, value: Any) -> str:
        return str(value)


class BehaviourOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    samples: int
    average_days_to_pay: float
    recent_days_to_pay: float | None
    baseline_days_to_pay: float | None
    on_time_ratio: float
    drifting: bool


class OpenInvoiceOut(BaseModel):
    invoice_id: str
    number: str
    due_on: date
    balance_minor: int
    currency: str
    disputed: bool
    installment_plan: bool
    retry_at: datetime | None


class ClientOut(BaseModel):
    client_id: str
    known: bool = Field(description="Whether any event about this client has arrived")
    case_id: str | None = None
    name: str | None = None
    billing_emails: list[str] = []
    autopay_enrolled: bool = False
    policy_id: str | None = None
    paused: bool = False
    paused_until: date | None = None
    drifting: bool = False
    behaviour: BehaviourOut | None = None
    open_invoices: list[OpenInvoiceOut] = []


class TimelineEntryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    kind: str = Field(description="sent, skipped, paused, resumed, promised, escalated, stopped, send_failed, ...")
    invoice_id: str | None
    detail: dict[str, Any]
    at: datetime


class TimelinePage(BaseModel):
    items: list[TimelineEntryOut]
    next_cursor: int | None = Field(description="Pass as `after` for the next page")


class PreviewItemOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    invoice_id: str
    number: str
    balance_minor: int
    currency: str
    due_on: date
    step: str | None
    offset_days: int | None
    level: str | None
    action: str = Field(description="send, courtesy, retry_notice, escalate, skip, wait or done")
    at: datetime | None = Field(description="When, in the tenant's local time")
    reason: str | None


class SendNowOut(BaseModel):
    message_id: str | None
    task_id: str | None
    steps: list[str]
    deferred: bool = Field(description="The client was already emailed today; the steps go out tomorrow")


class MessageOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    client_id: str
    local_date: date
    recipients: list[str]
    subject: str
    level: str
    step: int
    template: str
    invoice_ids: list[str]
    status: str
    attempts: int
    last_error: str | None
    sent_at: datetime | None
    created_at: datetime

    @field_validator("id", mode="before")
    @classmethod
    def _str(cls, value: Any) -> str:
        return str(value)


class TaskOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    client_id: str
    case_id: str
    invoice_ids: list[str]
    level: str
    status: str
    context: dict[str, Any]
    created_at: datetime
    done_at: datetime | None
    done_by: str | None
    note: str | None

    @field_validator("id", "case_id", mode="before")
    @classmethod
    def _str(cls, value: Any) -> str:
        return str(value)


class TaskDoneWrite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str | None = Field(None, max_length=2000, description="What the person did")

