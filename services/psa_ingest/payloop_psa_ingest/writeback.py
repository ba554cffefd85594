"""Payment write-back: what payments settled, refunded or lost for good becomes a payment on the invoice in the PSA.

The event handlers only record what must be written (one row per payment and invoice, unique by a
reference derived from our ids) in the consumer's transaction. The worker then applies each row:
the connector looks for the reference in the PSA before posting, so a redelivered event or a call that
timed out after the PSA applied it never makes a second payment; the PSA's id is stored with the
`psa.payment_recorded` event in one transaction. Failures publish `psa.sync_failed` and are retried
with growing, jittered delays; refusals that cannot succeed stop at `rejected` for an operator.
"""
from __future__ import annotations

import random
import uuid
from datetime import UTC, date, datetime, timedelta

import structlog
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from payloop import outbox
from payloop.events import new_event
from payloop.events.catalogue import EventData
from payloop.events.envelope import Envelope

from payloop_psa_ingest import repository
from payloop_psa_ingest.connectors import open_connector
from payloop_psa_ingest.connectors.base import PsaError
from payloop_psa_ingest.models import DISCONNECTED, Connection, PaymentWriteback, PsaRecord
from payloop_psa_ingest.sync import PRODUCER

log = structlog.get_logger(__name__)

RETRY_INITIAL_S = 5
RETRY_MAX_S = 3600


async def on_payment_settled(session: AsyncSession, event: Envelope, data: EventData) -> None:
    paid_on = (data.settled_at or event.occurred_at).date()
    settlement = data.settlement_id()
    for allocation in data.allocations:
        await _queue(session, event, payment_id=data.payment_id, invoice_id=allocation.invoice_id,
                     reference=f"payloop:{settlement}:{allocation.invoice_id}",
                     amount_minor=allocation.amount_minor, currency=data.currency, paid_on=paid_on)


async def on_payment_refunded(session: AsyncSession, event: Envelope, data: EventData) -> None:
    """A refund reverses the payment on its invoices, in allocation order, up to the refunded amount."""
    await _reverse(session, event, data, reversal_id=data.refund_id, amount_minor=data.refunded_minor)


# Dispute outcomes that take the money back for good: a lost chargeback, a returned ACH debit. While a
# card dispute is open the PSA keeps the payment (the MSP may still win it); a won one never moved.
FINAL_REVERSALS = ("lost", "returned")


async def on_payment_disputed(session: AsyncSession, event: Envelope, data: EventData) -> None:
    if data.status in FINAL_REVERSALS:
        await _reverse(session, event, data, reversal_id=data.dispute_id, amount_minor=data.disputed_minor)


async def _reverse(session: AsyncSession, event: Envelope, data: EventData, *, reversal_id: str,
                   amount_minor: int) -> None:
    for invoice_id, amount in data.taken_back(amount_minor):
        await _queue(session, event, payment_id=data.payment_id, invoice_id=invoice_id,
                     reference=f"payloop:{reversal_id}:{invoice_id}",
                     amount_minor=-amount, currency=data.currency, paid_on=event.occurred_at.date())


async def _queue(session: AsyncSession, event: Envelope, *, payment_id: str, invoice_id: str, reference: str,
                 amount_minor: int, currency: str, paid_on: date) -> None:
    try:
        invoice_uuid = uuid.UUID(invoice_id)
    except ValueError:
        return
    invoice = await repository.record_by_id(session, event.tenant_id, "invoice", invoice_uuid)
    if invoice is None:
        return  # not an invoice this service brought in (e.g. another tenant's, or not from a PSA)
    await session.execute(insert(PaymentWriteback).values(
        id=uuid.uuid4(), tenant_id=event.tenant_id, connection_id=invoice.connection_id, payment_id=payment_id,
        invoice_id=invoice.id, client_id=invoice.client_id, reference=reference, amount_minor=amount_minor,
        currency=currency, paid_on=paid_on, status="pending", attempts=0, causation_id=str(event.id),
        correlation_id=event.correlation_id,
    ).on_conflict_do_nothing(index_elements=["tenant_id", "reference"]))


async def process_due_writebacks(factory: async_sessionmaker[AsyncSession], *, limit: int = 50) -> int:
    """Attempt up to `limit` due write-backs, one transaction (and row lock) each. Returns how many."""
    done = 0
    while done < limit:
        async with factory() as session, session.begin():
            row = await repository.claim_due_writeback(session, datetime.now(UTC))
            if row is None:
                return done
            await _attempt(session, row)
        done += 1
    return done


async def _attempt(session: AsyncSession, row: PaymentWriteback) -> None:
    connection = await session.get(Connection, row.connection_id)
    invoice = await session.get(PsaRecord, row.invoice_id)
    row.attempts += 1
    if connection.status == DISCONNECTED:
        await _fail(session, row, connection, PsaError(f"the {connection.source} connection was disconnected; "
                                                       "record this payment in the PSA by hand"))
        return
    if invoice.data.get("currency") != row.currency:
        await _fail(session, row, connection, PsaError(
            f"payment in {row.currency} cannot be applied to invoice {invoice.number} in {invoice.data.get('currency')}"))
        return
    connector = open_connector(connection.source, connection.base_url, connection.credentials_encrypted,
                               connection.settings)
    try:
        recorded = await connector.record_payment(invoice.external_id, amount_minor=row.amount_minor,
                                                  currency=row.currency, paid_on=row.paid_on, reference=row.reference)
    except PsaError as exc:
        await _fail(session, row, connection, exc)
        return
    finally:
        await connector.aclose()
    row.status, row.external_id, row.last_error, row.next_attempt_at = "recorded", recorded.external_id, None, None
    log.info("psa.writeback.recorded", tenant_id=row.tenant_id, reference=row.reference,
             external_id=recorded.external_id, already_present=recorded.already_present)
    await outbox.publish(session, new_event(
        "psa.payment_recorded", tenant_id=row.tenant_id, client_id=str(row.client_id) if row.client_id else None,
        producer=PRODUCER, correlation_id=row.correlation_id, causation=row.causation_id,
        data={"payment_id": row.payment_id, "invoice_id": str(row.invoice_id),
              "psa": {"source": connection.source, "external_id": recorded.external_id},
              "amount_minor": row.amount_minor, "currency": row.currency, "kind": "refund" if row.amount_minor < 0
              else "payment", "reference": row.reference}))


async def _fail(session: AsyncSession, row: PaymentWriteback, connection: Connection, error: PsaError) -> None:
    row.last_error = str(error)
    if error.retryable:
        delay = min(RETRY_MAX_S, RETRY_INITIAL_S * 2 ** (row.attempts - 1))
        row.status, row.next_attempt_at = "failed", datetime.now(UTC) + timedelta(seconds=random.uniform(delay / 2, delay))
    else:
        row.status, row.next_attempt_at = "rejected", None
    log.warning("psa.writeback.failed", tenant_id=row.tenant_id, reference=row.reference, error=str(error),
                retryable=error.retryable, attempts=row.attempts)
    await outbox.publish(session, new_event(
        "psa.sync_failed", tenant_id=row.tenant_id, producer=PRODUCER, correlation_id=row.correlation_id,
        causation=row.causation_id,
        data={"connection_id": str(connection.id), "source": connection.source,
              "error": f"payment write-back {row.reference}: {error}", "retryable": error.retryable,
              "payment_id": row.payment_id, "invoice_id": str(row.invoice_id)}))


async def retry_now(session: AsyncSession, row: PaymentWriteback) -> None:
    """An operator's retry: make the row due at once, whatever its state (unless already recorded)."""
    if row.status != "recorded":
        row.status, row.next_attempt_at = "failed", datetime.now(UTC)
