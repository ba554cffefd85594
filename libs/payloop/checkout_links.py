"""Signed, expiring checkout links scoped to one client and its invoices (DESIGN.md section 4).

Stateless: collections mints a link for an email and payments verifies it, both with the key from
`PAYLOOP_CHECKOUT_LINK_KEY`, without calling each other. The token is
`base64url(json claims) + "." + base64url(HMAC-SHA256(key, claims))`; claims hold tenant, client,
invoice ids and expiry. Verification is constant-time and checks expiry.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from payloop.settings import platform_settings

DEV_LINK_KEY = "payloop-dev-checkout-link-key-0123456789abcdef"


class InvalidCheckoutLink(Exception):
    pass


@dataclass(frozen=True)
class CheckoutGrant:
    tenant_id: str
    client_id: str
    invoice_ids: tuple[str, ...]
    expires_at: datetime


def _key() -> bytes:
    settings = platform_settings()
    if settings.checkout_link_key:
        return settings.checkout_link_key.encode()
    if settings.env == "prod":
        raise InvalidCheckoutLink("PAYLOOP_CHECKOUT_LINK_KEY must be set in production")
    return DEV_LINK_KEY.encode()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def mint_checkout_token(tenant_id: str, client_id: str, invoice_ids: list[str], *,
                        ttl: timedelta = timedelta(days=30), now: datetime | None = None) -> str:
    expires = (now or datetime.now(UTC)) + ttl
    claims = {"t": tenant_id, "c": client_id, "i": sorted(invoice_ids), "exp": int(expires.timestamp())}
    body = json.dumps(claims, separators=(",", ":"), sort_keys=True).encode()
    signature = hmac.new(_key(), body, hashlib.sha256).digest()
    return f"{_b64(body)}.{_b64(signature)}"


def verify_checkout_token(token: str, *, now: datetime | None = None) -> CheckoutGrant:
    try:
        body_part, signature_part = token.split(".", 1)
        body, signature = _unb64(body_part), _unb64(signature_part)
    except (ValueError, TypeError):
        raise InvalidCheckoutLink("malformed checkout link") from None
    expected = hmac.new(_key(), body, hashlib.sha256).digest()
    if not hmac.compare_digest(signature, expected):
        raise InvalidCheckoutLink("checkout link signature does not match")
    try:
        claims = json.loads(body)
        expires = datetime.fromtimestamp(int(claims["exp"]), UTC)
        grant = CheckoutGrant(str(claims["t"]), str(claims["c"]), tuple(claims["i"]), expires)
    except (ValueError, KeyError, TypeError):
        raise InvalidCheckoutLink("malformed checkout link claims") from None
    if (now or datetime.now(UTC)) >= grant.expires_at:
        raise InvalidCheckoutLink("checkout link expired")
    return grant
