"""OAuth 2.0 tokens of a connection: encrypted at rest, refreshed with rotation, never lost.

A refresh spends the old refresh token (QuickBooks and Xero both rotate), so the new pair is
committed in its own transaction before anything else happens, under a row lock so two workers
never spend the same refresh token. A refresh answered `invalid_grant` means the tenant revoked us:
the connection is marked revoked and posting stops until the tenant reconnects.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from payloop.secrets import secret_box
from payloop_gl_posting.connectors.base import PostingError, TokenRevoked
from payloop_gl_posting.models import Connection

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class TokenEndpoint:
    url: str
    client_id: str
    client_secret: str


async def request_tokens(http: httpx.AsyncClient, endpoint: TokenEndpoint, form: dict[str, str]) -> dict:
    """POST a grant to the token endpoint (client credentials in Basic auth, as both vendors want)."""
    response = await http.post(endpoint.url, data=form, auth=(endpoint.client_id, endpoint.client_secret),
                               headers={"Accept": "application/json"})
    if response.status_code == 400 and response.json().get("error") == "invalid_grant":
        raise TokenRevoked(f"the accounting system refused the {form['grant_type']} grant (invalid_grant)")
    if response.status_code >= 400:
        raise PostingError(f"token endpoint answered {response.status_code}: {response.text[:200]}")
    return response.json()


def store_tokens(connection: Connection, tokens: dict) -> None:
    box = secret_box()
    connection.access_token_enc = box.encrypt(tokens["access_token"])
    connection.refresh_token_enc = box.encrypt(tokens["refresh_token"])
    connection.access_expires_at = datetime.now(UTC) + timedelta(seconds=int(tokens.get("expires_in", 1800)))
    connection.updated_at = datetime.now(UTC)


class TokenStore:
    """The access token of one tenant's connection, refreshed when it expires or is refused."""

    def __init__(self, session_factory: async_sessionmaker[AsyncSession], tenant_id: str,
                 http: httpx.AsyncClient, endpoint: TokenEndpoint):
        self.session_factory, self.tenant_id, self.http, self.endpoint = session_factory, tenant_id, http, endpoint
        self._access: str | None = None

    async def access_token(self) -> str:
        if self._access is None:
            async with self.session_factory() as session:
                connection = await session.get(Connection, self.tenant_id)
                if connection is None or connection.status != "connected" or not connection.access_token_enc:
                    raise TokenRevoked("the accounting connection is not active; reconnect it")
                if connection.access_expires_at and connection.access_expires_at > datetime.now(UTC) + timedelta(seconds=60):
                    self._access = secret_box().decrypt(connection.access_token_enc)
                    return self._access
            return await self.refresh(refused=None)
        return self._access

    async def refresh(self, refused: str | None) -> str:
        """A fresh access token; `refused` is the one the vendor just rejected (if any)."""
        async with self.session_factory() as session, session.begin():
            connection = (await session.execute(
                select(Connection).where(Connection.tenant_id == self.tenant_id).with_for_update())).scalar_one_or_none()
            if connection is None or connection.status != "connected" or not connection.refresh_token_enc:
                raise TokenRevoked("the accounting connection is not active; reconnect it")
            box = secret_box()
            current = box.decrypt(connection.access_token_enc) if connection.access_token_enc else None
            fresh = connection.access_expires_at and connection.access_expires_at > datetime.now(UTC) + timedelta(seconds=60)
            if current and current != refused and fresh:
                self._access = current  # another worker refreshed while we waited for the lock
                return current
            revoked: TokenRevoked | None = None
            try:
                tokens = await request_tokens(self.http, self.endpoint, {
                    "grant_type": "refresh_token", "refresh_token": box.decrypt(connection.refresh_token_enc)})
                store_tokens(connection, tokens)
                log.info("gl.connection.token_refreshed", tenant_id=self.tenant_id)
            except TokenRevoked as exc:
                revoked = exc
                connection.status, connection.last_error = "revoked", str(exc)
                connection.updated_at = datetime.now(UTC)
                log.warning("gl.connection.revoked", tenant_id=self.tenant_id)
        if revoked is not None:
            raise revoked
        self._access = tokens["access_token"]
        return self._access
