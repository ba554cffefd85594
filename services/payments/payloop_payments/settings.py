"""Settings of the payments service (`PAYLOOP_STRIPE_*`, `PAYLOOP_PAYMENTS_*`)."""
from __future__ import annotations

from datetime import datetime
from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# localstripe accepts any `sk_test_...` key; dev and tests use this one.
DEV_STRIPE_KEY = "sk_test_payloop_dev"
DEV_WEBHOOK_SECRET = "whsec_payloop_dev_0123456789abcdef"
# localstripe's Stripe.js stand-in accepts any `pk_...` key.
DEV_PUBLISHABLE_KEY = "pk_test_payloop_dev"
STRIPE_JS_URL = "https://js.stripe.com/v3/"


class PaymentsSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PAYLOOP_", extra="ignore")

    env: str = "prod"
    stripe_api_key: str | None = None
    # Where the Stripe API lives: unset for api.stripe.com, localstripe's URL in dev and tests.
    stripe_api_base: str | None = None
    stripe_webhook_secret: str | None = None
    # Seconds before a Stripe call counts as timed out; it is then retried (twice) with the same key.
    stripe_timeout_s: float = 30.0
    # Stripe's own libraries reject signatures older than 5 minutes; so do we.
    stripe_webhook_tolerance_s: int = 300
    # Flood guard of /webhooks/stripe per source IP (Stripe retries a 429 later, so nothing is lost).
    stripe_webhook_rate_per_s: float = 50.0
    stripe_webhook_burst: int = 500
    # Stripe allows 100 read and write operations per second in live mode (25 in test mode); we stay
    # below it ourselves. Per process: with several payments processes on one account, divide it.
    stripe_max_requests_per_s: float = Field(90.0, gt=0)
    # A 429 all the same is retried this many times with exponential backoff (0.25 s, 0.5 s, ...)
    # before the call counts as unanswered (a charge is then presented again later, not failed).
    stripe_rate_limit_retries: int = Field(4, ge=0)
    # The scheduler's pause when a pass found less than a full batch; with a full batch it goes on at once.
    payments_scheduler_interval_s: float = 5.0
    # Charges the scheduler presents at once: a charge waits on Stripe and the database most of its
    # time, so throughput is about this divided by one charge's latency. The scheduler opens as many
    # database connections of its own (each charge holds at most one at a time), beside the API's pool.
    payments_scheduler_concurrency: int = Field(16, ge=1, le=64)
    # The service clock (scheduler, API): start at this instant, run `speed` times faster (dev, demos).
    payments_clock_start: datetime | None = None
    payments_clock_speed: float = 1.0
    payments_run_scheduler: bool = True
    # Public URL prefix of hosted checkout pages (what links in emails point at).
    payments_public_url: str = "http://127.0.0.1:8102"
    # What the checkout page loads as Stripe.js: js.stripe.com in production; unset with a
    # `stripe_api_base` means localstripe's stand-in at `{stripe_api_base}/js.stripe.com/v3/`.
    stripe_js_url: str | None = None
    stripe_publishable_key: str | None = None

    def api_key(self) -> str:
        if self.stripe_api_key:
            return self.stripe_api_key
        if self.env == "prod":
            raise RuntimeError("PAYLOOP_STRIPE_API_KEY must be set in production")
        return DEV_STRIPE_KEY

    def js_url(self) -> str:
        if self.stripe_js_url:
            return self.stripe_js_url
        if self.stripe_api_base:
            return f"{self.stripe_api_base.rstrip('/')}/js.stripe.com/v3/"
        return STRIPE_JS_URL

    def publishable_key(self) -> str:
        if self.stripe_publishable_key:
            return self.stripe_publishable_key
        if self.env == "prod":
            raise RuntimeError("PAYLOOP_STRIPE_PUBLISHABLE_KEY must be set in production")
        return DEV_PUBLISHABLE_KEY

    def webhook_secret(self) -> str:
        if self.stripe_webhook_secret:
            return self.stripe_webhook_secret
        if self.env == "prod":
            raise RuntimeError("PAYLOOP_STRIPE_WEBHOOK_SECRET must be set in production")
        return DEV_WEBHOOK_SECRET


@lru_cache
def payments_settings() -> PaymentsSettings:
    return PaymentsSettings()
