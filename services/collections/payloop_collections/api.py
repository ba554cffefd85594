"""Routes of the collections service: policies, a client's case (timeline, preview, pause, resume,
promise, send now), sent email, escalation tasks, opt-outs and the service clock.

Every route answers for the caller's tenant only, and 404 for a tenant this service has not heard of.
Client ids come from the PSA and may be asked about before their first event: reads then answer an
empty view rather than 404, so a client id says nothing about whether it exists.
"""
from __future__ import annotations

import html

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.ext.asyncio import AsyncSession

from payloop.auth import Principal, require
from payloop.clock import ClockOut, ClockWrite, clock_out, move
from payloop.db import db_session
from payloop.problems import PROBLEM_RESPONSES, NotFound, Problem

from payloop_collections import cases, mailer, repository, sequences, unsubscribe
from payloop_collections.policy import Policy
from payloop_collections.schemas import (
    BehaviourOut, ClientOut, ClientPolicyWrite, MessageOut, OpenInvoiceOut, PauseWrite,
    PolicyOut, PolicyWrite, PreviewItemOut, PromiseOut, PromiseWrite, SendNowOut, StepModel, TaskDoneWrite, TaskOut,
    TimelineEntryOut, TimelinePage,
)
from payloop_collections.wiring import Collections

ClientId = Path(pattern=r"^[A-Za-z0-9_.:-]{1,128}$")
PolicyId = Path(pattern=r"^[A-Za-z0-9_-]{1,64}$")


async def known_tenant(session: AsyncSession, principal: Principal) -> None:
    if await repository.tenant_profile(session, principal.tenant_id) is None:
        raise NotFound("tenant (no tenant.updated received yet)")


def _policy_out(policy: Policy, built_in: bool = False) -> PolicyOut:
    return PolicyOut(
        id=policy.id, name=policy.name, built_in=built_in, is_default=built_in,
        steps=[StepModel(**vars(s)) for s in policy.steps], business_days=policy.business_days,
        send_hour=policy.send_hour, quiet_start_hour=policy.quiet_start_hour,
        quiet_end_hour=policy.quiet_end_hour, drift_shift_days=policy.drift_shift_days,
        drift_firmer=policy.drift_firmer, autopay_courtesy=policy.autopay_courtesy)


def build_router(collections: Collections) -> APIRouter:
    router = APIRouter(prefix="/v1/collections", tags=["collections"], responses=PROBLEM_RESPONSES)

    # --- policies ---------------------------------------------------------------------------------

    @router.get("/policies", response_model=list[PolicyOut], summary="The tenant's collection policies")
    async def list_policies(principal: Principal = require("ar:read"),
                            session: AsyncSession = Depends(db_session)) -> list[PolicyOut]:
        await known_tenant(session, principal)
        rows = await repository.policies(session, principal.tenant_id)
        out = [_policy_out(repository.to_policy(r)).model_copy(update={"is_default": r.is_default}) for r in rows]
        if not any(p.is_default for p in out):
            out.insert(0, _policy_out(Policy(), built_in=True))
        return out

    @router.put("/policies/{policy_id}", response_model=PolicyOut, summary="Create or replace a policy")
    async def put_policy(body: PolicyWrite, policy_id: str = PolicyId,
                         principal: Principal = require("collections:write"),
                         session: AsyncSession = Depends(db_session)) -> PolicyOut:
        await known_tenant(session, principal)
        values = body.model_dump()
        row = await repository.upsert_policy(session, principal.tenant_id, policy_id, values)
        return _policy_out(repository.to_policy(row)).model_copy(update={"is_default": row.is_default})

    # --- a client's case --------------------------------------------------------------------------

    @router.get("/clients/{client_id}", response_model=ClientOut, summary="A client's collection state")
    async def get_client(client_id: str = ClientId, principal: Principal = require("ar:read"),
                         session: AsyncSession = Depends(db_session)) -> ClientOut:
        await known_tenant(session, principal)
        client = await repository.get_client(session, principal.tenant_id, client_id)
        if client is None:
            return ClientOut(client_id=client_id, known=False)
        behaviour = await repository.get_behaviour(session, principal.tenant_id, client_id)
        invoices = await repository.open_invoices(session, principal.tenant_id, client_id)
        return ClientOut(
            client_id=client_id, known=True, case_id=str(client.case_id), name=client.name,
            billing_emails=client.billing_emails, autopay_enrolled=client.autopay_enrolled,
            policy_id=client.policy_id, paused=client.paused, paused_until=client.paused_until,
            drifting=client.drifting,
            behaviour=BehaviourOut.model_validate(behaviour) if behaviour else None,
            open_invoices=[OpenInvoiceOut(
                invoice_id=i.invoice_id, number=i.number, due_on=i.due_on, balance_minor=b, currency=i.currency,
                disputed=i.dispute_ticket_id is not None, installment_plan=i.installment_plan_id is not None,
                retry_at=i.retry_at) for i, b in invoices])

    @router.put("/clients/{client_id}/policy", response_model=ClientOut, summary="Override the client's policy")
    async def put_client_policy(body: ClientPolicyWrite, client_id: str = ClientId,
                                principal: Principal = require("collections:write"),
                                session: AsyncSession = Depends(db_session)) -> ClientOut:
        await known_tenant(session, principal)
        if body.policy_id and await repository.get_policy(session, principal.tenant_id, body.policy_id) is None:
            raise NotFound("policy")
        await repository.update_client(session, principal.tenant_id, client_id, policy_id=body.policy_id)
        await repository.add_timeline(session, principal.tenant_id, client_id, "policy_changed",
                                      collections.clock.now(), policy_id=body.policy_id, by=principal.subject)
        return await get_client(client_id, principal, session)

    @router.get("/clients/{client_id}/timeline", response_model=TimelinePage,
                summary="Every action on the client's case, oldest first")
    async def get_timeline(client_id: str = ClientId, after: int | None = Query(None, ge=0),
                           limit: int = Query(100, ge=1, le=500), principal: Principal = require("ar:read"),
                           session: AsyncSession = Depends(db_session)) -> TimelinePage:
        await known_tenant(session, principal)
        rows = await repository.timeline(session, principal.tenant_id, client_id, after, limit)
        return TimelinePage(items=[TimelineEntryOut.model_validate(r) for r in rows],
                            next_cursor=rows[-1].id if len(rows) == limit else None)

    @router.get("/clients/{client_id}/preview", response_model=list[PreviewItemOut],
                summary="What will be sent for each open invoice, and when")
    async def get_preview(client_id: str = ClientId, principal: Principal = require("ar:read"),
                          session: AsyncSession = Depends(db_session)) -> list[PreviewItemOut]:
        await known_tenant(session, principal)
        items = await sequences.preview(session, principal.tenant_id, client_id, collections.clock.now())
        return [PreviewItemOut.model_validate(i) for i in items]

    @router.post("/clients/{client_id}/pause", response_model=ClientOut, summary="Pause the client's reminders")
    async def pause(body: PauseWrite, client_id: str = ClientId, principal: Principal = require("collections:write"),
                    session: AsyncSession = Depends(db_session)) -> ClientOut:
        await known_tenant(session, principal)
        await cases.pause(session, principal.tenant_id, client_id, collections.clock.now(), body.until, body.note,
                          principal.subject)
        return await get_client(client_id, principal, session)

    @router.post("/clients/{client_id}/resume", response_model=ClientOut, summary="Resume the client's reminders")
    async def resume(client_id: str = ClientId, principal: Principal = require("collections:write"),
                     session: AsyncSession = Depends(db_session)) -> ClientOut:
        await known_tenant(session, principal)
        await cases.resume(session, principal.tenant_id, client_id, collections.clock.now(), principal.subject)
        return await get_client(client_id, principal, session)

    @router.post("/clients/{client_id}/promises", response_model=PromiseOut, status_code=201,
                 summary="Record a promise to pay: reminders for its invoices wait until its date")
    async def record_promise(body: PromiseWrite, client_id: str = ClientId,
                             principal: Principal = require("collections:write"),
                             session: AsyncSession = Depends(db_session)) -> PromiseOut:
        await known_tenant(session, principal)
        invoices = await repository.invoices_with_balance(session, principal.tenant_id, client_id,
                                                          body.invoice_ids or None)
        if len({i.invoice_id for i, _ in invoices} & set(body.invoice_ids)) != len(set(body.invoice_ids)):
            raise NotFound("invoice")
        profile = await repository.tenant_profile(session, principal.tenant_id)
        currency = body.currency or (invoices[0][0].currency if invoices else profile.currency)
        promise = await cases.record_promise(
            session, principal.tenant_id, client_id, collections.clock.now(), promised_on=body.promised_on,
            amount_minor=body.amount_minor, currency=currency, invoice_ids=body.invoice_ids,
            actor=principal.subject)
        return PromiseOut.model_validate(promise)

    @router.post("/clients/{client_id}/send-now", response_model=SendNowOut,
                 summary="Send the next step of each open invoice now, whatever its date",
                 description="Context rules still apply (disputes, promises, auto-pay, opt-outs), and so "
                             "does the limit of one email per client per local day.")
    async def send_now(request: Request, client_id: str = ClientId,
                       principal: Principal = require("collections:write"),
                       session: AsyncSession = Depends(db_session)) -> SendNowOut:
        await known_tenant(session, principal)
        now = collections.clock.now()
        factory = request.app.state.session_factory
        outcomes = await sequences.schedule(factory, collections.settings, now, tenant_id=principal.tenant_id,
                                            client_id=client_id, force=True)
        await mailer.deliver_due(factory, collections.mailer, now, collections.settings.send_max_attempts)
        outcome = outcomes[0] if outcomes else None
        return SendNowOut(message_id=outcome.message_id if outcome else None,
                          task_id=outcome.task_id if outcome else None,
                          steps=[f"{d.invoice_id}:{d.key}:{d.outcome}" for d in outcome.decisions] if outcome else [],
                          deferred=bool(outcome and outcome.deferred))

    # --- email, tasks, opt-outs -------------------------------------------------------------------

    @router.get("/messages", response_model=list[MessageOut], summary="Email queued and sent, newest first")
    async def list_messages(client_id: str | None = Query(None, max_length=128),
                            limit: int = Query(100, ge=1, le=500), principal: Principal = require("ar:read"),
                            session: AsyncSession = Depends(db_session)) -> list[MessageOut]:
        await known_tenant(session, principal)
        rows = await repository.messages(session, principal.tenant_id, client_id, limit)
        return [MessageOut.model_validate(r) for r in rows]

    @router.get("/tasks", response_model=list[TaskOut], summary="Escalation tasks for a person, newest first")
    async def list_tasks(status: str | None = Query(None, pattern=r"^(open|done)$"),
                         limit: int = Query(100, ge=1, le=500), principal: Principal = require("ar:read"),
                         session: AsyncSession = Depends(db_session)) -> list[TaskOut]:
        await known_tenant(session, principal)
        return [TaskOut.model_validate(t) for t in await repository.tasks(session, principal.tenant_id, status, limit)]

    @router.post("/tasks/{task_id}/done", response_model=TaskOut, summary="Close an escalation task")
    async def close_task(body: TaskDoneWrite, task_id: str = Path(max_length=64),
                         principal: Principal = require("collections:write"),
                         session: AsyncSession = Depends(db_session)) -> TaskOut:
        await known_tenant(session, principal)
        task = await repository.get_task(session, principal.tenant_id, task_id)
        if task is None:
            raise NotFound("task")
        if task.status != "done":
            await cases.close_task(session, task, collections.clock.now(), principal.subject, body.note)
        return TaskOut.model_validate(task)

    @router.put("/opt-outs/{email}", status_code=204, summary="Stop emailing this address (unsubscribe)")
    async def opt_out(email: str = Path(max_length=320), principal: Principal = require("collections:write"),
                      session: AsyncSession = Depends(db_session)) -> None:
        await known_tenant(session, principal)
        await repository.add_opt_out(session, principal.tenant_id, email)

    # --- the clock (tests, demos) -----------------------------------------------------------------

    @router.get("/clock", response_model=ClockOut, summary="The instant the scheduler takes as now")
    async def get_clock(principal: Principal = require("ar:read"),
                        session: AsyncSession = Depends(db_session)) -> ClockOut:
        await known_tenant(session, principal)
        return clock_out(collections.clock)

    @router.put("/clock", response_model=ClockOut, summary="Move or speed up the clock (not in production)",
                description="The clock is the whole service's, so this needs the `admin` scope.")
    async def put_clock(body: ClockWrite, principal: Principal = require("admin"),
                        session: AsyncSession = Depends(db_session)) -> ClockOut:
        await known_tenant(session, principal)
        move(collections.clock, body)
        return clock_out(collections.clock)

    return router


def build_public_router(collections: Collections) -> APIRouter:
    """The one-click unsubscribe links of the emails: no bearer token, the signed link is the grant.

    GET only shows a button (mail scanners follow links); POST, from the button or a mail client's
    RFC 8058 one-click request, opts the address out.
    """
    router = APIRouter(prefix="/unsubscribe", tags=["unsubscribe"])

    def grant(token: str) -> unsubscribe.Unsubscribe:
        try:
            return unsubscribe.verify(collections.settings, token)
        except unsubscribe.InvalidUnsubscribeLink as exc:
            raise Problem(400, "Invalid unsubscribe link", str(exc)) from None

    @router.get("/{token}", response_class=HTMLResponse, summary="Confirm unsubscribing (a page with a button)")
    async def confirm(token: str = Path(max_length=1000)) -> HTMLResponse:
        email = grant(token).email
        return HTMLResponse(
            f"<!doctype html><title>Unsubscribe</title><p>Stop payment reminders to <b>{html.escape(email)}</b>?</p>"
            f"<form method='post'><button type='submit'>Unsubscribe</button></form>")

    @router.post("/{token}", response_class=HTMLResponse, summary="Unsubscribe (one click, RFC 8058)")
    async def unsubscribe_now(token: str = Path(max_length=1000),
                              session: AsyncSession = Depends(db_session)) -> HTMLResponse:
        granted = grant(token)
        await repository.add_opt_out(session, granted.tenant_id, granted.email)
        return HTMLResponse(f"<!doctype html><title>Unsubscribed</title>"
                            f"<p>{html.escape(granted.email)} will get no more payment reminders.</p>")

    return router

