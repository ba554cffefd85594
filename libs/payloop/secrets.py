"""Secrets at rest (PSA credentials, OAuth tokens, webhook signing secrets), encrypted with keys
from settings, with rotation.

`PAYLOOP_ENCRYPTION_KEYS` is a comma-separated list of Fernet keys, newest first: new values are
encrypted with the first, and any listed key decrypts, so rotating is "prepend a new key, run
`rotate_column` over every column holding secrets, then drop the old key". `SecretBox.rotate`
re-encrypts a token with the newest key. Plain values never go into logs, events or API responses:
APIs show `mask()`.
"""
from __future__ import annotations

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import Table, and_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from payloop.settings import platform_settings

# A fixed key for dev and tests only; `prod` refuses to start without PAYLOOP_ENCRYPTION_KEYS.
DEV_KEY = "cGF5bG9vcC1kZXYta2V5LW5vdC1mb3ItcHJvZHVjdGk="


class SecretError(Exception):
    pass


class SecretBox:
    def __init__(self, keys: list[str]):
        if not keys:
            raise SecretError("no encryption keys configured (PAYLOOP_ENCRYPTION_KEYS)")
        try:
            self._fernet = MultiFernet([Fernet(k.encode()) for k in keys])
        except ValueError as exc:
            raise SecretError(f"invalid key in PAYLOOP_ENCRYPTION_KEYS: {exc}") from None

    def encrypt(self, plain: str) -> str:
        return self._fernet.encrypt(plain.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise SecretError("cannot decrypt: the value was encrypted with a key no longer configured") from None

    def rotate(self, token: str) -> str:
        """The same secret, re-encrypted with the newest key."""
        try:
            return self._fernet.rotate(token.encode()).decode()
        except InvalidToken:
            raise SecretError("cannot re-encrypt: the value was encrypted with a key no longer configured") from None


def mask(plain: str | None) -> str | None:
    """What an API may show of a secret: its last four characters."""
    if not plain:
        return None
    return "****" + plain[-4:] if len(plain) > 8 else "****"


@lru_cache
def secret_box() -> SecretBox:
    settings = platform_settings()
    keys = [k.strip() for k in (settings.encryption_keys or "").split(",") if k.strip()]
    if not keys:
        if settings.env == "prod":
            raise SecretError("PAYLOOP_ENCRYPTION_KEYS must be set in production")
        keys = [DEV_KEY]
    return SecretBox(keys)


async def rotate_column(session: AsyncSession, table: Table, column: str, *, tenant_id: str | None = None,
                        box: SecretBox | None = None) -> int:
    """Re-encrypt every stored value of `table.column` with the newest key; returns how many.

    `tenant_id` limits it to one tenant's rows (a tenant admin's request); without it every row is
    rewritten (an operator's run). Rows are locked while they are rewritten, so a value written
    meanwhile is not replaced by an older one. The caller's transaction commits the lot, so a run
    that fails rotates nothing and can simply be repeated.
    """
    box = box or secret_box()
    keys, value = list(table.primary_key.columns), table.c[column]
    query = select(*keys, value).where(value.is_not(None)).with_for_update()
    if tenant_id is not None:
        query = query.where(table.c.tenant_id == tenant_id)
    rows = (await session.execute(query)).all()
    for row in rows:
        await session.execute(update(table).where(and_(*(key == row[i] for i, key in enumerate(keys))))
                              .values({column: box.rotate(row[-1])}))
    return len(rows)

