"""Settings of the collections service (`PAYLOOP_COLLECTIONS_*`)."""
from __future__ import annotations

from datetime import datetime

from pydantic_settings import BaseSettings, SettingsConfigDict


class CollectionsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PAYLOOP_COLLECTIONS_", extra="ignore")

    # payments serves the hosted checkout at /checkout/{token} (port 8102 in dev).
    checkout_base_url: str = "http://127.0.0.1:8102/checkout"
    checkout_link_days: int = 30

    smtp_host: str = "127.0.0.1"
    smtp_port: int = 1025
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = False
    smtp_timeout_s: float = 10.0
    mail_from: str = "billing@payloop.local"

    # Where this service is reachable from a mail client: the one-click unsubscribe links point here.
    public_base_url: str = "http://127.0.0.1:8103"
    # HMAC key of the unsubscribe links; required in production.
    unsubscribe_key: str | None = None

    # How often the scheduler and the mail sender wake up (real seconds).
    tick_seconds: float = 5.0
    # How many due invoices the scheduler loads and plans at once. Planning runs on the event loop
    # the consumer shares: a tenant's first tick after a large import must not hold it for its whole book.
    plan_at_once: int = 200
    send_max_attempts: int = 5

    # The clock: start at this instant and run `clock_speed` times faster (dev and demos only).
    clock_start: datetime | None = None
    clock_speed: float = 1.0
