"""Settings of the tenants service (`PAYLOOP_*`)."""
from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class TenantsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PAYLOOP_", extra="ignore")

    env: str = "prod"
    # Partner endpoints on loopback or private networks would let a tenant make us call our own
    # infrastructure (SSRF): refused in prod; dev and tests deliver to local receivers. Unset follows `env`.
    webhooks_allow_private_urls: bool | None = None

    def private_urls_allowed(self) -> bool:
        if self.webhooks_allow_private_urls is None:
            return self.env != "prod"
        return self.webhooks_allow_private_urls
