"""Routes of the gl_posting service: connection, account mapping, journal, exceptions, reconciliation."""
from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Literal

import httpx
from fastapi import APIRouter, Depends, Query, Request
from sqlalchemy.ext.asyncio import AsyncSession

from payloop import audit
from payloop.auth import Principal, require
from payloop.db import db_session
from payloop.problems import PROBLEM_RESPONSES, Problem
from payloop.ratelimit import RateLimiter, rate_limited
from payloop.secrets import mask, secret_box
from payloop_gl_posting import account_mapping, consent, reconciliation, repository
from payloop_gl_posting.connectors.base import Ledger, PostingError
from payloop_gl_posting.journal import Purpose
from payloop_gl_posting.models import AccountMapping, Connection
from payloop_gl_posting.posting import PRODUCER, ledger_for
from payloop_gl_posting.schemas import (
    AccountMappingIn, AccountMappingState, AccountMappingView, ConnectionCreate, ConnectionView, ConsentRequest,
    ConsentView, EntryPage,
    EntryView, ExceptionPage, ExceptionView, LineView, ReconciliationReport, RetryRequest, RetryResult,
)
from payloop_gl_posting.settings import GlSettings

router = APIRouter(prefix="/v1/gl", tags=["gl posting"], responses=PROBLEM_RESPONSES)
# The consent callback: reached by the MSP's browser coming back from the vendor, with no bearer token.
consent_router = APIRouter(prefix="/gl", tags=["gl posting"], responses=PROBLEM_RESPONSES)
# A person comes back from a consent screen now and then; a flood is someone guessing states.
CALLBACK_LIMITER = RateLimiter(rate=1, burst=10)


def _connection_view(connection: Connection | None) -> ConnectionView:
    if connection is None:
        return ConnectionView(status="not_connected")
    token = secret_box().decrypt(connection.access_token_enc) if connection.access_token_enc else None
    return ConnectionView(status=connection.status, system=connection.system, company_id=connection.company_id or None,
                          access_token=mask(token), access_expires_at=connection.access_expires_at,
                          connected_at=connection.connected_at, last_error=connection.last_error)


@router.get("/connection", response_model=ConnectionView, summary="The tenant's accounting connection")
async def get_connection(principal: Principal = require("ar:read"),
                         session: AsyncSession = Depends(db_session)) -> ConnectionView:
    return _connection_view(await session.get(Connection, principal.tenant_id))


@router.put("/connection", response_model=ConnectionView, status_code=202,
            summary="Connect (or reconnect) with an OAuth authorization code; tokens are fetched in the background")
async def put_connection(body: ConnectionCreate, principal: Principal = require("gl:write"),
                         session: AsyncSession = Depends(db_session)) -> ConnectionView:
    return await begin_connection(session, principal, body.system, body.company_id, body.authorization_code,
                                  body.redirect_uri)


async def begin_connection(session: AsyncSession, principal: Principal, system: str, company_id: str | None,
                           code: str, redirect_uri: str) -> ConnectionView:
    """Store the authorization code (encrypted) for the posting loop to exchange; audited.

    `company_id` None: a Xero consent that named no organisation; the grant's only one is taken."""
    connection = await session.get(Connection, principal.tenant_id, with_for_update=True)
    action = "accounting_connection.changed"
    if connection is None:
        connection = Connection(tenant_id=principal.tenant_id)
        session.add(connection)
        action = "accounting_connection.created"
    connection.system, connection.redirect_uri = system, redirect_uri
    connection.company_id = company_id or ""  # learned from Xero's /connections after the exchange
    connection.status, connection.last_error = "authorizing", None
    connection.authorization_code_enc = secret_box().encrypt(code)
    connection.access_token_enc = connection.refresh_token_enc = connection.access_expires_at = None
    connection.updated_at = datetime.now(UTC)
    await session.flush()
    await audit.record(session, principal, action, ("accounting_connection", principal.tenant_id),
                       {"system": system, "company_id": company_id, "redirect_uri": redirect_uri},
                       producer=PRODUCER)
    return _connection_view(connection)


@router.post("/connection/consent", response_model=ConsentView,
             summary="Start connecting: the vendor's consent URL, with a state bound to this tenant that expires")
async def start_consent(body: ConsentRequest, principal: Principal = require("gl:write")) -> ConsentView:
    settings = GlSettings()
    state = consent.new_state(principal.tenant_id, body.system, principal.subject, principal.scopes,
                              body.company_id, settings)
    sealed = consent.seal(state)
    return ConsentView(authorize_url=consent.authorize_url(body.system, sealed, settings), state=sealed,
                       redirect_uri=settings.oauth_redirect_uri, expires_at=state.expires_at)


@consent_router.get("/oauth/callback", response_model=ConnectionView, status_code=202,
                    summary="Where the vendor sends the browser back: checks the state, then connects as "
                            "PUT /v1/gl/connection does",
                    description="Called by the MSP's browser, without our token (hence outside /v1): the sealed "
                                "state says whose connection it is.",
                    dependencies=[rate_limited(CALLBACK_LIMITER)])
async def consent_callback(state: str = Query(min_length=1, max_length=2000), code: str | None = None,
                           realmId: str | None = Query(None, description="QuickBooks: the company consented"),  # noqa: N803
                           error: str | None = None, error_description: str | None = None,
                           session: AsyncSession = Depends(db_session)) -> ConnectionView:
    try:
        opened = consent.open_state(state)
    except consent.InvalidConsentState as exc:
        raise Problem(401, "Invalid consent state", str(exc)) from None
    if error:
        raise Problem(400, "Consent refused", f"the {opened.system} consent answered {error}: {error_description or ''}".strip())
    if not code:
        raise Problem(422, "Invalid input", "the callback carries no authorization code")
    if opened.system == "quickbooks" and not realmId:
        raise Problem(422, "Invalid input", "QuickBooks' callback carries no realmId")
    await repository.purge_consent_states(session)
    if not await repository.use_consent_state(session, opened.nonce, opened.tenant_id, opened.expires_at):
        raise Problem(409, "Consent already used", "this consent's callback was already received; start again")
    principal = Principal(tenant_id=opened.tenant_id, scopes=frozenset(opened.scopes), subject=opened.subject)
    return await begin_connection(session, principal, opened.system,
                                  realmId if opened.system == "quickbooks" else opened.company_id,
                                  code, GlSettings().oauth_redirect_uri)


@router.get("/account-mapping", response_model=AccountMappingState, summary="The tenant's account mapping")
async def get_mapping(principal: Principal = require("ar:read"),
                      session: AsyncSession = Depends(db_session)) -> AccountMappingState:
    mapping = await session.get(AccountMapping, principal.tenant_id)
    if mapping is None:
        return AccountMappingState(configured=False)
    return AccountMappingState(configured=True, mapping=AccountMappingView.model_validate(mapping, from_attributes=True))


@asynccontextmanager
async def connected_ledger(request: Request, connection: Connection) -> AsyncIterator[Ledger]:
    """The tenant's accounting system for the length of one request."""
    settings = GlSettings()
    async with httpx.AsyncClient(timeout=settings.http_timeout_s) as http:
        yield ledger_for(connection, http, settings, request.app.state.session_factory)


@router.put("/account-mapping", response_model=AccountMappingState,
            summary="Set the account mapping; checked against the chart of accounts when connected")
async def put_mapping(body: AccountMappingIn, request: Request, principal: Principal = require("gl:write"),
                      session: AsyncSession = Depends(db_session)) -> AccountMappingState:
    connection = await session.get(Connection, principal.tenant_id)
    validated_at = None
    if connection is not None and connection.status == "connected":
        async with connected_ledger(request, connection) as ledger:
            try:
                accounts, items = await ledger.chart_of_accounts(), await ledger.items()
            except (PostingError, httpx.HTTPError) as exc:
                raise Problem(502, "Accounting System Unavailable",
                              f"could not read the chart of accounts: {exc}") from None
        errors = account_mapping.problems(body.model_dump(), accounts, items, connection.system)
        if errors:
            raise Problem(422, "Invalid account mapping", "the mapping does not fit the chart of accounts",
                          errors=errors)
        validated_at = datetime.now(UTC)
    mapping = await session.get(AccountMapping, principal.tenant_id)
    if mapping is None:
        mapping = AccountMapping(tenant_id=principal.tenant_id)
        session.add(mapping)
    for key, value in body.model_dump().items():
        setattr(mapping, key, value)
    mapping.validated_at, mapping.updated_at = validated_at, datetime.now(UTC)
    await session.flush()
    # What waited for an account the mapping did not name can go now (or fails again, saying so).
    await repository.requeue(session, principal.tenant_id, reasons=["account_not_mapped"])
    await audit.record(session, principal, "account_mapping.changed", ("account_mapping", principal.tenant_id),
                       {**body.model_dump(mode="json"), "validated": validated_at is not None}, producer=PRODUCER)
    return AccountMappingState(configured=True, mapping=AccountMappingView.model_validate(mapping, from_attributes=True))


@router.get("/entries", response_model=EntryPage, summary="Journal entries and their posting state")
async def list_entries(state: Literal["pending", "sending", "posted", "failed"] | None = None,
                       purpose: Purpose | None = None,
                       cursor: str | None = Query(None, pattern=r"^\d+$"), limit: int = Query(100, ge=1, le=500),
                       principal: Principal = require("ar:read"),
                       session: AsyncSession = Depends(db_session)) -> EntryPage:
    rows = await repository.list_entries(session, principal.tenant_id, after_seq=int(cursor or 0), limit=limit,
                                         state=state, purpose=purpose)
    items = [EntryView(id=r.id, purpose=r.purpose, subject_id=r.subject_id, source_event_id=r.source_event_id,
                       currency=r.currency, occurred_on=r.occurred_on, reference=r.reference, state=r.state,
                       system=r.system, external_id=r.external_id, attempts=r.attempts, last_error=r.last_error,
                       lines=[LineView(account=l.account, amount_minor=l.amount_minor, memo=l.memo) for l in lines])
             for r, lines in rows]
    return EntryPage(items=items, next_cursor=str(rows[-1][0].seq) if len(rows) == limit else None)


@router.get("/exceptions", response_model=ExceptionPage, summary="Postings that failed, newest first")
async def list_exceptions(status: Literal["open", "resolved"] | None = "open",
                          cursor: datetime | None = None, limit: int = Query(100, ge=1, le=500),
                          principal: Principal = require("ar:read"),
                          session: AsyncSession = Depends(db_session)) -> ExceptionPage:
    rows = await repository.list_exceptions(session, principal.tenant_id, status=status, before=cursor, limit=limit)
    items = [ExceptionView(id=e.id, entry_id=e.entry_id, purpose=entry.purpose, subject_id=entry.subject_id,
                           reason=e.reason, detail=e.detail, retryable=e.retryable, status=e.status,
                           occurrences=e.occurrences, created_at=e.created_at, resolved_at=e.resolved_at)
             for e, entry in rows]
    return ExceptionPage(items=items, next_cursor=items[-1].created_at.isoformat() if len(items) == limit else None)


@router.post("/retries", response_model=RetryResult, summary="Retry the entries of open exceptions now")
async def retry(body: RetryRequest, principal: Principal = require("gl:write"),
                session: AsyncSession = Depends(db_session)) -> RetryResult:
    return RetryResult(requeued=await repository.requeue(session, principal.tenant_id, body.entry_ids or None))


@router.get("/reconciliation", response_model=ReconciliationReport,
            summary="Reconciliation of a period (default: the current month), read back from the accounting system")
async def get_reconciliation(request: Request, period_start: date | None = None, period_end: date | None = None,
                             principal: Principal = require("ar:read"),
                             session: AsyncSession = Depends(db_session)) -> ReconciliationReport:
    today = datetime.now(UTC).date()
    start = period_start or today.replace(day=1)
    end = period_end or (start.replace(day=28) + timedelta(days=4)).replace(day=1) - timedelta(days=1)
    if end < start:
        raise Problem(422, "Invalid input", "period_end is before period_start")
    connection = await session.get(Connection, principal.tenant_id)
    mapping = await session.get(AccountMapping, principal.tenant_id)
    if connection is None or connection.status != "connected" or mapping is None:
        return ReconciliationReport(**await reconciliation.report(session, principal.tenant_id, start, end))
    async with connected_ledger(request, connection) as ledger:
        return ReconciliationReport(**await reconciliation.report(session, principal.tenant_id, start, end,
                                                                  ledger=ledger, mapping=mapping))
