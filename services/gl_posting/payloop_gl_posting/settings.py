"""gl_posting settings (`PAYLOOP_GL_*`): where the accounting systems are and how hard to push them.

Read when needed rather than cached, so a test can point the service at a simulator on a free port.
The defaults are the local simulators of `payloop dev`.
"""
from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict


class GlSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PAYLOOP_GL_", extra="ignore")

    quickbooks_api_base: str = "http://127.0.0.1:8210"
    quickbooks_auth_url: str = "http://127.0.0.1:8210/connect/oauth2"
    quickbooks_token_url: str = "http://127.0.0.1:8210/oauth2/v1/tokens/bearer"
    quickbooks_client_id: str = "payloop-dev"
    quickbooks_client_secret: str = "payloop-dev-secret"
    # Intuit retired minor versions below 75 in 2025; every call names the one we were written for.
    quickbooks_minorversion: int = 75

    xero_api_base: str = "http://127.0.0.1:8211/api.xro/2.0"
    xero_auth_url: str = "http://127.0.0.1:8211/identity/connect/authorize"
    xero_token_url: str = "http://127.0.0.1:8211/connect/token"
    xero_connections_url: str = "http://127.0.0.1:8211/connections"
    xero_client_id: str = "payloop-dev"
    xero_client_secret: str = "payloop-dev-secret"
    # The contact Xero records processor fees against (a bank transaction must name one).
    xero_fee_contact: str = "Stripe"

    # Where the vendors send the MSP's browser back after consent (registered with each vendor's app).
    oauth_redirect_uri: str = "http://127.0.0.1:8104/gl/oauth/callback"
    consent_ttl_s: int = 600

    http_timeout_s: float = 20.0
    poll_interval_s: float = 0.5
    batch_size: int = 50
    # Entries waiting for their payment to be posted first look again this soon.
    dependency_retry_s: float = 1.0
    max_backoff_s: float = 3600.0
    # After a timeout or a dropped connection (the call may have been applied; we look first).
    transient_retry_s: float = 5.0
