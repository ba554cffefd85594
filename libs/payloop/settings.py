"""Settings read from `PAYLOOP_*` environment variables (pydantic-settings).

Platform-wide settings live in `PlatformSettings`; a service's own database URL is
`PAYLOOP_<SERVICE>_DATABASE_URL`, read by `service_database_url`.
"""
from __future__ import annotations

import os
from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class PlatformSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PAYLOOP_", extra="ignore")

    # Safe by default: a deployment that forgets to set this refuses HS256 tokens.
    # `payloop dev` and the test session set `dev` / `test`.
    env: str = Field("prod", description="dev | test | prod; HS256 tokens are accepted only outside prod")
    kafka_bootstrap: str = "127.0.0.1:9092"
    topic_partitions: int = 6
    topic_replication_factor: int = 1

    log_level: str = "INFO"
    log_json: bool = True

    # JWT verification: one of jwks_url, jwt_public_key (PEM) or, outside prod, jwt_secret (HS256).
    jwt_secret: str | None = "payloop-dev-secret-change-me-0123456789"
    jwt_public_key: str | None = None
    jwks_url: str | None = None
    jwt_issuer: str = "payloop"
    jwt_audience: str = "payloop"

    # Consumer runtime.
    consumer_max_attempts: int = 5
    consumer_backoff_initial_ms: int = 100
    consumer_backoff_max_ms: int = 5_000
    consumer_fetch_max_wait_ms: int = 20
    consumer_max_records: int = 500
    consumer_commit_interval_ms: int = 250
    consumer_session_timeout_ms: int = 10_000
    consumer_heartbeat_interval_ms: int = 1_000

    # Outbox relay.
    relay_batch_size: int = 500
    relay_poll_interval_s: float = 1.0
    relay_backoff_max_s: float = 10.0
    relay_send_timeout_s: float = 15.0
    outbox_retention_hours: int = 24
    # Inbox rows must outlive any redelivery: keep them longer than the topics' retention.
    inbox_retention_days: int = 14

    # Fernet keys, comma-separated, newest first (payloop.secrets); required in prod.
    encryption_keys: str | None = None
    # HMAC key of the signed checkout links (payloop.checkout_links); required in prod.
    checkout_link_key: str | None = None

    host: str = "127.0.0.1"


@lru_cache
def platform_settings() -> PlatformSettings:
    return PlatformSettings()


def service_database_url(service: str) -> str:
    """The service's own database, `PAYLOOP_<SERVICE>_DATABASE_URL` (SQLAlchemy asyncpg URL)."""
    key = f"PAYLOOP_{service.upper()}_DATABASE_URL"
    url = os.environ.get(key)
    if not url:
        raise RuntimeError(
            f"{key} is not set: point it at the {service} database, "
            f"e.g. postgresql+asyncpg://payloop@127.0.0.1:5432/payloop_{service} "
            "(`payloop dev` sets it for you)"
        )
    return url
