"""Every query of the gl_posting service, always bounded by tenant."""
from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import and_, delete, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from payloop_gl_posting.journal import JournalEntry, JournalLine
from payloop_gl_posting.models import (
    AccountMapping, Connection, ConsentState, Entry, IdMap, Invoice, Line, PostingException,
)


async def add_entry(session: AsyncSession, entry: JournalEntry) -> bool:
    """Insert the entry and its lines; False when (event, purpose) was already journaled."""
    return bool(await add_entries(session, [entry]))


_LINES = text("""
    INSERT INTO gl_journal_lines (entry_id, line_no, tenant_id, account, amount_minor, memo)
    SELECT * FROM unnest(CAST(:entry AS uuid[]), CAST(:no AS integer[]), CAST(:tenant AS text[]),
                         CAST(:account AS text[]), CAST(:amount AS bigint[]), CAST(:memo AS text[]))""")


async def add_entries(session: AsyncSession, entries: Sequence[JournalEntry]) -> set[uuid.UUID]:
    """Insert entries and their lines, in order, in two statements whatever their number; the ids of
    those newly journaled (an (event, purpose) already journaled is skipped with its lines)."""
    if not entries:
        return set()
    inserted = set((await session.scalars(insert(Entry).on_conflict_do_nothing().returning(Entry.id), [
        dict(id=e.id, tenant_id=e.tenant_id, source_event_id=e.source_event_id, purpose=e.purpose,
             subject_id=e.subject_id, client_id=e.client_id, currency=e.currency, occurred_on=e.occurred_on,
             reference=e.reference, details=e.details) for e in entries])).all())
    lines = [(e.id, n, e.tenant_id, line.account, line.amount_minor, line.memo)
             for e in {e.id: e for e in reversed(entries) if e.id in inserted}.values()
             for n, line in enumerate(e.lines, start=1)]
    if lines:
        entry, no, tenant, account, amount, memo = (list(column) for column in zip(*lines))
        await session.execute(_LINES, dict(entry=entry, no=no, tenant=tenant, account=account, amount=amount,
                                           memo=memo))
    return inserted


async def entry_exists(session: AsyncSession, tenant_id: str, purpose: str, reversal_id: str) -> bool:
    """A reversal already journaled under another event (refund and dispute ids are unique)."""
    return bool(await session.scalar(select(func.count()).select_from(Entry).where(
        Entry.tenant_id == tenant_id, Entry.purpose == purpose,
        Entry.details["reversal_id"].astext == reversal_id)))


async def reversal(session: AsyncSession, tenant_id: str, purpose: str, reversal_id: str) -> dict | None:
    """The details of a reversal already journaled (under any event), or None."""
    return await session.scalar(select(Entry.details).where(
        Entry.tenant_id == tenant_id, Entry.purpose == purpose,
        Entry.details["reversal_id"].astext == reversal_id).limit(1))


def to_domain(row: Entry, lines: list[Line]) -> JournalEntry:
    return JournalEntry(id=row.id, tenant_id=row.tenant_id, source_event_id=row.source_event_id,
                        purpose=row.purpose, subject_id=row.subject_id, currency=row.currency,  # type: ignore[arg-type]
                        occurred_on=row.occurred_on, client_id=row.client_id, details=row.details,
                        lines=tuple(JournalLine(l.account, l.amount_minor, l.memo) for l in lines))  # type: ignore[arg-type]


async def load_entry(session: AsyncSession, entry_id: uuid.UUID) -> tuple[Entry, JournalEntry]:
    row = await session.get(Entry, entry_id)
    assert row is not None
    lines = list((await session.scalars(select(Line).where(Line.entry_id == entry_id).order_by(Line.line_no))).all())
    return row, to_domain(row, lines)


async def claim_due(session: AsyncSession, *, limit: int, lease: timedelta,
                    tenant_id: str | None = None) -> list[tuple[uuid.UUID, str]]:
    """Lease due entries of connected, mapped tenants, oldest first; expired leases come back too."""
    now = datetime.now(UTC)
    due = (select(Entry.id, Entry.tenant_id)
           .join(Connection, and_(Connection.tenant_id == Entry.tenant_id, Connection.status == "connected"))
           .join(AccountMapping, AccountMapping.tenant_id == Entry.tenant_id)
           .where(or_(and_(Entry.state == "pending", Entry.next_attempt_at <= now),
                      and_(Entry.state == "sending", Entry.lease_until < now)))
           .order_by(Entry.seq).limit(limit).with_for_update(of=Entry, skip_locked=True))
    if tenant_id is not None:
        due = due.where(Entry.tenant_id == tenant_id)
    rows = [(row.id, row.tenant_id) for row in (await session.execute(due)).all()]
    if rows:
        await session.execute(update(Entry).where(Entry.id.in_([id_ for id_, _ in rows])).values(
            state="sending", lease_until=now + lease, attempts=Entry.attempts + 1))
    return rows


async def invoice_number(session: AsyncSession, tenant_id: str, invoice_id: str) -> str | None:
    return await session.scalar(select(Invoice.number).where(Invoice.tenant_id == tenant_id,
                                                             Invoice.invoice_id == invoice_id))


async def posted_payment(session: AsyncSession, tenant_id: str, payment_id: str) -> str | None:
    return await session.scalar(select(Entry.external_id).where(
        Entry.tenant_id == tenant_id, Entry.purpose == "payment", Entry.subject_id == payment_id,
        Entry.state == "posted"))


async def surcharge(session: AsyncSession, tenant_id: str, payment_id: str) -> int:
    """A payment's convenience fee; one a payment, however many times its settlement was journaled."""
    return int(await session.scalar(select(func.coalesce(func.max(Entry.details["amount_minor"].as_integer()), 0))
                                    .where(Entry.tenant_id == tenant_id, Entry.purpose == "convenience_fee",
                                           Entry.subject_id == payment_id)))


async def remembered(session: AsyncSession, tenant_id: str, system: str, kind: str, our_id: str) -> str | None:
    return await session.scalar(select(IdMap.external_id).where(
        IdMap.tenant_id == tenant_id, IdMap.system == system, IdMap.kind == kind, IdMap.our_id == our_id))


async def remember(session: AsyncSession, tenant_id: str, system: str, kind: str, our_id: str, external_id: str) -> None:
    await session.execute(insert(IdMap).values(tenant_id=tenant_id, system=system, kind=kind, our_id=our_id,
                                               external_id=external_id)
                          .on_conflict_do_update(index_elements=["tenant_id", "system", "kind", "our_id"],
                                                 set_={"external_id": external_id}))


async def open_exception(session: AsyncSession, entry_id: uuid.UUID) -> PostingException | None:
    return await session.scalar(select(PostingException).where(
        PostingException.entry_id == entry_id, PostingException.status == "open"))


async def resolve_exceptions(session: AsyncSession, entry_id: uuid.UUID) -> None:
    await session.execute(update(PostingException).where(
        PostingException.entry_id == entry_id, PostingException.status == "open").values(
        status="resolved", resolved_at=datetime.now(UTC)))


async def requeue(session: AsyncSession, tenant_id: str, entry_ids: list[uuid.UUID] | None = None,
                  reasons: list[str] | None = None) -> int:
    """Make entries with open exceptions due now (all of the tenant's, or the ones named)."""
    query = select(PostingException.entry_id).where(PostingException.tenant_id == tenant_id,
                                                    PostingException.status == "open")
    if entry_ids:
        query = query.where(PostingException.entry_id.in_(entry_ids))
    if reasons:
        query = query.where(PostingException.reason.in_(reasons))
    ids = list((await session.scalars(query)).all())
    if ids:
        await session.execute(update(Entry).where(Entry.tenant_id == tenant_id, Entry.id.in_(ids),
                                                  Entry.state.in_(("pending", "failed")))
                              .values(state="pending", next_attempt_at=datetime.now(UTC)))
    return len(ids)


async def list_entries(session: AsyncSession, tenant_id: str, *, after_seq: int, limit: int,
                       state: str | None, purpose: str | None) -> list[tuple[Entry, list[Line]]]:
    query = select(Entry).where(Entry.tenant_id == tenant_id, Entry.seq > after_seq).order_by(Entry.seq).limit(limit)
    if state:
        query = query.where(Entry.state == state)
    if purpose:
        query = query.where(Entry.purpose == purpose)
    rows = list((await session.scalars(query)).all())
    lines = list((await session.scalars(select(Line).where(Line.entry_id.in_([r.id for r in rows]))
                                        .order_by(Line.entry_id, Line.line_no))).all()) if rows else []
    return [(row, [l for l in lines if l.entry_id == row.id]) for row in rows]


async def list_exceptions(session: AsyncSession, tenant_id: str, *, status: str | None, before: datetime | None,
                          limit: int) -> list[tuple[PostingException, Entry]]:
    query = (select(PostingException, Entry).join(Entry, Entry.id == PostingException.entry_id)
             .where(PostingException.tenant_id == tenant_id)
             .order_by(PostingException.created_at.desc()).limit(limit))
    if status:
        query = query.where(PostingException.status == status)
    if before:
        query = query.where(PostingException.created_at < before)
    return [(e, entry) for e, entry in (await session.execute(query)).all()]


async def entries_in_period(session: AsyncSession, tenant_id: str, start: date, end: date) -> list[Entry]:
    return list((await session.scalars(select(Entry).where(
        Entry.tenant_id == tenant_id, Entry.occurred_on >= start, Entry.occurred_on <= end).order_by(Entry.seq))).all())


async def account_balance(session: AsyncSession, tenant_id: str, account: str, *, through: date,
                          posted_only: bool) -> int:
    query = (select(func.coalesce(func.sum(Line.amount_minor), 0)).join(Entry, Entry.id == Line.entry_id)
             .where(Line.tenant_id == tenant_id, Line.account == account, Entry.occurred_on <= through))
    if posted_only:
        query = query.where(Entry.state == "posted")
    return int(await session.scalar(query))


async def invoices(session: AsyncSession, tenant_id: str, invoice_ids: list[str]) -> list[Invoice]:
    return list((await session.scalars(select(Invoice).where(
        Invoice.tenant_id == tenant_id, Invoice.invoice_id.in_(invoice_ids)).order_by(Invoice.number))).all())


async def posted_allocations(session: AsyncSession, tenant_id: str, invoice_ids: list[str]) -> dict[str, int]:
    """What our posted payments applied to each invoice, all dates."""
    rows = await session.execute(text("""
        SELECT a->>'invoice_id', sum((a->>'amount_minor')::bigint)
        FROM gl_entries e, jsonb_array_elements(e.details->'allocations') a
        WHERE e.tenant_id = :tenant AND e.purpose = 'payment' AND e.state = 'posted'
          AND a->>'invoice_id' = ANY(:ids)
        GROUP BY 1"""), {"tenant": tenant_id, "ids": invoice_ids})
    return {invoice_id: int(total) for invoice_id, total in rows.all()}


async def use_consent_state(session: AsyncSession, nonce: str, tenant_id: str, expires_at: datetime) -> bool:
    """Record a consent state as used; False when it was used before."""
    return await session.scalar(insert(ConsentState).values(nonce=nonce, tenant_id=tenant_id, expires_at=expires_at)
                                .on_conflict_do_nothing().returning(ConsentState.nonce)) is not None


async def purge_consent_states(session: AsyncSession) -> None:
    """Expired states are refused by their seal already; their nonces need no keeping."""
    await session.execute(delete(ConsentState).where(ConsentState.expires_at < datetime.now(UTC)))
