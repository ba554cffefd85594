"""Every query of the collections service."""
from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import and_, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from payloop.ids import uuid7
from payloop.tenant_replica import TenantProfile, load_profile

from payloop_collections import models as m
from payloop_collections.behaviour import PaidTotals
from payloop_collections.policy import DEFAULT_POLICY_ID, Policy, Step

OPEN_STATUSES = ("open", "partially_paid")


# --- clients --------------------------------------------------------------------------------------

async def ensure_client(session: AsyncSession, tenant_id: str, client_id: str) -> None:
    await ensure_clients(session, [(tenant_id, client_id)])


async def ensure_clients(session: AsyncSession, keys: list[tuple[str, str]]) -> None:
    """Invoices and payments may arrive before `client.upserted`: keep a row to hang them on."""
    await session.execute(insert(m.Client.__table__).on_conflict_do_nothing(), [
        dict(tenant_id=tenant_id, client_id=client_id, case_id=uuid7(), billing_emails=[])
        for tenant_id, client_id in dict.fromkeys(keys)])


async def get_client(session: AsyncSession, tenant_id: str, client_id: str) -> m.Client | None:
    query = select(m.Client).where(m.Client.tenant_id == tenant_id, m.Client.client_id == client_id)
    return (await session.execute(query)).scalar_one_or_none()


async def update_client(session: AsyncSession, tenant_id: str, client_id: str, **values: Any) -> None:
    await ensure_client(session, tenant_id, client_id)
    await session.execute(update(m.Client).where(m.Client.tenant_id == tenant_id,
                                                 m.Client.client_id == client_id)
                          .values(**values, updated_at=func.now()))


# --- invoices and payments ------------------------------------------------------------------------

async def upsert_invoices(session: AsyncSession,
                          snapshots: list[tuple[str, str, dict[str, Any], datetime]]) -> None:
    """(tenant, client, invoice data, event time) per invoice, at most one per invoice."""
    rows = [dict(
        tenant_id=tenant_id, invoice_id=data["invoice_id"],
        client_id=client_id, number=data["number"], currency=data["currency"],
        issued_on=date.fromisoformat(data["issued_on"]), due_on=date.fromisoformat(data["due_on"]),
        status=data["status"], total_minor=data["total_minor"], psa_balance_minor=data["balance_minor"],
        agreement=data.get("agreement"), lines=data.get("lines", []), event_occurred_at=occurred_at,
    ) for tenant_id, client_id, data, occurred_at in snapshots]
    # One statement executed for many rows: compiled once, sent in one round trip.
    statement = insert(m.Invoice.__table__)
    # Newest event wins: a late redelivery of an older version never reopens a paid invoice.
    await session.execute(statement.on_conflict_do_update(
        index_elements=[m.Invoice.tenant_id, m.Invoice.invoice_id],
        set_={k: statement.excluded[k] for k in rows[0] if k not in ("tenant_id", "invoice_id")},
        where=m.Invoice.event_occurred_at <= statement.excluded.event_occurred_at), rows)


async def mark_paid(session: AsyncSession, tenant_id: str, paid_on: dict[str, date]) -> list[str]:
    """Date the invoices not yet paid (invoice id -> paid day) in one statement; returns those it dated,
    in the order given. An invoice already paid keeps its first day."""
    if not paid_on:
        return []
    rows = await session.execute(text(
        "UPDATE invoices SET paid_on = given.paid_on "
        "FROM unnest(CAST(:ids AS text[]), CAST(:days AS date[])) AS given(invoice_id, paid_on) "
        "WHERE invoices.tenant_id = :t AND invoices.invoice_id = given.invoice_id AND invoices.paid_on IS NULL "
        "RETURNING invoices.invoice_id"), {"t": tenant_id, "ids": list(paid_on), "days": list(paid_on.values())})
    dated = set(rows.scalars())
    return [invoice_id for invoice_id in paid_on if invoice_id in dated]


async def set_invoice(session: AsyncSession, tenant_id: str, invoice_ids: list[str], **values: Any) -> None:
    if invoice_ids:
        await session.execute(update(m.Invoice).where(m.Invoice.tenant_id == tenant_id,
                                                      m.Invoice.invoice_id.in_(invoice_ids)).values(**values))


async def set_payments_in_flight(session: AsyncSession, tenant_id: str,
                                 in_flight: dict[str, tuple[str, datetime]]) -> None:
    """Each invoice's payment in flight and since when (invoice id -> (payment id, since)): one statement."""
    if not in_flight:
        return
    await session.execute(text(
        "UPDATE invoices SET payment_in_flight_id = given.payment_id, payment_in_flight_since = given.since "
        "FROM unnest(CAST(:ids AS text[]), CAST(:payments AS text[]), CAST(:since AS timestamptz[])) "
        "AS given(invoice_id, payment_id, since) "
        "WHERE invoices.tenant_id = :t AND invoices.invoice_id = given.invoice_id"),
        {"t": tenant_id, "ids": list(in_flight), "payments": [p for p, _ in in_flight.values()],
         "since": [since for _, since in in_flight.values()]})


async def add_payments(session: AsyncSession, tenant_id: str,
                       allocations: dict[tuple[str, str], tuple[int, date]]) -> set[tuple[str, str]]:
    """Record what payments collected ((payment id, invoice id) -> (amount, settled day)) in one statement;
    returns the keys that were new. A payment already recorded keeps its first amount and day."""
    if not allocations:
        return set()
    rows = await session.execute(text(
        "INSERT INTO invoice_payments (tenant_id, payment_id, invoice_id, amount_minor, settled_on) "
        "SELECT CAST(:t AS text), * FROM unnest(CAST(:payments AS text[]), CAST(:invoices AS text[]), "
        "CAST(:amounts AS bigint[]), CAST(:days AS date[])) "
        "ON CONFLICT DO NOTHING RETURNING payment_id, invoice_id"),
        {"t": tenant_id, "payments": [p for p, _ in allocations], "invoices": [i for _, i in allocations],
         "amounts": [a for a, _ in allocations.values()], "days": [d for _, d in allocations.values()]})
    return {(payment_id, invoice_id) for payment_id, invoice_id in rows}


async def reduce_payment(session: AsyncSession, tenant_id: str, payment_id: str, invoice_id: str,
                         taken_minor: int) -> None:
    """What a payment still covers of an invoice, less `taken_minor` (negative: given back)."""
    await session.execute(update(m.InvoicePayment).where(
        m.InvoicePayment.tenant_id == tenant_id, m.InvoicePayment.payment_id == payment_id,
        m.InvoicePayment.invoice_id == invoice_id,
    ).values(amount_minor=func.greatest(m.InvoicePayment.amount_minor - taken_minor, 0)))


def _collected(tenant_id: str):
    return (select(m.InvoicePayment.tenant_id, m.InvoicePayment.invoice_id,
                   func.sum(m.InvoicePayment.amount_minor).label("collected"))
            .where(m.InvoicePayment.tenant_id == tenant_id)
            .group_by(m.InvoicePayment.tenant_id, m.InvoicePayment.invoice_id).subquery())


def _collected_on_invoice():
    """What we collected on the row's invoice, summed for that invoice alone: for a few invoices, cheaper
    than `_collected`'s sum over the tenant's payments."""
    return (select(func.sum(m.InvoicePayment.amount_minor))
            .where(m.InvoicePayment.tenant_id == m.Invoice.tenant_id,
                   m.InvoicePayment.invoice_id == m.Invoice.invoice_id).scalar_subquery())


def _uncollected(collected):
    """`collected`: what we collected on the invoice (NULL: nothing)."""
    return m.Invoice.total_minor - func.coalesce(collected, 0)


def _balance(collected):
    # The PSA's balance lags our own payments until write-back; other payments (cheques) only the
    # PSA knows. The smaller of the two is what is still owed.
    return func.least(m.Invoice.psa_balance_minor, _uncollected(collected))


@dataclass(frozen=True)
class Owed:
    """The two sides of an invoice's balance (`_balance`): to follow it as payments arrive, no query each."""

    psa_balance_minor: int
    uncollected_minor: int
    due_on: date

    def balance(self, collected_since_minor: int) -> int:
        return min(self.psa_balance_minor, self.uncollected_minor - collected_since_minor)


async def amounts_owed(session: AsyncSession, tenant_id: str, invoice_ids: list[str]) -> dict[str, Owed]:
    """The invoices' balances as of now, of those we know."""
    query = (select(m.Invoice.invoice_id, m.Invoice.psa_balance_minor, _uncollected(_collected_on_invoice()),
                    m.Invoice.due_on)
             .where(m.Invoice.tenant_id == tenant_id, m.Invoice.invoice_id.in_(invoice_ids)))
    return {invoice_id: Owed(psa, int(uncollected), due_on)
            for invoice_id, psa, uncollected, due_on in (await session.execute(query)).all()}


async def invoices_with_balance(session: AsyncSession, tenant_id: str, client_id: str | None = None,
                                invoice_ids: list[str] | None = None, *, open_only: bool = False
                                ) -> list[tuple[m.Invoice, int]]:
    """Invoices with what is still owed on each, by due date; `open_only`: those open with a balance
    (filtered in the database: the scheduler asks for them every tick, and most of a book is paid)."""
    collected = _collected(tenant_id)
    balance = _balance(collected.c.collected)
    query = (select(m.Invoice, balance.label("balance"))
             .outerjoin(collected, and_(collected.c.tenant_id == m.Invoice.tenant_id,
                                        collected.c.invoice_id == m.Invoice.invoice_id))
             .where(m.Invoice.tenant_id == tenant_id))
    if client_id is not None:
        query = query.where(m.Invoice.client_id == client_id)
    if invoice_ids is not None:
        query = query.where(m.Invoice.invoice_id.in_(invoice_ids))
    if open_only:
        query = query.where(m.Invoice.status.in_(OPEN_STATUSES), balance > 0)
    return [(row[0], int(row[1])) for row in (await session.execute(query.order_by(m.Invoice.due_on))).all()]


async def open_invoices(session: AsyncSession, tenant_id: str, client_id: str | None = None
                        ) -> list[tuple[m.Invoice, int]]:
    return await invoices_with_balance(session, tenant_id, client_id, open_only=True)


async def paid_totals(session: AsyncSession, tenant_id: str, client_ids: list[str], window_days: int
                      ) -> dict[str, PaidTotals]:
    """Each client's paid invoices summed up (`behaviour.PaidTotals`): what its payment behaviour is
    made of, without reading its whole history back."""
    rows = await session.execute(text("""
        WITH paid AS (
            SELECT client_id, paid_on - issued_on AS days, paid_on <= due_on AS on_time,
                   paid_on > max(paid_on) OVER (PARTITION BY client_id) - CAST(:window AS integer) AS recent
              FROM invoices
             WHERE tenant_id = :tenant AND client_id = ANY(CAST(:clients AS text[])) AND paid_on IS NOT NULL)
        SELECT client_id, count(*), sum(days), count(*) FILTER (WHERE on_time),
               count(*) FILTER (WHERE recent), coalesce(sum(days) FILTER (WHERE recent), 0)
          FROM paid GROUP BY client_id"""), {"tenant": tenant_id, "clients": client_ids, "window": window_days})
    return {client_id: PaidTotals(samples=samples, days=days, on_time=on_time, recent=recent, recent_days=recent_days)
            for client_id, samples, days, on_time, recent, recent_days in rows}


# `next_plan_at` (migration 0006) is kept out of the ORM model: the database owns it, through triggers,
# and it holds ±infinity, which Python's datetime cannot.
_PLAN_DUE = text("invoices.next_plan_at <= :now")


async def tenants_to_plan(session: AsyncSession, now: datetime) -> list[str]:
    """Tenants with an open invoice whose time to be planned has come."""
    return list((await session.execute(select(m.Invoice.tenant_id).distinct()
                                       .where(m.Invoice.status.in_(OPEN_STATUSES), _PLAN_DUE),
                                       {"now": now})).scalars())


async def clients_to_plan(session: AsyncSession, tenant_id: str, now: datetime, *, invoices_at_most: int
                          ) -> list[list[str]]:
    """The tenant's clients with invoices whose time to be planned has come, in groups (in id order)
    of as many whole clients as fit `invoices_at_most` of those invoices together, at least one each."""
    query = (select(m.Invoice.client_id, func.count())
             .where(m.Invoice.tenant_id == tenant_id, m.Invoice.status.in_(OPEN_STATUSES), _PLAN_DUE)
             .group_by(m.Invoice.client_id).order_by(m.Invoice.client_id))
    groups: list[list[str]] = []
    total = 0
    for client_id, count in (await session.execute(query, {"now": now})).all():
        if groups and total + count <= invoices_at_most:
            groups[-1].append(client_id)
            total += count
        else:
            groups.append([client_id])
            total = count
    return groups


async def invoices_to_plan(session: AsyncSession, tenant_id: str, now: datetime, client_ids: list[str]
                           ) -> list[tuple[m.Invoice, int, str]]:
    """The clients' open invoices whose time to be planned has come, with what is still owed on each
    (paid ones included: planning them is what sets their time to never) and the row version read,
    so `set_next_plan` does not overwrite a change made meanwhile."""
    # A tick plans a few of the tenant's invoices.
    query = (select(m.Invoice, _balance(_collected_on_invoice()), text("invoices.xmin::text"))
             .where(m.Invoice.tenant_id == tenant_id, m.Invoice.client_id.in_(client_ids),
                    m.Invoice.status.in_(OPEN_STATUSES), _PLAN_DUE)
             .order_by(m.Invoice.due_on))
    return [(row[0], int(row[1]), row[2]) for row in (await session.execute(query, {"now": now})).all()]


async def set_next_plan(session: AsyncSession, tenant_id: str, at: dict[str, tuple[datetime, str]]) -> None:
    """Store each invoice's next planning instant, unless the row changed since it was read (its
    version differs) or is being changed now (locked): then it stays due, and the next tick plans it
    with what changed. Never waiting for a row lock also keeps the scheduler out of deadlocks with
    the triggers, which lock a client's invoices in their own order (migration 0006)."""
    if not at:
        return
    await session.execute(text(
        "WITH v AS (SELECT * FROM unnest(CAST(:ids AS text[]), CAST(:ats AS timestamptz[]), "
        "CAST(:versions AS text[])) AS v(invoice_id, at, version)), "
        "free AS (SELECT invoices.invoice_id, v.at FROM invoices JOIN v ON invoices.invoice_id = v.invoice_id "
        "WHERE invoices.tenant_id = :tenant AND invoices.xmin::text = v.version FOR UPDATE OF invoices SKIP LOCKED) "
        "UPDATE invoices SET next_plan_at = free.at FROM free "
        "WHERE invoices.tenant_id = :tenant AND invoices.invoice_id = free.invoice_id"
    ), {"tenant": tenant_id, "ids": list(at), "ats": [a for a, _ in at.values()],
        "versions": [v for _, v in at.values()]})


# --- policies -------------------------------------------------------------------------------------

def to_policy(row: m.Policy) -> Policy:
    return Policy(
        id=row.id, name=row.name, steps=tuple(Step(**s) for s in row.steps), business_days=row.business_days,
        send_hour=row.send_hour, quiet_start_hour=row.quiet_start_hour, quiet_end_hour=row.quiet_end_hour,
        drift_shift_days=row.drift_shift_days, drift_firmer=row.drift_firmer,
        autopay_courtesy=row.autopay_courtesy,
    )


async def policies(session: AsyncSession, tenant_id: str) -> list[m.Policy]:
    return list((await session.execute(select(m.Policy).where(m.Policy.tenant_id == tenant_id)
                                       .order_by(m.Policy.id))).scalars())


async def get_policy(session: AsyncSession, tenant_id: str, policy_id: str) -> m.Policy | None:
    return await session.get(m.Policy, (tenant_id, policy_id))


async def upsert_policy(session: AsyncSession, tenant_id: str, policy_id: str, values: dict[str, Any]) -> m.Policy:
    if values.get("is_default"):
        # One default per tenant: the new default takes the flag from the old one.
        await session.execute(update(m.Policy).where(m.Policy.tenant_id == tenant_id, m.Policy.is_default,
                                                     m.Policy.id != policy_id).values(is_default=False))
    statement = insert(m.Policy).values(tenant_id=tenant_id, id=policy_id, **values)
    await session.execute(statement.on_conflict_do_update(
        index_elements=[m.Policy.tenant_id, m.Policy.id], set_={**values, "updated_at": func.now()}))
    row = await session.get(m.Policy, (tenant_id, policy_id), populate_existing=True)
    assert row is not None
    return row


def policy_for(client: m.Client, by_id: dict[str, Policy]) -> Policy:
    """The client's override, else the tenant's default, else the built-in default."""
    if client.policy_id and client.policy_id in by_id:
        return by_id[client.policy_id]
    return by_id.get("__default__") or Policy()


async def policy_map(session: AsyncSession, tenant_id: str) -> dict[str, Policy]:
    result: dict[str, Policy] = {}
    for row in await policies(session, tenant_id):
        result[row.id] = to_policy(row)
        if row.is_default:
            result["__default__"] = result[row.id]
    if "__default__" not in result and DEFAULT_POLICY_ID in result:
        result["__default__"] = result[DEFAULT_POLICY_ID]
    return result


# --- steps, messages, tasks, timeline -------------------------------------------------------------

async def decided_steps(session: AsyncSession, tenant_id: str, invoice_ids: list[str]) -> dict[str, set[str]]:
    decided: dict[str, set[str]] = defaultdict(set)
    if invoice_ids:
        rows = await session.execute(select(m.ReminderStep.invoice_id, m.ReminderStep.step_key).where(
            m.ReminderStep.tenant_id == tenant_id, m.ReminderStep.invoice_id.in_(invoice_ids)))
        for invoice_id, key in rows.all():
            decided[invoice_id].add(key)
    return decided


async def insert_message(session: AsyncSession, **values: Any) -> uuid.UUID | None:
    """The day's email of a client, or None when the client already has one for that day."""
    statement = insert(m.Message).values(**values).on_conflict_do_nothing(
        constraint="messages_one_per_day").returning(m.Message.id)
    return (await session.execute(statement)).scalar_one_or_none()


async def messages(session: AsyncSession, tenant_id: str, client_id: str | None, limit: int) -> list[m.Message]:
    query = select(m.Message).where(m.Message.tenant_id == tenant_id)
    if client_id:
        query = query.where(m.Message.client_id == client_id)
    return list((await session.execute(query.order_by(m.Message.created_at.desc()).limit(limit))).scalars())


async def claim_due_message(session: AsyncSession, now: datetime) -> m.Message | None:
    """One pending email whose time has come, locked so that no other worker sends it too."""
    return (await session.execute(select(m.Message).where(
        m.Message.status == "pending", m.Message.next_attempt_at <= now,
    ).order_by(m.Message.next_attempt_at).limit(1).with_for_update(skip_locked=True))).scalar_one_or_none()


async def add_timeline(session: AsyncSession, tenant_id: str, client_id: str, kind: str, at: datetime,
                       invoice_id: str | None = None, **detail: Any) -> None:
    await add_timelines(session, [dict(tenant_id=tenant_id, client_id=client_id, invoice_id=invoice_id, kind=kind,
                                       detail=detail, at=at)])


async def add_timelines(session: AsyncSession, entries: list[dict[str, Any]]) -> None:
    """Timeline entries (tenant_id, client_id, invoice_id, kind, detail, at), in this order: one statement."""
    if entries:
        await session.execute(insert(m.TimelineEntry.__table__), entries)


async def timeline(session: AsyncSession, tenant_id: str, client_id: str, after: int | None, limit: int
                   ) -> list[m.TimelineEntry]:
    query = select(m.TimelineEntry).where(m.TimelineEntry.tenant_id == tenant_id,
                                          m.TimelineEntry.client_id == client_id)
    if after is not None:
        query = query.where(m.TimelineEntry.id > after)
    return list((await session.execute(query.order_by(m.TimelineEntry.id).limit(limit))).scalars())


async def tasks(session: AsyncSession, tenant_id: str, status: str | None, limit: int) -> list[m.EscalationTask]:
    query = select(m.EscalationTask).where(m.EscalationTask.tenant_id == tenant_id)
    if status:
        query = query.where(m.EscalationTask.status == status)
    return list((await session.execute(query.order_by(m.EscalationTask.created_at.desc()).limit(limit))).scalars())


# --- promises, opt-outs, behaviour ----------------------------------------------------------------

async def pending_promises(session: AsyncSession, tenant_id: str, today: date) -> list[m.Promise]:
    """Promises that still hold reminders back: not yet kept, and their date not passed."""
    return list((await session.execute(select(m.Promise).where(
        m.Promise.tenant_id == tenant_id, m.Promise.status == "pending",
        m.Promise.promised_on >= today))).scalars())


async def unsettled_promises(session: AsyncSession, tenant_id: str) -> list[m.Promise]:
    return list((await session.execute(select(m.Promise).where(
        m.Promise.tenant_id == tenant_id, m.Promise.status == "pending").with_for_update(skip_locked=True))).scalars())


async def pauses_ended(session: AsyncSession, tenant_id: str, today: date) -> list[m.Client]:
    return list((await session.execute(select(m.Client).where(
        m.Client.tenant_id == tenant_id, m.Client.paused, m.Client.paused_until < today,
    ).with_for_update(skip_locked=True))).scalars())


async def tenants_with_housekeeping(session: AsyncSession) -> list[str]:
    """Tenants with a promise to settle or a dated pause to end."""
    promises = select(m.Promise.tenant_id).where(m.Promise.status == "pending")
    pauses = select(m.Client.tenant_id).where(m.Client.paused, m.Client.paused_until.is_not(None))
    return list((await session.execute(promises.union(pauses))).scalars())


async def get_task(session: AsyncSession, tenant_id: str, task_id: str) -> m.EscalationTask | None:
    try:
        key = uuid.UUID(task_id)
    except ValueError:
        return None
    return (await session.execute(select(m.EscalationTask).where(
        m.EscalationTask.tenant_id == tenant_id, m.EscalationTask.id == key).with_for_update())).scalar_one_or_none()


async def opted_out(session: AsyncSession, tenant_id: str) -> set[str]:
    return set((await session.execute(select(m.OptOut.email).where(m.OptOut.tenant_id == tenant_id))).scalars())


async def add_opt_out(session: AsyncSession, tenant_id: str, email: str) -> None:
    await session.execute(insert(m.OptOut).values(tenant_id=tenant_id, email=email.lower()).on_conflict_do_nothing())


async def get_behaviour(session: AsyncSession, tenant_id: str, client_id: str) -> m.ClientBehaviour | None:
    return await session.get(m.ClientBehaviour, (tenant_id, client_id))


async def behaviours(session: AsyncSession, tenant_id: str, client_ids: list[str]) -> dict[str, m.ClientBehaviour]:
    rows = await session.scalars(select(m.ClientBehaviour).where(
        m.ClientBehaviour.tenant_id == tenant_id, m.ClientBehaviour.client_id.in_(client_ids)))
    return {b.client_id: b for b in rows}


async def save_behaviours(session: AsyncSession, tenant_id: str, values_by_client: dict[str, dict[str, Any]]) -> None:
    statement = insert(m.ClientBehaviour.__table__)
    columns = next(iter(values_by_client.values())).keys()
    await session.execute(statement.on_conflict_do_update(
        index_elements=[m.ClientBehaviour.tenant_id, m.ClientBehaviour.client_id],
        set_={**{k: statement.excluded[k] for k in columns}, "updated_at": func.now()}),
        [{"tenant_id": tenant_id, "client_id": client_id, **values}
         for client_id, values in values_by_client.items()])


async def set_drifting(session: AsyncSession, tenant_id: str, drifting_by_client: dict[str, bool]) -> None:
    """Only a flag that flips is written: a payment that merely moves the averages leaves the row alone."""
    await ensure_clients(session, [(tenant_id, client_id) for client_id in drifting_by_client])
    await session.execute(text(
        "UPDATE clients SET drifting = :drifting, updated_at = now() "
        "WHERE tenant_id = :t AND client_id = :c AND drifting IS DISTINCT FROM :drifting"),
        [{"t": tenant_id, "c": client_id, "drifting": drifting} for client_id, drifting in drifting_by_client.items()])


async def clients(session: AsyncSession, tenant_id: str, client_ids: list[str]) -> dict[str, m.Client]:
    if not client_ids:
        return {}
    rows = await session.execute(select(m.Client).where(m.Client.tenant_id == tenant_id,
                                                        m.Client.client_id.in_(client_ids)))
    return {c.client_id: c for c in rows.scalars()}


async def tenant_profile(session: AsyncSession, tenant_id: str) -> TenantProfile | None:
    return await load_profile(session, tenant_id)


async def try_client_lock(session: AsyncSession, tenant_id: str, client_id: str) -> bool:
    """A transaction-scoped lock so two workers do not plan one client at once (the unique keys
    would stop a double send anyway; this only saves the wasted work)."""
    return bool((await session.execute(text("SELECT pg_try_advisory_xact_lock(hashtext(:k))"),
                                       {"k": f"collections:{tenant_id}:{client_id}"})).scalar())
