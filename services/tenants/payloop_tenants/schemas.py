"""API schemas of the tenant profile: strict (unknown fields are refused, not silently dropped)."""
from datetime import datetime
from zoneinfo import available_timezones

from pydantic import BaseModel, ConfigDict, Field, field_validator

Color = Field(None, pattern=r"^#[0-9A-Fa-f]{6}$", description="CSS hex colour, e.g. #0A7CFF")
Email = Field(None, max_length=254, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Branding(Strict):
    """How the tenant's emails, checkout page and statements look to its clients."""

    logo_url: str | None = Field(None, max_length=2048, pattern=r"^https://\S+$")
    primary_color: str | None = Color
    accent_color: str | None = Color
    sender_name: str | None = Field(None, min_length=1, max_length=100,
                                    description="Display name on reminder emails")
    sender_email: str | None = Email
    reply_to_email: str | None = Email
    support_email: str | None = Email
    support_phone: str | None = Field(None, max_length=40, pattern=r"^[0-9+().\- ]{3,40}$")
    support_url: str | None = Field(None, max_length=2048, pattern=r"^https://\S+$")


class ConvenienceFee(Strict):
    """A surcharge passed to the client for paying by card (and optionally ACH), where lawful."""

    card_basis_points: int = Field(0, ge=0, le=400, description="Percentage in 1/100 %, e.g. 300 = 3 %")
    ach_fixed_minor: int = Field(0, ge=0, le=10_000, description="Flat fee per ACH payment, minor units")


class RetryPolicy(Strict):
    """Default retry of failed auto-pay charges, as payments reads it from `tenant.updated`.

    Soft declines are retried `schedule_days` after the first failure; card networks' caps and ACH
    return rules still apply on top (payments enforces them)."""

    schedule_days: list[int] = Field(default_factory=lambda: [1, 3, 5, 7], min_length=0, max_length=10,
                                     description="Days after the first failure, one per retry, increasing")
    do_not_honor_max: int = Field(2, ge=0, le=5, description="Retries of a do-not-honour decline before stopping")
    notify_client: bool = True

    @field_validator("schedule_days")
    @classmethod
    def _sensible_days(cls, days: list[int]) -> list[int]:
        if any(not 1 <= d <= 60 for d in days):
            raise ValueError("each retry is 1 to 60 days after the first failure")
        if days != sorted(set(days)):
            raise ValueError("retry days must be strictly increasing")
        return days


class TenantSettings(Strict):
    convenience_fee: ConvenienceFee | None = None
    stripe_account_id: str | None = Field(None, pattern=r"^acct_[A-Za-z0-9]{1,64}$",
                                          description="The MSP's Stripe Connect account that charges run on")
    payment_retry: RetryPolicy = Field(default_factory=RetryPolicy)


class TenantWrite(Strict):
    name: str = Field(min_length=1, max_length=200)
    timezone: str = Field("UTC", description="IANA zone in which the tenant's due dates are evaluated")
    currency: str = Field("USD", pattern=r"^[A-Z]{3}$")
    branding: Branding = Field(default_factory=Branding)
    settings: TenantSettings = Field(default_factory=TenantSettings)

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
    branding: Branding
    settings: TenantSettings
    created_at: datetime
    updated_at: datetime
