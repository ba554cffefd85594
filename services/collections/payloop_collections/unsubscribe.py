"""Signed one-click unsubscribe links (RFC 8058), one per recipient of an email.

Stateless like the checkout links: `base64url(json {tenant, email}) + "." + base64url(HMAC-SHA256)`,
verified in constant time, with the key from `PAYLOOP_COLLECTIONS_UNSUBSCRIBE_KEY`. They do not
expire: an old email's link must keep working.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
from dataclasses import dataclass

from payloop.settings import platform_settings

from payloop_collections.settings import CollectionsSettings

DEV_KEY = "payloop-dev-unsubscribe-key-0123456789abcdef"
PLACEHOLDER = "%%UNSUBSCRIBE_URL%%"  # in the stored email, replaced per recipient when sending


class InvalidUnsubscribeLink(Exception):
    pass


@dataclass(frozen=True)
class Unsubscribe:
    tenant_id: str
    email: str


def _key(settings: CollectionsSettings) -> bytes:
    if settings.unsubscribe_key:
        return settings.unsubscribe_key.encode()
    if platform_settings().env == "prod":
        raise InvalidUnsubscribeLink("PAYLOOP_COLLECTIONS_UNSUBSCRIBE_KEY must be set in production")
    return DEV_KEY.encode()


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def mint(settings: CollectionsSettings, tenant_id: str, email: str) -> str:
    body = json.dumps({"t": tenant_id, "e": email.lower()}, separators=(",", ":"), sort_keys=True).encode()
    return f"{_b64(body)}.{_b64(hmac.new(_key(settings), body, hashlib.sha256).digest())}"


def url(settings: CollectionsSettings, tenant_id: str, email: str) -> str:
    return f"{settings.public_base_url.rstrip('/')}/unsubscribe/{mint(settings, tenant_id, email)}"


def verify(settings: CollectionsSettings, token: str) -> Unsubscribe:
    try:
        body_part, signature_part = token.split(".", 1)
        body = base64.urlsafe_b64decode(body_part + "=" * (-len(body_part) % 4))
        signature = base64.urlsafe_b64decode(signature_part + "=" * (-len(signature_part) % 4))
    except (ValueError, TypeError):
        raise InvalidUnsubscribeLink("malformed unsubscribe link") from None
    if not hmac.compare_digest(signature, hmac.new(_key(settings), body, hashlib.sha256).digest()):
        raise InvalidUnsubscribeLink("unsubscribe link signature does not match")
    try:
        claims = json.loads(body)
        return Unsubscribe(str(claims["t"]), str(claims["e"]))
    except (ValueError, KeyError, TypeError):
        raise InvalidUnsubscribeLink("malformed unsubscribe link claims") from None
