"""Commands on a client's collection case: pause, resume, promise, escalate, behaviour refresh.

Each change writes its timeline entry and its event (through the outbox) in the caller's transaction.
"""
from __future__ import annotations

from datetime import date, datetime
from typing import Any

from payloop import outbox
from payloop.events import new_event
from payloop.events.envelope import Envelope
from payloop.ids import uuid7
from sqlalchemy.ext.asyncio import AsyncSession

from payloop_collections import behaviour, repository
from payloop_collections import models as m

PRODUCER = "collections"


async def publish(session: AsyncSession, type: str, tenant_id: str, client_id: str, data: dict[str, Any],
                  now: datetime, causation: Envelope | str | None = None) -> None:
    await outbox.publish(session, new_event(type, tenant_id=tenant_id, client_id=client_id, data=data,
                                            producer=PRODUCER, causation=causation, occurred_at=now))


async def case_id(session: AsyncSession, tenant_id: str, client_id: str) -> str:
    await repository.ensure_client(session, tenant_id, client_id)
    client = await repository.get_client(session, tenant_id, client_id)
    assert client is not None
    return str(client.case_id)


async def paused(session: AsyncSession, tenant_id: str, client_id: str, reason: str, now: datetime, *,
                 until: date | None = None, causation: Envelope | str | None = None, **detail: Any) -> None:
    """Record and announce that (part of) a client's case waits: a dispute, promise, plan or a person."""
    case = await case_id(session, tenant_id, client_id)
    await repository.add_timeline(session, tenant_id, client_id, "paused", now, reason=reason,
                                  until=until.isoformat() if until else None, **detail)
    await publish(session, "collection.paused", tenant_id, client_id,
                  {"case_id": case, "reason": reason, "until": until.isoformat() if until else None},
                  now, causation)


async def pause(session: AsyncSession, tenant_id: str, client_id: str, now: datetime, until: date | None,
                note: str | None, actor: str) -> None:
    await repository.update_client(session, tenant_id, client_id, paused=True, paused_until=until)
    await paused(session, tenant_id, client_id, "manual", now, until=until, note=note, by=actor)


async def resume(session: AsyncSession, tenant_id: str, client_id: str, now: datetime, actor: str) -> None:
    await repository.update_client(session, tenant_id, client_id, paused=False, paused_until=None)
    await repository.add_timeline(session, tenant_id, client_id, "resumed", now, by=actor)


async def record_promise(session: AsyncSession, tenant_id: str, client_id: str, now: datetime, *,
                         promised_on: date, amount_minor: int, currency: str, invoice_ids: list[str],
                         actor: str) -> m.Promise:
    await repository.ensure_client(session, tenant_id, client_id)
    promise = m.Promise(id=uuid7(), tenant_id=tenant_id, client_id=client_id, invoice_ids=invoice_ids,
                        promised_on=promised_on, amount_minor=amount_minor, currency=currency, created_at=now)
    session.add(promise)
    await session.flush()
    await repository.add_timeline(session, tenant_id, client_id, "promised", now, promise_id=str(promise.id),
                                  promised_on=promised_on.isoformat(), amount_minor=amount_minor,
                                  currency=currency, invoice_ids=invoice_ids, by=actor)
    await publish(session, "promise.recorded", tenant_id, client_id, {
        "promise_id": str(promise.id), "invoice_ids": invoice_ids, "promised_on": promised_on.isoformat(),
        "amount_minor": amount_minor, "currency": currency}, now)
    await paused(session, tenant_id, client_id, "promise", now, until=promised_on, promise_id=str(promise.id))
    return promise


async def escalate(session: AsyncSession, tenant_id: str, client_id: str, now: datetime, *,
                   invoice_ids: list[str], level: str, context: dict[str, Any]) -> m.EscalationTask:
    case = await case_id(session, tenant_id, client_id)
    task = m.EscalationTask(id=uuid7(), tenant_id=tenant_id, client_id=client_id, case_id=case,
                            invoice_ids=invoice_ids, level=level, status="open", context=context, created_at=now)
    session.add(task)
    await session.flush()
    await repository.add_timeline(session, tenant_id, client_id, "escalated", now, task_id=str(task.id),
                                  invoice_ids=invoice_ids, level=level)
    await publish(session, "collection.escalated", tenant_id, client_id, {
        "case_id": case, "level": level, "invoice_ids": invoice_ids, "task_id": str(task.id)}, now)
    return task


async def refresh_behaviour(session: AsyncSession, tenant_id: str, client_id: str, now: datetime,
                            causation: Envelope | str | None = None) -> behaviour.Behaviour | None:
    return (await refresh_behaviours(session, tenant_id, {client_id: causation}, now))[client_id]


async def refresh_behaviours(session: AsyncSession, tenant_id: str, causes: dict[str, Envelope | str | None],
                             now: datetime) -> dict[str, behaviour.Behaviour | None]:
    """Recompute days-to-pay and drift of these clients (each with the event that caused it) from their
    paid invoices; announce each change. A few statements for any number of clients."""
    paid = await repository.paid_totals(session, tenant_id, list(causes), behaviour.WINDOW_DAYS)
    stored = await repository.behaviours(session, tenant_id, list(causes))
    results: dict[str, behaviour.Behaviour | None] = {}
    changed: dict[str, dict[str, Any]] = {}
    for client_id in causes:
        result = results[client_id] = behaviour.from_totals(paid.get(client_id))
        if result is None:
            continue
        values = {"samples": result.samples, "average_days_to_pay": result.average_days_to_pay,
                  "recent_days_to_pay": result.recent_days_to_pay,
                  "baseline_days_to_pay": result.baseline_days_to_pay, "on_time_ratio": result.on_time_ratio,
                  "drifting": result.drifting}
        old = stored.get(client_id)
        if old is None or any(getattr(old, k) != v for k, v in values.items()):
            changed[client_id] = values
    if not changed:
        return results
    await repository.save_behaviours(session, tenant_id, changed)
    await repository.set_drifting(session, tenant_id, {c: values["drifting"] for c, values in changed.items()})
    events = []
    for client_id, values in changed.items():
        result = results[client_id]
        was_drifting = stored[client_id].drifting if client_id in stored else False
        if was_drifting != result.drifting:
            await repository.add_timeline(session, tenant_id, client_id,
                                          "drift_detected" if result.drifting else "drift_cleared", now,
                                          recent_days_to_pay=result.recent_days_to_pay,
                                          baseline_days_to_pay=result.baseline_days_to_pay)
        events.append(new_event("client.behaviour_changed", tenant_id=tenant_id, client_id=client_id,
                                data={**values, "window_days": result.window_days}, producer=PRODUCER,
                                causation=causes[client_id], occurred_at=now))
    await outbox.publish_many(session, events)
    return results


async def settle_promises(session: AsyncSession, tenant_id: str, now: datetime, today: date) -> None:
    """A promise is kept once its invoices are paid, and broken when its date passes first.

    A broken promise simply stops holding reminders back: the sequence resumes with its newest due step.
    """
    for promise in await repository.unsettled_promises(session, tenant_id):
        open_ids = {i.invoice_id for i, _ in await repository.open_invoices(session, tenant_id, promise.client_id)}
        unpaid = open_ids & set(promise.invoice_ids) if promise.invoice_ids else open_ids
        if not unpaid:
            promise.status = "kept"
        elif promise.promised_on < today:
            promise.status = "broken"
        else:
            continue
        await repository.add_timeline(session, tenant_id, promise.client_id, f"promise_{promise.status}", now,
                                      promise_id=str(promise.id), promised_on=promise.promised_on.isoformat(),
                                      unpaid_invoice_ids=sorted(unpaid))


async def end_pauses(session: AsyncSession, tenant_id: str, now: datetime, today: date) -> None:
    """A pause with a date ends the day after it; the timeline says so."""
    for client in await repository.pauses_ended(session, tenant_id, today):
        ended = client.paused_until
        client.paused, client.paused_until = False, None
        await repository.add_timeline(session, tenant_id, client.client_id, "resumed", now,
                                      reason="pause_ended", paused_until=ended.isoformat() if ended else None)


async def close_task(session: AsyncSession, task: m.EscalationTask, now: datetime, actor: str,
                     note: str | None) -> None:
    task.status, task.done_at, task.done_by, task.note = "done", now, actor, note
    await repository.add_timeline(session, task.tenant_id, task.client_id, "task_done", now, task_id=str(task.id),
                                  by=actor, note=note)
