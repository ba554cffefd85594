"""API schemas of the tenants service."""
from datetime import datetime
from typing import Any
from zoneinfo import available_timezones

from pydantic import BaseModel, ConfigDict, Field, field_validator


class TenantWrite(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200)
    timezone: str = Field("UTC", description="IANA zone in which the tenant's due dates are evaluated")
    currency: str = Field("USD", pattern=r"^[A-Z]{3}$")
    branding: dict[str, Any] = Field(default_factory=dict)
    settings: dict[str, Any] = Field(default_factory=dict)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        if value not in available_timezones():
            raise ValueError(f"unknown IANA timezone {value!r}")
        return value


class TenantOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    name: str
    timezone: str
    currency: str
    branding: dict[str, Any]
    settings: dict[str, Any]
    created_at: datetime
    updated_at: datetime
