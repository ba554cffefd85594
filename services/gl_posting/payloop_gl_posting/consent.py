"""The OAuth consent step: the vendor's authorize URL, and the state that brings the answer home.

The browser comes back to our callback without our token, so the `state` carries whose connection
it completes: the tenant, the system, who started it, an expiry and a nonce, sealed with the service's
secret box (Fernet: authenticated, so it cannot be forged or altered, and opaque to the browser and
the vendor). The callback opens it, refuses it when forged or expired, and records the nonce so a
reloaded or replayed callback cannot reuse it.
"""
from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal
from urllib.parse import urlencode

from payloop.secrets import SecretError, secret_box
from payloop_gl_posting.settings import GlSettings

System = Literal["quickbooks", "xero"]

# What we ask each vendor for. Xero: offline_access for a refresh token, transactions to post,
# settings for the chart of accounts, reports.read for the reconciliation's Bank Summary.
SCOPES: dict[str, str] = {
    "quickbooks": "com.intuit.quickbooks.accounting",
    "xero": "offline_access accounting.transactions accounting.settings accounting.reports.read",
}


class InvalidConsentState(Exception):
    """A state we did not issue, or one that has expired."""


@dataclass(frozen=True)
class ConsentState:
    tenant_id: str
    system: System
    subject: str  # who started the consent, for the audit trail of the connection it makes
    scopes: tuple[str, ...]
    nonce: str
    expires_at: datetime
    company_id: str | None = None  # Xero: the organisation the MSP means to connect, if named up front


def seal(state: ConsentState) -> str:
    claims = {"t": state.tenant_id, "s": state.system, "u": state.subject, "sc": list(state.scopes),
              "n": state.nonce, "exp": int(state.expires_at.timestamp()), "c": state.company_id}
    return secret_box().encrypt(json.dumps(claims, separators=(",", ":")))


def open_state(token: str, *, now: datetime | None = None) -> ConsentState:
    try:
        claims = json.loads(secret_box().decrypt(token))
        state = ConsentState(tenant_id=claims["t"], system=claims["s"], subject=claims["u"],
                             scopes=tuple(claims["sc"]), nonce=claims["n"], company_id=claims["c"],
                             expires_at=datetime.fromtimestamp(int(claims["exp"]), UTC))
    except (SecretError, ValueError, KeyError, TypeError):
        raise InvalidConsentState("the consent state was not issued by us") from None
    if (now or datetime.now(UTC)) >= state.expires_at:
        raise InvalidConsentState("the consent state has expired; start the connection again")
    return state


def new_state(tenant_id: str, system: System, subject: str, scopes: frozenset[str], company_id: str | None,
              settings: GlSettings) -> ConsentState:
    return ConsentState(tenant_id=tenant_id, system=system, subject=subject, scopes=tuple(sorted(scopes)),
                        nonce=secrets.token_urlsafe(16), company_id=company_id,
                        expires_at=datetime.now(UTC) + timedelta(seconds=settings.consent_ttl_s))


def authorize_url(system: System, sealed_state: str, settings: GlSettings) -> str:
    base = settings.quickbooks_auth_url if system == "quickbooks" else settings.xero_auth_url
    client_id = settings.quickbooks_client_id if system == "quickbooks" else settings.xero_client_id
    return f"{base}?" + urlencode({"client_id": client_id, "response_type": "code", "scope": SCOPES[system],
                                   "redirect_uri": settings.oauth_redirect_uri, "state": sealed_state})
