"""The Standard Webhooks signature scheme (https://www.standardwebhooks.com/).

Each request carries `webhook-id` (the message id, the same on every retry and replay, so a
receiver can de-duplicate), `webhook-timestamp` (Unix seconds) and `webhook-signature`: space
separated `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, one per active secret. Secrets are
`whsec_` followed by the base64 of the key bytes; the HMAC key is the decoded bytes.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

SECRET_PREFIX = "whsec_"
_KEY_BYTES = 32


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(_KEY_BYTES)).decode()


def _key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def signature(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{message_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_header(secrets_: list[str], message_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: one signature per secret (two during a rotation's overlap)."""
    return " ".join(signature(s, message_id, timestamp, body) for s in secrets_)
