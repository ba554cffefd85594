"""One sync run of one connection: pull what changed, store it, publish what is new or different.

Each page is stored and its events written to the outbox in one transaction, so a crash mid-run
loses nothing and repeats nothing visible: re-read records whose content hash is unchanged publish
nothing. A kind's cursor advances only once all its pages are stored (pages are ordered by id,
not by time).
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import random
import uuid
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import structlog
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from payloop import outbox
from payloop.events import new_event
from payloop.events.envelope import Envelope

from payloop_psa_ingest import repository
from payloop_psa_ingest.connectors import open_connector
from payloop_psa_ingest.connectors.base import (
    ENTITY_KINDS, Line, PsaAgreement, PsaAuthError, PsaClient, PsaCreditMemo, PsaDisputeTicket, PsaError,
    PsaInvoice, Record,
)
from payloop_psa_ingest.models import DISCONNECTED, Connection, PsaRecord, SyncRun
from payloop_psa_ingest.settings import psa_ingest_settings

log = structlog.get_logger(__name__)

PRODUCER = "psa_ingest"
# Our ids are derived from (connection, kind, vendor id): stable across re-syncs without a lookup.
ID_NAMESPACE = uuid.UUID("6f1f5d0e-6a43-4c1e-9a55-3c1d2b0f7a10")
LEASE_S = 600
MAX_RUN_ERRORS = 200


class SyncBusy(Exception):
    """Another sync of this connection is running."""


class Disconnected(Exception):
    """The tenant disconnected this PSA: nothing is synced any more."""


def our_id(connection_id: uuid.UUID, kind: str, external_id: str) -> uuid.UUID:
    return uuid.uuid5(ID_NAMESPACE, f"{connection_id}/{kind}/{external_id}")


def content_hash(data: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def _qty(value: Decimal) -> str:
    text = format(value.normalize(), "f")
    return text if text not in ("-0", "") else "0"


def sync_gate(app: FastAPI) -> asyncio.Semaphore:
    """The app's bound on syncs running at once (`PAYLOOP_PSA_INGEST_MAX_CONCURRENT_SYNCS`), shared by
    its API and its poller; made on first use, in the app's event loop."""
    gate = getattr(app.state, "sync_gate", None)
    if gate is None:
        gate = app.state.sync_gate = asyncio.Semaphore(psa_ingest_settings().max_concurrent_syncs)
    return gate


async def run_sync(factory: async_sessionmaker[AsyncSession], tenant_id: str, connection_id: uuid.UUID, *,
                   trigger: str, gate: asyncio.Semaphore, full: bool = False) -> SyncRun:
    """Run one sync now; raises SyncBusy if one is running, LookupError if no such connection.
    Waits its turn at `gate` (see `sync_gate`)."""
    if gate.locked():
        log.info("psa.sync.queued", tenant_id=tenant_id, connection_id=str(connection_id), trigger=trigger)
    async with gate:
        return await _run_sync(factory, tenant_id, connection_id, trigger=trigger, full=full)


async def _run_sync(factory: async_sessionmaker[AsyncSession], tenant_id: str, connection_id: uuid.UUID, *,
                    trigger: str, full: bool) -> SyncRun:
    async with factory() as session, session.begin():
        connection = await repository.claim_sync_lease(session, tenant_id, connection_id, LEASE_S)
        if connection is None:
            stored = await repository.get_connection(session, tenant_id, connection_id)
            if stored is None:
                raise LookupError(connection_id)
            raise Disconnected(str(connection_id)) if stored.status == DISCONNECTED else SyncBusy(str(connection_id))
        run = SyncRun(id=uuid.uuid4(), tenant_id=tenant_id, connection_id=connection_id, trigger=trigger,
                      full=full, status="running", counts={}, errors=[])
        session.add(run)
    counts: Counter[str] = Counter()
    errors: list[dict[str, Any]] = []
    connector = open_connector(connection.source, connection.base_url, connection.credentials_encrypted,
                               connection.settings)
    cursors = dict(connection.cursors or {})
    try:
        for kind in ENTITY_KINDS:
            since = None if full or kind not in cursors else datetime.fromisoformat(cursors[kind])
            high_water = since
            async for page in connector.changes(kind, since):
                async with factory() as session, session.begin():
                    counts.update(await apply_records(session, connection, page.records, run))
                counts["errors"] += len(page.errors)
                errors += [asdict(e) for e in page.errors]
                if page.high_water and (high_water is None or page.high_water > high_water):
                    high_water = page.high_water
            if high_water is not None:
                cursors[kind] = high_water.isoformat()
            async with factory() as session, session.begin():
                await _save_progress(session, connection, run, cursors, counts, errors)
    except PsaError as exc:
        log.warning("psa.sync.failed", tenant_id=tenant_id, connection_id=str(connection_id), error=str(exc),
                    retryable=exc.retryable)
        async with factory() as session, session.begin():
            await _finish(session, connection, run, counts, errors, error=exc)
        return run
    finally:
        await connector.aclose()
    async with factory() as session, session.begin():
        await _finish(session, connection, run, counts, errors, error=None)
    log.info("psa.sync.done", tenant_id=tenant_id, connection_id=str(connection_id), counts=dict(counts))
    return run


async def _save_progress(session: AsyncSession, connection: Connection, run: SyncRun, cursors: dict[str, str],
                         counts: Counter[str], errors: list[dict[str, Any]]) -> None:
    stored = await session.get(Connection, connection.id)
    stored.cursors = dict(cursors)
    db_run = await session.get(SyncRun, run.id)
    db_run.counts, db_run.errors = dict(counts), errors[:MAX_RUN_ERRORS]


async def _finish(session: AsyncSession, connection: Connection, run: SyncRun, counts: Counter[str],
                  errors: list[dict[str, Any]], *, error: PsaError | None) -> None:
    now = datetime.now(UTC)
    stored = await session.get(Connection, connection.id)
    db_run = await session.get(SyncRun, run.id)
    db_run.counts, db_run.errors, db_run.finished_at = dict(counts), errors[:MAX_RUN_ERRORS], now
    stored.sync_lease_until = None
    # Disconnected while this run was under way: the run is recorded, the connection stays stopped.
    disconnected = stored.status == DISCONNECTED
    if error is None:
        db_run.status = "succeeded"
        if not disconnected:
            stored.status, stored.last_error = "active", None
            # A callback that arrived during this run asked for another pass: keep its request.
            requested_during_run = stored.next_sync_at is not None and stored.next_sync_at > db_run.started_at
            if not requested_during_run:
                stored.next_sync_at = now + timedelta(seconds=stored.poll_interval_s)
    else:
        db_run.status, db_run.error = "failed", str(error)
        if not disconnected:
            stored.last_error = str(error)
            if isinstance(error, PsaAuthError):
                # No point polling with refused credentials: an operator must fix them (PUT the connection).
                stored.status, stored.next_sync_at = "error", None
            else:
                stored.next_sync_at = now + timedelta(seconds=min(stored.poll_interval_s, 60) * random.uniform(1, 1.5))
        await outbox.publish(session, new_event(
            "psa.sync_failed", tenant_id=stored.tenant_id, producer=PRODUCER, correlation_id=str(run.id),
            data={"connection_id": str(stored.id), "source": stored.source, "error": str(error),
                  "retryable": error.retryable}))
    for field in ("status", "counts", "errors", "error", "finished_at"):
        setattr(run, field, getattr(db_run, field))


# --- records -> stored state and events ---------------------------------------------------------------

@dataclass(frozen=True)
class _Prepared:
    """A normalized record as we store it, and the events that announce it."""
    kind: str
    external_id: str
    record_id: uuid.UUID
    client_id: uuid.UUID
    number: str | None
    data: dict[str, Any]
    created: str
    updated: str | None


async def apply_records(session: AsyncSession, connection: Connection, records: list[Record],
                        run: SyncRun) -> list[str]:
    """Store a page of normalized records; publish an event for each one that is new or changed.
    Returns what happened to each. One query finds what is stored and one statement each writes the
    new records and the events, so a page of 1,000 costs a handful of round trips, not thousands."""
    prepared = [await _prepare(session, connection, record) for record in records]
    stored = await repository.records_by_external_id(session, connection.id,
                                                     [(p.kind, p.external_id) for p in prepared])
    outcomes, events = [], []
    for p in prepared:
        outcome, event = _upsert(session, connection, run, p, stored)
        outcomes.append(outcome)
        if event is not None:
            events.append(event)
    await session.flush()
    await outbox.publish_many(session, events)
    return outcomes


async def _prepare(session: AsyncSession, connection: Connection, record: Record) -> _Prepared:
    psa = {"source": connection.source}
    cid = connection.id
    if isinstance(record, PsaClient):
        client_id = our_id(cid, "client", record.external_id)
        data = {"client_id": str(client_id), "psa": {**psa, "external_id": record.external_id}, "name": record.name,
                "billing_emails": record.billing_emails, "terms": record.terms, "timezone": record.timezone}
        return _Prepared("client", record.external_id, client_id, client_id, None,
                         data, created="client.upserted", updated="client.upserted")
    if isinstance(record, PsaAgreement):
        agreement_id = our_id(cid, "agreement", record.external_id)
        client_id = our_id(cid, "client", record.client_external_id)
        data = {"agreement_id": str(agreement_id), "client_id": str(client_id),
                "psa": {**psa, "external_id": record.external_id}, "kind": record.kind, "name": record.name,
                "billing_cycle": record.billing_cycle,
                "starts_on": record.starts_on.isoformat() if record.starts_on else None,
                "ends_on": record.ends_on.isoformat() if record.ends_on else None,
                "lines": [{"id": str(our_id(cid, "agreement_line", ext)), "kind": line.kind,
                           "description": line.description, "quantity": _qty(line.quantity),
                           "unit_price_minor": line.unit_price_minor} for ext, line in record.lines]}
        return _Prepared("agreement", record.external_id, agreement_id, client_id, None,
                         data, created="agreement.upserted", updated="agreement.upserted")
    if isinstance(record, PsaInvoice):
        invoice_id = our_id(cid, "invoice", record.external_id)
        client_id = our_id(cid, "client", record.client_external_id)
        agreement = None
        if record.agreement:
            ext, kind, name = record.agreement
            agreement = {"id": str(our_id(cid, "agreement", ext)), "kind": kind, "name": name}
        data = {"invoice_id": str(invoice_id), "psa": {**psa, "external_id": record.external_id},
                "number": record.number, "agreement": agreement, "currency": record.currency,
                "issued_on": record.issued_on.isoformat(), "due_on": record.due_on.isoformat(),
                "terms": record.terms, "status": record.status, "subtotal_minor": record.subtotal_minor,
                "tax_minor": record.tax_minor, "total_minor": record.total_minor,
                "balance_minor": record.balance_minor, "lines": [_line(cid, line) for line in record.lines]}
        if record.paid_on is not None:
            # Only when known, so the content hash of an invoice without one stays what it was.
            data["paid_on"] = record.paid_on.isoformat()
        return _Prepared("invoice", record.external_id, invoice_id, client_id,
                         record.number, data, created="invoice.created", updated="invoice.updated")
    if isinstance(record, PsaCreditMemo):
        memo_id = our_id(cid, "credit_memo", record.external_id)
        client_id = our_id(cid, "client", record.client_external_id)
        data = {"credit_memo_id": str(memo_id), "psa": {**psa, "external_id": record.external_id},
                "number": record.number, "currency": record.currency, "issued_on": record.issued_on.isoformat(),
                "total_minor": record.total_minor,
                "applied_to": [{"invoice_id": str(our_id(cid, "invoice", ext)), "amount_minor": amount}
                               for ext, amount in record.applied_to]}
        return _Prepared("credit_memo", record.external_id, memo_id, client_id,
                         record.number, data, created="credit_memo.created", updated=None)
    if isinstance(record, PsaDisputeTicket):
        ticket_id = our_id(cid, "ticket", record.external_id)
        client_id = our_id(cid, "client", record.client_external_id)
        invoices = await repository.invoices_by_number(session, cid, record.invoice_numbers)
        data = {"ticket_id": str(ticket_id), "psa": {**psa, "external_id": record.external_id},
                "invoice_ids": [str(i.id) for i in invoices], "reason": "billing_dispute",
                "summary": record.summary, "open": record.open}
        return _Prepared("ticket", record.external_id, ticket_id, client_id, None,
                         data, created="ticket.flagged", updated="ticket.flagged")
    raise TypeError(f"unknown record {type(record).__name__}")


def _line(connection_id: uuid.UUID, line: Line) -> dict[str, Any]:
    return {"kind": line.kind, "description": line.description, "quantity": _qty(line.quantity),
            "unit_price_minor": line.unit_price_minor, "amount_minor": line.amount_minor,
            "agreement_line_id": str(our_id(connection_id, "agreement_line", line.agreement_line_external_id))
            if line.agreement_line_external_id else None}


def _upsert(session: AsyncSession, connection: Connection, run: SyncRun, p: _Prepared,
            stored: dict[tuple[str, str], PsaRecord]) -> tuple[str, Envelope | None]:
    """Compare with what is stored (`stored` is kept current, so a record twice in a page is handled as
    one after the other) and stage the change; returns what happened and the event to publish."""
    digest = content_hash(p.data)
    existing = stored.get((p.kind, p.external_id))
    if existing is not None and existing.content_hash == digest:
        return "unchanged", None
    if existing is None:
        stored[(p.kind, p.external_id)] = PsaRecord(
            id=p.record_id, tenant_id=connection.tenant_id, connection_id=connection.id, kind=p.kind,
            external_id=p.external_id, client_id=p.client_id, number=p.number, content_hash=digest, data=p.data)
        session.add(stored[(p.kind, p.external_id)])
        event_type, payload = p.created, p.data
    else:
        previous = existing.data
        existing.content_hash, existing.data, existing.number = digest, p.data, p.number
        existing.updated_at = datetime.now(UTC)
        event_type, payload = p.updated, p.data
        if p.kind == "invoice":
            if p.data["status"] == "void" and previous.get("status") != "void":
                event_type = "invoice.voided"
                payload = {"invoice_id": p.data["invoice_id"], "psa": p.data["psa"], "number": p.data["number"],
                           "voided_at": datetime.now(UTC).isoformat()}
            else:
                payload = {**p.data, "changes": {k: {"from": previous.get(k), "to": v} for k, v in p.data.items()
                                                 if previous.get(k) != v}}
    if event_type is None:
        return f"{p.kind}.changed", None
    return event_type, new_event(
        event_type, tenant_id=connection.tenant_id, client_id=str(p.client_id), producer=PRODUCER,
        correlation_id=str(run.id), causation=f"psa-sync:{run.id}", data=payload)
