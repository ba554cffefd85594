"""The scheduler: turns each client's plan into recorded steps, one consolidated email and tasks.

`schedule(...)` runs on every tick of the background loop (and for "send now" and "preview"). It
reads a snapshot per tenant, plans each client in memory (`planner`), and records a client's
decisions in one transaction: step rows (primary key per invoice and step), the day's message
(unique per client and local day) and any escalation. A second worker, or a second tick, that planned
the same step fails on those keys and changes nothing.
"""
from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import structlog
from payloop.checkout_links import mint_checkout_token
from payloop.ids import uuid7
from payloop.tenant_replica import TenantProfile
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from payloop_collections import cases, repository
from payloop_collections import models as m
from payloop_collections.email_content import EmailItem, render
from payloop_collections.metrics import STEPS_DECIDED
from payloop_collections.planner import (
    SENDING, ClientContext, ClientPlan, Decision, OpenInvoice, autopay_eligible, message_level, next_plan_at,
    pause_reason, plan_client, plan_invoice,
)
from payloop_collections.policy import Policy, step_send_at, steps_for
from payloop_collections.settings import CollectionsSettings

log = structlog.get_logger(__name__)


@dataclass
class TenantSnapshot:
    tenant_id: str
    profile: TenantProfile | None
    zone: ZoneInfo
    holidays: frozenset[date]
    policies: dict[str, Policy]
    clients: dict[str, m.Client]
    invoices: dict[str, list[tuple[m.Invoice, int]]]
    decided: dict[str, set[str]]
    promises: list[m.Promise]
    opted_out: set[str]
    versions: dict[str, str] = field(default_factory=dict)  # invoice id -> row version (due-only snapshots)


@dataclass
class ClientOutcome:
    client_id: str
    message_id: str | None = None
    decisions: list[Decision] = field(default_factory=list)
    deferred: list[Decision] = field(default_factory=list)  # already emailed today: tomorrow
    task_id: str | None = None


def _zone(profile: TenantProfile | None) -> ZoneInfo:
    return ZoneInfo(profile.timezone if profile else "UTC")


def _holidays(profile: TenantProfile | None) -> frozenset[date]:
    raw = (profile.settings.get("holidays") if profile else None) or []
    return frozenset(date.fromisoformat(d) for d in raw)


async def snapshot(session: AsyncSession, tenant_id: str, now: datetime, client_id: str | None = None, *,
                   due_clients: list[str] | None = None) -> TenantSnapshot:
    """The tenant's open invoices (of one client if given), or of `due_clients` those whose time to be
    planned has come, and everything their plans are made of."""
    profile = await repository.tenant_profile(session, tenant_id)
    zone = _zone(profile)
    versions: dict[str, str] = {}
    if due_clients is not None:
        due = await repository.invoices_to_plan(session, tenant_id, now, due_clients)
        rows = [(invoice, balance) for invoice, balance, _ in due]
        versions = {invoice.invoice_id: version for invoice, _, version in due}
    else:
        rows = await repository.open_invoices(session, tenant_id, client_id)
    invoices: dict[str, list[tuple[m.Invoice, int]]] = defaultdict(list)
    for invoice, balance in rows:
        invoices[invoice.client_id].append((invoice, balance))
    return TenantSnapshot(
        tenant_id=tenant_id, profile=profile, zone=zone, holidays=_holidays(profile),
        policies=await repository.policy_map(session, tenant_id),
        clients=await repository.clients(session, tenant_id, list(invoices)),
        invoices=dict(invoices),
        decided=await repository.decided_steps(session, tenant_id, [i.invoice_id for i, _ in rows]),
        promises=await repository.pending_promises(session, tenant_id, now.astimezone(zone).date()),
        opted_out=await repository.opted_out(session, tenant_id),
        versions=versions,
    )


def client_context(client: m.Client, promises: list[m.Promise]) -> ClientContext:
    mine = [p for p in promises if p.client_id == client.client_id]
    return ClientContext(
        autopay_enrolled=client.autopay_enrolled, drifting=client.drifting, paused=client.paused,
        paused_until=client.paused_until,
        promised_invoice_ids=frozenset(i for p in mine for i in p.invoice_ids),
        promise_covers_all=any(not p.invoice_ids for p in mine),
    )


# ACH debits settle within a few business days; a payment silent for longer than this is presumed
# lost (its events may come yet) and no longer holds the invoice's reminders back.
IN_FLIGHT_AT_MOST = timedelta(days=10)


def open_invoice(invoice: m.Invoice, balance: int, client: m.Client, now: datetime) -> OpenInvoice:
    in_flight = invoice.payment_in_flight_id is not None and (
        invoice.payment_in_flight_since is None or now - invoice.payment_in_flight_since < IN_FLIGHT_AT_MOST)
    return OpenInvoice(
        invoice_id=invoice.invoice_id, number=invoice.number, due_on=invoice.due_on, balance_minor=balance,
        currency=invoice.currency, disputed=invoice.dispute_ticket_id is not None,
        installment_plan=invoice.installment_plan_id is not None,
        payment_in_flight=in_flight, retry_at=invoice.retry_at,
        retry_attempt=invoice.retry_attempt, autopay_failed=invoice.autopay_failed,
        autopay_eligible=autopay_eligible(client.autopay_rule, {line.get("kind") for line in invoice.lines}, balance),
    )


def plan_for(snap: TenantSnapshot, client_id: str, now: datetime, *, force: bool = False) -> ClientPlan:
    client = snap.clients[client_id]
    policy = repository.policy_for(client, snap.policies)
    invoices = [open_invoice(i, b, client, now) for i, b in snap.invoices.get(client_id, [])]
    return plan_client(invoices, client_context(client, snap.promises), policy, snap.decided, now, snap.zone,
                       force=force, holidays=snap.holidays)


def next_plans(snap: TenantSnapshot, client_id: str, plan: ClientPlan, now: datetime
               ) -> dict[str, tuple[datetime, str]]:
    """When to plan again each of the client's invoices that has nothing to decide now (with the row
    version read). One with a decision stays due: the next tick plans it with the decision in place."""
    client = snap.clients[client_id]
    policy = repository.policy_for(client, snap.policies)
    context = client_context(client, snap.promises)
    deciding = {d.invoice_id for d in plan.decisions}
    return {invoice.invoice_id: (next_plan_at(open_invoice(invoice, balance, client, now), context, policy,
                                              snap.decided.get(invoice.invoice_id, set()), now, snap.zone,
                                              snap.holidays), snap.versions[invoice.invoice_id])
            for invoice, balance in snap.invoices.get(client_id, []) if invoice.invoice_id not in deciding}


async def schedule(session_factory: async_sessionmaker[AsyncSession], settings: CollectionsSettings,
                   now: datetime, *, tenant_id: str | None = None, client_id: str | None = None,
                   force: bool = False) -> list[ClientOutcome]:
    """Plan and record every due step now (of one tenant or client if given).

    The background tick (no tenant given) plans only invoices whose time has come, whole clients at
    most `plan_at_once` invoices at a time, and stores when each of the others is next to be planned;
    a tenant or client given is planned whole."""
    if tenant_id is not None:
        async with session_factory() as session:
            snap = await snapshot(session, tenant_id, now, client_id)
        return await _plan(session_factory, settings, snap, now, force=force, due_only=False)
    async with session_factory() as session:
        tenants = await repository.tenants_to_plan(session, now)
    outcomes: list[ClientOutcome] = []
    for tenant in tenants:
        async with session_factory() as session:
            groups = await repository.clients_to_plan(session, tenant, now, invoices_at_most=settings.plan_at_once)
        for clients in groups:
            async with session_factory() as session:
                snap = await snapshot(session, tenant, now, due_clients=clients)
            outcomes += await _plan(session_factory, settings, snap, now, force=force, due_only=True)
    return outcomes


async def _plan(session_factory: async_sessionmaker[AsyncSession], settings: CollectionsSettings,
                snap: TenantSnapshot, now: datetime, *, force: bool, due_only: bool) -> list[ClientOutcome]:
    """Plan the snapshot's clients and record their decisions; with `due_only`, also store when each
    invoice with nothing to decide is next to be planned."""
    tenant = snap.tenant_id
    outcomes: list[ClientOutcome] = []
    later: dict[str, tuple[datetime, str]] = {}
    for client in snap.invoices:
        await asyncio.sleep(0)  # the consumer shares this event loop: its batches go in between clients
        plan = plan_for(snap, client, now, force=force)
        if due_only:
            later.update(next_plans(snap, client, plan, now))
        if not plan.decisions:
            continue
        try:
            async with session_factory() as session, session.begin():
                if not await repository.try_client_lock(session, tenant, client):
                    continue
                outcome = await record(session, settings, snap, client, plan, now)
        except IntegrityError:
            # Another worker recorded these steps first: nothing to do, by design.
            log.info("collections.schedule.already_decided", tenant_id=tenant, client_id=client)
            continue
        outcomes.append(outcome)
        for decision in outcome.decisions:
            STEPS_DECIDED.labels(decision.outcome).inc()
        if due_only and outcome.deferred:
            # The client had its email today: these sends wait for its next local day.
            tomorrow = datetime.combine(now.astimezone(snap.zone).date() + timedelta(days=1), time(), snap.zone)
            later.update({d.invoice_id: (tomorrow, snap.versions[d.invoice_id]) for d in outcome.deferred})
    if later:
        async with session_factory() as session, session.begin():
            await repository.set_next_plan(session, tenant, later)
    return outcomes


async def housekeeping(session_factory: async_sessionmaker[AsyncSession], now: datetime) -> None:
    """Settle promises (kept or broken) and end dated pauses, in each tenant's local day."""
    async with session_factory() as session:
        tenants = await repository.tenants_with_housekeeping(session)
    for tenant in tenants:
        async with session_factory() as session, session.begin():
            today = now.astimezone(_zone(await repository.tenant_profile(session, tenant))).date()
            await cases.settle_promises(session, tenant, now, today)
            await cases.end_pauses(session, tenant, now, today)


async def record(session: AsyncSession, settings: CollectionsSettings, snap: TenantSnapshot, client_id: str,
                 plan: ClientPlan, now: datetime) -> ClientOutcome:
    client = snap.clients[client_id]
    local_date = now.astimezone(snap.zone).date()
    outcome = ClientOutcome(client_id)
    by_id = {i.invoice_id: (i, b) for i, b in snap.invoices[client_id]}
    recipients = [e for e in client.billing_emails if e.lower() not in snap.opted_out]
    sends = plan.sends
    decisions = [d for d in plan.decisions if d.outcome not in SENDING]
    if sends and not recipients:
        decisions += [Decision(d.invoice_id, d.key, "skip", d.offset_days, d.level, reason="no_recipient")
                      for d in sends]
        sends = []
    message_id = None
    if sends:
        message_id = await _queue_email(session, settings, snap, client, sends, by_id, recipients, local_date, now)
        if message_id is None:
            outcome.deferred = sends  # one email per client per day: these wait for tomorrow
        else:
            decisions += sends
    for decision in decisions:
        session.add(m.ReminderStep(
            tenant_id=snap.tenant_id, invoice_id=decision.invoice_id, step_key=decision.key, client_id=client_id,
            outcome=decision.outcome, offset_days=decision.offset_days, level=decision.level,
            reason=decision.reason, message_id=message_id if decision in sends else None, decided_at=now))
    await session.flush()
    # A client's first pass can skip every step of many invoices (auto-pay): one statement for them all.
    await repository.add_timelines(session, [
        dict(tenant_id=snap.tenant_id, client_id=client_id, invoice_id=decision.invoice_id, kind="skipped", at=now,
             detail={"step": decision.key, "offset_days": decision.offset_days, "reason": decision.reason})
        for decision in decisions if decision.outcome in ("skip", "superseded")])
    escalations = [d for d in decisions if d.outcome == "escalate"]
    if escalations:
        task = await cases.escalate(session, snap.tenant_id, client_id, now,
                                    invoice_ids=[d.invoice_id for d in escalations], level="handoff",
                                    context=await task_context(session, snap, client, by_id))
        outcome.task_id = str(task.id)
    outcome.message_id = str(message_id) if message_id else None
    outcome.decisions = decisions
    return outcome


async def _queue_email(session: AsyncSession, settings: CollectionsSettings, snap: TenantSnapshot,
                       client: m.Client, sends: list[Decision], by_id: dict[str, tuple[m.Invoice, int]],
                       recipients: list[str], local_date: date, now: datetime) -> uuid.UUID | None:
    items = []
    for decision in sends:
        invoice, balance = by_id[decision.invoice_id]
        items.append(EmailItem(
            invoice_id=invoice.invoice_id, number=invoice.number, due_on=invoice.due_on, balance_minor=balance,
            total_minor=invoice.total_minor, currency=invoice.currency,
            kind={"send": "reminder"}.get(decision.outcome, decision.outcome), level=decision.level,
            days_overdue=(local_date - invoice.due_on).days, agreement=invoice.agreement, lines=invoice.lines,
            retry_at=decision.retry_at))
    level = message_level(sends)
    token = mint_checkout_token(snap.tenant_id, client.client_id, [d.invoice_id for d in sends],
                                ttl=timedelta(days=settings.checkout_link_days), now=now)
    profile = snap.profile
    rendered = render(tenant_name=profile.name if profile else snap.tenant_id,
                      branding=profile.branding if profile else {}, client_name=client.name, level=level,
                      items=items, checkout_url=f"{settings.checkout_base_url.rstrip('/')}/{token}",
                      tenant_timezone=str(snap.zone))
    firmest = max(sends, key=lambda d: ("courtesy", "friendly", "firm", "final").index(d.level))
    template = "retry_notice" if all(d.outcome == "retry_notice" for d in sends) else (
        "courtesy" if all(d.outcome == "courtesy" for d in sends) else "reminder")
    return await repository.insert_message(
        session, id=uuid7(), tenant_id=snap.tenant_id, client_id=client.client_id, local_date=local_date,
        recipients=recipients, subject=rendered.subject, html=rendered.html, text=rendered.text, level=level,
        step=firmest.offset_days, template=template, invoice_ids=[d.invoice_id for d in sends],
        status="pending", attempts=0, next_attempt_at=now, created_at=now)


async def task_context(session: AsyncSession, snap: TenantSnapshot, client: m.Client,
                       by_id: dict[str, tuple[m.Invoice, int]]) -> dict[str, Any]:
    """What a person needs to pick the case up: balances, contacts, behaviour, recent actions."""
    behaviour = await repository.get_behaviour(session, snap.tenant_id, client.client_id)
    recent = await repository.timeline(session, snap.tenant_id, client.client_id, None, 200)
    return {
        "client_name": client.name, "billing_emails": client.billing_emails,
        "autopay_enrolled": client.autopay_enrolled,
        "open_invoices": [{"invoice_id": i.invoice_id, "number": i.number, "due_on": i.due_on.isoformat(),
                           "balance_minor": b, "currency": i.currency,
                           "agreement": (i.agreement or {}).get("name")} for i, b in by_id.values()],
        "behaviour": None if behaviour is None else {
            "average_days_to_pay": behaviour.average_days_to_pay,
            "recent_days_to_pay": behaviour.recent_days_to_pay, "on_time_ratio": behaviour.on_time_ratio,
            "drifting": behaviour.drifting},
        "recent_actions": [{"kind": e.kind, "at": e.at.isoformat(), **e.detail} for e in recent[-10:]],
    }


@dataclass
class PreviewItem:
    invoice_id: str
    number: str
    balance_minor: int
    currency: str
    due_on: date
    step: str | None
    offset_days: int | None
    level: str | None
    action: str
    at: datetime | None
    reason: str | None


async def preview(session: AsyncSession, tenant_id: str, client_id: str, now: datetime) -> list[PreviewItem]:
    """For each open invoice of the client: the next step, when it is due, and what it will do."""
    snap = await snapshot(session, tenant_id, now, client_id)
    if client_id not in snap.clients:
        return []
    client = snap.clients[client_id]
    policy = repository.policy_for(client, snap.policies)
    context = client_context(client, snap.promises)
    steps = steps_for(policy, drifting=context.drifting)
    items: list[PreviewItem] = []
    for invoice, balance in snap.invoices.get(client_id, []):
        state = open_invoice(invoice, balance, client, now)
        decided = snap.decided.get(invoice.invoice_id, set())
        base = dict(invoice_id=invoice.invoice_id, number=invoice.number, balance_minor=balance,
                    currency=invoice.currency, due_on=invoice.due_on)
        waiting = pause_reason(state, context, now.astimezone(snap.zone).date())
        if waiting:
            items.append(PreviewItem(**base, step=None, offset_days=None, level=None, action="wait", at=None,
                                     reason=waiting))
            continue
        done = [int(k[4:]) for k in decided if k.startswith("step")]
        upcoming = [i for i in range(len(steps)) if i > (max(done) if done else -1)]
        if not upcoming:
            items.append(PreviewItem(**base, step=None, offset_days=None, level=None, action="done", at=None,
                                     reason="sequence complete"))
            continue
        index = upcoming[0]
        at = max(step_send_at(invoice.due_on, steps[index], policy, snap.zone, snap.holidays),
                 now.astimezone(snap.zone))
        decisions, why = plan_invoice(state, context, policy, decided, at, snap.zone, holidays=snap.holidays)
        decision = decisions[-1] if decisions else None
        items.append(PreviewItem(
            **base, step=decision.key if decision else f"step{index}",
            offset_days=decision.offset_days if decision else steps[index].offset_days,
            level=decision.level if decision else steps[index].level,
            action=decision.outcome if decision else "wait", at=at.astimezone(snap.zone),
            reason=decision.reason if decision else why))
    return items
