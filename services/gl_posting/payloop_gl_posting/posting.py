"""The posting worker: journal entries out to the tenant's accounting system, each exactly once.

For each due entry (oldest first, leased so two workers never hold the same one):
1. If an earlier call may have reached the vendor (`may_have_applied`), look for our reference
   there first; if the record exists, adopt its id instead of posting again.
2. Otherwise mark `may_have_applied` and commit, then post with the entry id as the idempotency key.
3. Store the vendor's id, mark the entry posted and emit `gl.posted`, in one transaction.
A failure is recorded as an exception on the entry (reason, detail), `gl.post_failed` is emitted the
first time, and the entry is rescheduled when a retry can succeed or parked for an operator.
The same loop exchanges new connections' authorization codes for tokens.
"""
from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import httpx
import structlog
from fastapi import FastAPI
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from payloop import outbox
from payloop.events.envelope import new_event
from payloop.ids import uuid7
from payloop.metrics import EXTERNAL_API_ERRORS
from payloop.secrets import secret_box
from payloop_gl_posting import repository
from payloop_gl_posting.account_mapping import require_mapped
from payloop_gl_posting.connectors.base import Ledger, PostingError, TokenRevoked
from payloop_gl_posting.connectors.quickbooks import QuickBooks
from payloop_gl_posting.connectors.xero import Xero, connected_tenants
from payloop_gl_posting.journal import JournalEntry
from payloop_gl_posting.models import AccountMapping, Connection, Entry, PostingException
from payloop_gl_posting.oauth import TokenEndpoint, TokenStore, request_tokens, store_tokens
from payloop_gl_posting.settings import GlSettings

log = structlog.get_logger(__name__)
PRODUCER = "gl_posting"


def token_endpoint(system: str, settings: GlSettings) -> TokenEndpoint:
    if system == "quickbooks":
        return TokenEndpoint(settings.quickbooks_token_url, settings.quickbooks_client_id,
                             settings.quickbooks_client_secret)
    if system == "xero":
        return TokenEndpoint(settings.xero_token_url, settings.xero_client_id, settings.xero_client_secret)
    raise PostingError(f"accounting system {system!r} is not supported")


def ledger_for(connection: Connection, http: httpx.AsyncClient, settings: GlSettings,
               session_factory: async_sessionmaker[AsyncSession]) -> Ledger:
    tokens = TokenStore(session_factory, connection.tenant_id, http, token_endpoint(connection.system, settings))
    if connection.system == "xero":
        return Xero(http, settings, connection.company_id, tokens)
    return QuickBooks(http, settings, connection.company_id, tokens)


@dataclass
class DatabaseContext:
    """Lookups a connector needs, each in a short transaction of its own."""

    session_factory: async_sessionmaker[AsyncSession]
    tenant_id: str
    system: str

    async def invoice_number(self, invoice_id: str) -> str | None:
        async with self.session_factory() as session:
            return await repository.invoice_number(session, self.tenant_id, invoice_id)

    async def posted_payment(self, payment_id: str) -> str | None:
        async with self.session_factory() as session:
            return await repository.posted_payment(session, self.tenant_id, payment_id)

    async def surcharge(self, payment_id: str) -> int:
        async with self.session_factory() as session:
            return await repository.surcharge(session, self.tenant_id, payment_id)

    async def remembered(self, kind: str, our_id: str) -> str | None:
        async with self.session_factory() as session:
            return await repository.remembered(session, self.tenant_id, self.system, kind, our_id)

    async def remember(self, kind: str, our_id: str, external_id: str) -> None:
        async with self.session_factory() as session, session.begin():
            await repository.remember(session, self.tenant_id, self.system, kind, our_id, external_id)


# --- connections ----------------------------------------------------------------------------------

async def complete_authorizations(session_factory: async_sessionmaker[AsyncSession], http: httpx.AsyncClient,
                                  settings: GlSettings) -> int:
    """Exchange the authorization codes of new connections for tokens; re-queue what was waiting."""
    async with session_factory() as session:
        pending = list((await session.scalars(select(Connection.tenant_id).where(
            Connection.status == "authorizing"))).all())
    for tenant_id in pending:
        async with session_factory() as session, session.begin():
            connection = await session.get(Connection, tenant_id, with_for_update=True)
            if connection is None or connection.status != "authorizing" or not connection.authorization_code_enc:
                continue
            try:
                tokens = await request_tokens(http, token_endpoint(connection.system, settings), {
                    "grant_type": "authorization_code", "redirect_uri": connection.redirect_uri,
                    "code": secret_box().decrypt(connection.authorization_code_enc)})
                if connection.system == "xero":
                    connection.company_id = await xero_organisation(http, settings, tokens, connection.company_id)
            except (PostingError, httpx.HTTPError) as exc:
                connection.status, connection.last_error = "failed", f"authorization failed: {exc}"
                log.warning("gl.connection.authorization_failed", tenant_id=tenant_id, error=str(exc))
                continue
            store_tokens(connection, tokens)
            connection.status, connection.last_error = "connected", None
            connection.authorization_code_enc = None  # single use; no reason to keep it
            connection.connected_at = datetime.now(UTC)
            # Whatever stopped for want of a connection can go now.
            await repository.requeue(session, tenant_id, reasons=["token_revoked"])
            log.info("gl.connection.connected", tenant_id=tenant_id, system=connection.system)
    return len(pending)


async def xero_organisation(http: httpx.AsyncClient, settings: GlSettings, tokens: dict, wanted: str) -> str:
    """The organisation a Xero grant connects: the one named, which the grant must reach, or else the
    grant's only one (Xero's consent redirect names none; the MSP picks them on Xero's screen)."""
    reached = await connected_tenants(http, settings, tokens["access_token"])
    if wanted:
        if wanted not in reached:
            raise PostingError(f"the consent does not reach Xero organisation {wanted}")
        return wanted
    if len(reached) != 1:
        raise PostingError(f"the consent reaches {len(reached)} Xero organisations; connect again naming one "
                           f"(company_id): {', '.join(reached) or 'none'}")
    return reached[0]


# --- posting --------------------------------------------------------------------------------------

async def post_due(session_factory: async_sessionmaker[AsyncSession], http: httpx.AsyncClient,
                   settings: GlSettings, *, tenant_id: str | None = None) -> int:
    """Post what is due now; returns how many entries were attempted."""
    lease = timedelta(seconds=settings.http_timeout_s * 4 + 30)
    async with session_factory() as session, session.begin():
        ids = await repository.claim_due(session, limit=settings.batch_size, lease=lease, tenant_id=tenant_id)
    blocked: set[str] = set()
    for entry_id, tenant in ids:
        if tenant in blocked:
            # One revoked connection is one exception, not one per waiting entry: hand these back.
            await _set(session_factory, entry_id, state="pending", lease_until=None)
        elif await post_entry(session_factory, http, settings, entry_id) == TokenRevoked.reason:
            blocked.add(tenant)
    return len(ids)


async def post_entry(session_factory: async_sessionmaker[AsyncSession], http: httpx.AsyncClient,
                     settings: GlSettings, entry_id: uuid.UUID) -> str | None:
    """Post one leased entry; returns the failure reason, or None when it is posted."""
    async with session_factory() as session:
        row, entry = await repository.load_entry(session, entry_id)
        connection = await session.get(Connection, row.tenant_id)
        mapping = await session.get(AccountMapping, row.tenant_id)
        may_have_applied = row.may_have_applied
    assert connection is not None and mapping is not None  # claim_due joins both
    ledger = ledger_for(connection, http, settings, session_factory)
    context = DatabaseContext(session_factory, entry.tenant_id, connection.system)
    try:
        require_mapped(entry, mapping)
        external_id = await ledger.find_posted(entry, context) if may_have_applied else None
        if external_id is None:
            await _set(session_factory, entry_id, may_have_applied=True)
            external_id = await ledger.post(entry, mapping, context)
    except PostingError as exc:
        EXTERNAL_API_ERRORS.labels(PRODUCER, connection.system, exc.reason).inc()
        await _failed(session_factory, entry, connection.system, exc, settings)
        return exc.reason
    except httpx.TimeoutException as exc:
        # The vendor may have applied it: the next attempt looks before it posts.
        await _failed(session_factory, entry, connection.system,
                      PostingError(f"no answer from {connection.system} in time ({type(exc).__name__})",
                                   retry_after_s=settings.transient_retry_s), settings)
        return "vendor_error"
    except httpx.HTTPError as exc:
        await _failed(session_factory, entry, connection.system,
                      PostingError(f"{connection.system} unreachable: {exc!r}",
                                   retry_after_s=settings.transient_retry_s), settings)
        return "vendor_error"
    await _posted(session_factory, entry, connection.system, external_id)
    return None


async def _set(session_factory: async_sessionmaker[AsyncSession], entry_id: uuid.UUID, **values) -> None:
    async with session_factory() as session, session.begin():
        row = await session.get(Entry, entry_id)
        for key, value in values.items():
            setattr(row, key, value)


async def _posted(session_factory: async_sessionmaker[AsyncSession], entry: JournalEntry, system: str,
                  external_id: str) -> None:
    async with session_factory() as session, session.begin():
        row = await session.get(Entry, entry.id, with_for_update=True)
        if row.state == "posted":
            return
        row.state, row.system, row.external_id = "posted", system, external_id
        row.posted_at, row.lease_until, row.last_error = datetime.now(UTC), None, None
        await repository.resolve_exceptions(session, entry.id)
        await outbox.publish(session, new_event(
            "gl.posted", tenant_id=entry.tenant_id, client_id=entry.client_id, producer=PRODUCER,
            data={"entry_id": str(entry.id), "purpose": entry.purpose, "system": system,
                  "external_id": external_id, "source_event_id": str(entry.source_event_id)}))
    log.info("gl.entry.posted", tenant_id=entry.tenant_id, entry_id=str(entry.id), purpose=entry.purpose,
             system=system, external_id=external_id)


def _delay(exc: PostingError, attempts: int, settings: GlSettings) -> float:
    if exc.retry_after_s is not None:
        return exc.retry_after_s
    if exc.reason == "waiting_for_payment":
        return settings.dependency_retry_s
    return min(settings.max_backoff_s, 30.0 * 2 ** max(attempts - 1, 0))


async def _failed(session_factory: async_sessionmaker[AsyncSession], entry: JournalEntry, system: str,
                  exc: PostingError, settings: GlSettings) -> None:
    async with session_factory() as session, session.begin():
        row = await session.get(Entry, entry.id, with_for_update=True)
        definite = exc.reason != "vendor_error"
        row.state = "pending" if exc.retryable else "failed"
        row.next_attempt_at = datetime.now(UTC) + timedelta(seconds=_delay(exc, row.attempts, settings))
        row.lease_until, row.last_error, row.system = None, exc.detail, system
        if definite and not isinstance(exc, TokenRevoked):
            # The vendor answered with a refusal: nothing was applied, no need to look first next time.
            row.may_have_applied = False
        existing = await repository.open_exception(session, entry.id)
        if existing is not None and existing.reason == exc.reason:
            existing.occurrences += 1
            existing.detail, existing.retryable, existing.updated_at = exc.detail, exc.retryable, datetime.now(UTC)
            return
        if existing is not None:
            existing.status, existing.resolved_at = "resolved", datetime.now(UTC)
        session.add(PostingException(id=uuid7(), tenant_id=entry.tenant_id, entry_id=entry.id, reason=exc.reason,
                                     detail=exc.detail, retryable=exc.retryable))
        if exc.reason != "waiting_for_payment":  # the normal order of things, not a failure to report
            await outbox.publish(session, new_event(
                "gl.post_failed", tenant_id=entry.tenant_id, client_id=entry.client_id, producer=PRODUCER,
                data={"entry_id": str(entry.id), "purpose": entry.purpose, "system": system,
                      "reason": exc.reason, "retryable": exc.retryable,
                      "source_event_id": str(entry.source_event_id)}))
    log.warning("gl.entry.failed", tenant_id=entry.tenant_id, entry_id=str(entry.id), reason=exc.reason,
                detail=exc.detail, retryable=exc.retryable)


async def posting_loop(app: FastAPI, stop: asyncio.Event) -> None:
    """Background loop of the service: connect, post, sleep when there is nothing to do."""
    settings = GlSettings()
    session_factory = app.state.session_factory
    async with httpx.AsyncClient(timeout=settings.http_timeout_s) as http:
        while not stop.is_set():
            worked = 0
            try:
                await complete_authorizations(session_factory, http, settings)
                worked = await post_due(session_factory, http, settings)
            except Exception as exc:  # a database blip must not end the loop
                log.error("gl.posting_loop.error", error=repr(exc))
            if not worked:
                try:
                    await asyncio.wait_for(stop.wait(), settings.poll_interval_s)
                except asyncio.TimeoutError:
                    pass
