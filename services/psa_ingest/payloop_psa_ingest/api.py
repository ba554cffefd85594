"""Routes of the psa_ingest service: connections, syncs and their history, write-backs, records."""
from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime

from fastapi import APIRouter, Body, Depends, Query, Request, Response
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from payloop import audit
from payloop.auth import Principal, require
from payloop.db import db_session
from payloop.problems import PROBLEM_RESPONSES, NotFound, Problem
from payloop.secrets import mask, secret_box

from payloop_psa_ingest import repository
from payloop_psa_ingest.connectors import open_connector
from payloop_psa_ingest.connectors.base import PsaError
from payloop_psa_ingest.models import DISCONNECTED, Connection, SyncRun
from payloop_psa_ingest.schemas import (
    ConnectionCheck, ConnectionCreate, ConnectionList, ConnectionOut, ConnectionUpdate, PsaRecordOut, PsaRecordPage, SyncRequest,
    SyncRunList, SyncRunOut, WebhookRegistration, WritebackList, WritebackOut,
)
from payloop_psa_ingest.sync import PRODUCER, Disconnected, SyncBusy, run_sync, sync_gate
from payloop_psa_ingest.writeback import retry_now

router = APIRouter(prefix="/v1/psa", tags=["psa"], responses=PROBLEM_RESPONSES)

# Identifiers that are not secret and help an operator recognise the connection.
PLAIN_CREDENTIAL_FIELDS = {"company_id", "username"}


def _out(connection: Connection) -> ConnectionOut:
    return ConnectionOut(
        id=connection.id, source=connection.source, name=connection.name, base_url=connection.base_url,
        credentials=connection.credentials_hint, settings=connection.settings, status=connection.status,
        last_error=connection.last_error, cursors=connection.cursors, poll_interval_s=connection.poll_interval_s,
        next_sync_at=connection.next_sync_at, webhook_ids=connection.webhook_ids, created_at=connection.created_at)


async def _owned(session: AsyncSession, principal: Principal, connection_id: uuid.UUID) -> Connection:
    connection = await repository.get_connection(session, principal.tenant_id, connection_id)
    if connection is None:
        raise NotFound("PSA connection")
    return connection


async def _connected(session: AsyncSession, principal: Principal, connection_id: uuid.UUID) -> Connection:
    """The tenant's connection, refused with 409 once disconnected (its history stays readable)."""
    connection = await _owned(session, principal, connection_id)
    if connection.status == DISCONNECTED:
        raise Problem(409, "Conflict", "this PSA connection was disconnected; connect the PSA anew")
    return connection


def _store_credentials(connection: Connection, credentials: dict) -> None:
    connection.credentials_encrypted = secret_box().encrypt(json.dumps(credentials))
    connection.credentials_hint = {k: v if k in PLAIN_CREDENTIAL_FIELDS or v is None else mask(v)
                                   for k, v in credentials.items()}


@router.post("/connections", status_code=201, response_model=ConnectionOut, summary="Connect a PSA")
async def create_connection(body: ConnectionCreate, principal: Principal = require("psa:write"),
                            session: AsyncSession = Depends(db_session)) -> ConnectionOut:
    connection = Connection(
        id=uuid.uuid4(), tenant_id=principal.tenant_id, source=body.source, name=body.name, base_url=body.base_url,
        settings=body.settings.model_dump(), status="active", cursors={}, webhook_ids=[],
        poll_interval_s=body.poll_interval_s, next_sync_at=datetime.now(UTC))
    _store_credentials(connection, body.credentials.model_dump())
    session.add(connection)
    await session.flush()
    await session.refresh(connection)
    return _out(connection)


@router.get("/connections", response_model=ConnectionList, summary="The tenant's PSA connections")
async def list_connections(principal: Principal = require("ar:read"),
                           session: AsyncSession = Depends(db_session)) -> ConnectionList:
    return ConnectionList(items=[_out(c) for c in await repository.list_connections(session, principal.tenant_id)])


@router.get("/connections/{connection_id}", response_model=ConnectionOut, summary="One PSA connection")
async def get_connection(connection_id: uuid.UUID, principal: Principal = require("ar:read"),
                         session: AsyncSession = Depends(db_session)) -> ConnectionOut:
    return _out(await _owned(session, principal, connection_id))


@router.put("/connections/{connection_id}", response_model=ConnectionOut,
            responses={409: {"description": "The connection was disconnected"}},
            summary="Change a connection's credentials or settings (audited); a connection stopped by refused "
                    "credentials syncs again at once")
async def update_connection(connection_id: uuid.UUID, body: ConnectionUpdate, principal: Principal = require("psa:write"),
                            session: AsyncSession = Depends(db_session)) -> ConnectionOut:
    connection = await _connected(session, principal, connection_id)
    try:
        credentials = body.credentials_for(connection.source)
    except ValidationError as exc:
        fields = ", ".join(".".join(str(p) for p in e["loc"]) or "credentials" for e in exc.errors())
        raise Problem(422, "Unprocessable Content", f"credentials are not valid {connection.source} credentials "
                                                    f"(check {fields})") from None
    changed = sorted(body.model_dump(exclude_unset=True))
    if credentials is not None:
        _store_credentials(connection, credentials)
    for field in ("name", "base_url", "poll_interval_s"):
        if getattr(body, field) is not None:
            setattr(connection, field, getattr(body, field))
    if body.settings is not None:
        connection.settings = body.settings.model_dump()
    if connection.status == "error" or credentials is not None or body.base_url is not None:
        # New credentials or a new address: try them now rather than at the next poll.
        connection.status, connection.last_error, connection.next_sync_at = "active", None, datetime.now(UTC)
    await audit.record(session, principal, "psa_connection.updated", ("psa_connection", str(connection.id)),
                       {"fields": changed, "source": connection.source}, producer=PRODUCER)
    await session.flush()
    await session.refresh(connection)
    return _out(connection)


@router.delete("/connections/{connection_id}", status_code=204, response_class=Response,
               summary="Disconnect a PSA: syncing and write-back stop, stored credentials are erased, the synced "
                       "records and history stay (audited)")
async def disconnect_connection(connection_id: uuid.UUID, principal: Principal = require("psa:write"),
                                session: AsyncSession = Depends(db_session)) -> Response:
    connection = await _owned(session, principal, connection_id)
    if connection.status != DISCONNECTED:
        connection.status, connection.next_sync_at, connection.last_error = DISCONNECTED, None, None
        _store_credentials(connection, {})
        await audit.record(session, principal, "psa_connection.disconnected", ("psa_connection", str(connection.id)),
                           {"source": connection.source, "name": connection.name}, producer=PRODUCER)
    return Response(status_code=204)


@router.post("/connections/{connection_id}/test", response_model=ConnectionCheck,
             summary="Check the credentials against the PSA")
async def test_connection(connection_id: uuid.UUID, principal: Principal = require("psa:write"),
                          session: AsyncSession = Depends(db_session)) -> ConnectionCheck:
    connection = await _connected(session, principal, connection_id)
    connector = open_connector(connection.source, connection.base_url, connection.credentials_encrypted,
                               connection.settings)
    try:
        info = await connector.check()
    except PsaError as exc:
        return ConnectionCheck(ok=False, detail=str(exc))
    finally:
        await connector.aclose()
    return ConnectionCheck(ok=True, detail="credentials accepted", psa=info if isinstance(info, dict) else None)


@router.post("/connections/{connection_id}/sync", response_model=SyncRunOut,
             responses={409: {"description": "A sync of this connection is already running, or it was disconnected"}},
             summary="Run a sync now and return its result (what `payloop sync` calls)",
             description="Answers when the sync has run. While `PAYLOOP_PSA_INGEST_MAX_CONCURRENT_SYNCS` syncs "
                         "(default 3) run in the process, this one waits its turn first.")
async def sync_now(request: Request, connection_id: uuid.UUID, body: SyncRequest | None = Body(None),
                   principal: Principal = require("psa:write")) -> SyncRunOut:
    try:
        run = await run_sync(request.app.state.session_factory, principal.tenant_id, connection_id,
                             trigger="manual", gate=sync_gate(request.app),
                             full=bool(body and body.full))
    except LookupError:
        raise NotFound("PSA connection") from None
    except SyncBusy:
        raise Problem(409, "Conflict", "a sync of this connection is already running") from None
    except Disconnected:
        raise Problem(409, "Conflict", "this PSA connection was disconnected; connect the PSA anew") from None
    return _run_out(run)


def _run_out(run: SyncRun) -> SyncRunOut:
    return SyncRunOut(id=run.id, connection_id=run.connection_id, trigger=run.trigger, full=run.full,
                      status=run.status, counts=run.counts or {}, errors=run.errors or [], error=run.error,
                      started_at=run.started_at or datetime.now(UTC), finished_at=run.finished_at)


@router.get("/connections/{connection_id}/sync-runs", response_model=SyncRunList,
            summary="Sync status and history, newest first, with counts and errors")
async def sync_runs(connection_id: uuid.UUID, principal: Principal = require("ar:read"),
                    session: AsyncSession = Depends(db_session)) -> SyncRunList:
    await _owned(session, principal, connection_id)
    runs = await repository.list_sync_runs(session, principal.tenant_id, connection_id)
    return SyncRunList(items=[_run_out(r) for r in runs])


@router.post("/connections/{connection_id}/webhooks", response_model=ConnectionOut,
             summary="Subscribe to the PSA's callbacks at this service's public URL")
async def register_webhooks(connection_id: uuid.UUID, body: WebhookRegistration,
                            principal: Principal = require("psa:write"),
                            session: AsyncSession = Depends(db_session)) -> ConnectionOut:
    connection = await _connected(session, principal, connection_id)
    connector = open_connector(connection.source, connection.base_url, connection.credentials_encrypted,
                               connection.settings)
    try:
        ids = await connector.register_webhooks(f"{body.public_url.rstrip('/')}/webhooks/psa/{connection.id}")
    except PsaError as exc:
        raise Problem(502, "PSA Error", str(exc)) from None
    finally:
        await connector.aclose()
    connection.webhook_ids = [*connection.webhook_ids, *ids]
    await session.flush()
    return _out(connection)


@router.get("/payment-writebacks", response_model=WritebackList,
            summary="Payments written back to the PSA, with failures and their errors")
async def list_writebacks(status: str | None = Query(None, pattern="^(pending|recorded|failed|rejected)$"),
                          principal: Principal = require("ar:read"),
                          session: AsyncSession = Depends(db_session)) -> WritebackList:
    rows = await repository.list_writebacks(session, principal.tenant_id, status)
    return WritebackList(items=[WritebackOut.model_validate(r, from_attributes=True) for r in rows])


@router.post("/payment-writebacks/{writeback_id}/retry", response_model=WritebackOut,
             summary="Retry a failed or rejected write-back now")
async def retry_writeback(writeback_id: uuid.UUID, principal: Principal = require("psa:write"),
                          session: AsyncSession = Depends(db_session)) -> WritebackOut:
    row = await repository.get_writeback(session, principal.tenant_id, writeback_id)
    if row is None:
        raise NotFound("payment write-back")
    await retry_now(session, row)
    await session.flush()
    return WritebackOut.model_validate(row, from_attributes=True)


@router.get("/records", response_model=PsaRecordPage,
            summary="Clients, agreements, invoices, credit memos or tickets as last seen in the PSA")
async def list_records(kind: str = Query("invoice", pattern="^(client|agreement|invoice|credit_memo|ticket)$"),
                       cursor: uuid.UUID | None = None, limit: int = Query(100, ge=1, le=500),
                       principal: Principal = require("ar:read"),
                       session: AsyncSession = Depends(db_session)) -> PsaRecordPage:
    rows = await repository.list_records(session, principal.tenant_id, kind, after=cursor, limit=limit)
    return PsaRecordPage(items=[PsaRecordOut(id=r.id, kind=r.kind, external_id=r.external_id, data=r.data,
                                             updated_at=r.updated_at) for r in rows],
                         next_cursor=str(rows[-1].id) if len(rows) == limit else None)
