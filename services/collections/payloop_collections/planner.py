"""What a client's collection sequence asks for at a given instant: one state machine per invoice.

Pure: given the client's context (auto-pay, pauses, promises, drift), its open invoices and the steps
already decided, `plan_client` returns the decisions to record now. Each decision has a key unique per
invoice (`step2`, `retry3`, `courtesy`), and the database refuses a second row with the same key, so
a step is decided exactly once whatever the number of workers.

Order of the rules, for each open invoice:
1. a payment in flight, an open billing dispute, a pending promise or a manual pause: wait;
2. a failed auto-pay with a retry scheduled: one retry notice per attempt, and the dunning steps
   wait for the retry's outcome (a final failure hands the invoice back to dunning);
3. auto-pay scheduled or an installment plan current: the steps are skipped (with a courtesy
   notice instead of the first one, if the policy asks);
4. otherwise the newest due step is sent (older undecided ones are superseded), and a hand-off
   step creates a task for a person instead of an email.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from payloop_collections.policy import Level, Policy, may_send_at, step_send_at, steps_for

Outcome = Literal["send", "courtesy", "retry_notice", "escalate", "skip", "superseded"]
SENDING: frozenset[str] = frozenset({"send", "courtesy", "retry_notice"})


@dataclass(frozen=True)
class OpenInvoice:
    invoice_id: str
    number: str
    due_on: date
    balance_minor: int
    currency: str
    disputed: bool = False
    installment_plan: bool = False
    payment_in_flight: bool = False
    retry_at: datetime | None = None
    retry_attempt: int | None = None
    autopay_failed: bool = False  # the last auto-pay attempt failed with no retry left
    autopay_eligible: bool = True  # within the enrolment's cap and without excluded line kinds


@dataclass(frozen=True)
class ClientContext:
    autopay_enrolled: bool = False
    drifting: bool = False
    paused: bool = False
    paused_until: date | None = None
    # Invoice ids covered by pending promises, and whether a promise covers the whole balance.
    promised_invoice_ids: frozenset[str] = frozenset()
    promise_covers_all: bool = False


@dataclass(frozen=True)
class Decision:
    invoice_id: str
    key: str
    outcome: Outcome
    offset_days: int
    level: Level
    reason: str | None = None
    retry_at: datetime | None = None


@dataclass
class ClientPlan:
    decisions: list[Decision] = field(default_factory=list)
    waiting: dict[str, str] = field(default_factory=dict)  # invoice id -> why nothing happens now

    @property
    def sends(self) -> list[Decision]:
        return [d for d in self.decisions if d.outcome in SENDING]


def autopay_eligible(rule: dict[str, Any] | None, line_kinds: set[str], balance_minor: int) -> bool:
    """Whether auto-pay will charge this invoice (`autopay.changed` rule: `cap_minor`, `excluded_kinds`).

    Above the cap, or with an excluded kind of line, the client pays by hand and is chased as usual.
    """
    rule = rule or {}
    if line_kinds & set(rule.get("excluded_kinds") or []):
        return False
    cap = rule.get("cap_minor")
    return cap is None or balance_minor <= cap


def _step_index(key: str) -> int | None:
    return int(key[4:]) if key.startswith("step") and key[4:].isdigit() else None


def _last_step(decided: set[str]) -> int:
    done = [i for i in (_step_index(k) for k in decided) if i is not None]
    return max(done) if done else -1


def pause_reason(invoice: OpenInvoice, context: ClientContext, today: date) -> str | None:
    if invoice.payment_in_flight:
        return "payment_in_flight"
    if invoice.disputed:
        return "dispute"
    if context.promise_covers_all or invoice.invoice_id in context.promised_invoice_ids:
        return "promise"
    if context.paused and (context.paused_until is None or today <= context.paused_until):
        return "manual"
    return None


def plan_invoice(invoice: OpenInvoice, context: ClientContext, policy: Policy, decided: set[str],
                 now: datetime, zone: ZoneInfo, *, force: bool = False,
                 holidays: frozenset[date] = frozenset()) -> tuple[list[Decision], str | None]:
    """Decisions for one invoice now, or why it waits."""
    local = now.astimezone(zone)
    if invoice.balance_minor <= 0:
        return [], "paid"
    reason = pause_reason(invoice, context, local.date())
    if reason:
        return [], reason
    steps = steps_for(policy, drifting=context.drifting)
    if invoice.retry_at is not None and invoice.retry_at > now:
        key = f"retry{invoice.retry_attempt or 1}"
        if key in decided:
            return [], "autopay_retry_scheduled"
        return [Decision(invoice.invoice_id, key, "retry_notice", (local.date() - invoice.due_on).days,
                         "friendly", retry_at=invoice.retry_at)], None

    after = _last_step(decided)
    if force:
        due = [i for i in range(len(steps)) if i > after][:1]
    else:
        due = [i for i, step in enumerate(steps)
               if i > after and step_send_at(invoice.due_on, step, policy, zone, holidays) <= local]
    if not due:
        return [], "not_due"
    newest = due[-1]
    step = steps[newest]
    decisions = [Decision(invoice.invoice_id, f"step{i}", "superseded", steps[i].offset_days, steps[i].level,
                          reason=f"step{newest} is due") for i in due[:-1]]
    key = f"step{newest}"
    autopay_covers = context.autopay_enrolled and invoice.autopay_eligible and not invoice.autopay_failed
    if autopay_covers or (invoice.installment_plan and not invoice.autopay_failed):
        why = "autopay_scheduled" if autopay_covers else "installment_plan"
        # One courtesy notice, before the charge: the first step decided, if it is not past due.
        if policy.autopay_courtesy and autopay_covers and after == -1 and step.offset_days <= 0:
            decisions.append(Decision(invoice.invoice_id, key, "courtesy", step.offset_days, "courtesy", reason=why))
        else:
            decisions.append(Decision(invoice.invoice_id, key, "skip", step.offset_days, step.level, reason=why))
        return decisions, None
    outcome: Outcome = "escalate" if step.level == "handoff" else "send"
    decisions.append(Decision(invoice.invoice_id, key, outcome, step.offset_days, step.level))
    return decisions, None


def plan_client(invoices: list[OpenInvoice], context: ClientContext, policy: Policy,
                decided: dict[str, set[str]], now: datetime, zone: ZoneInfo, *, force: bool = False,
                holidays: frozenset[date] = frozenset()) -> ClientPlan:
    """Every invoice's decisions now; nothing at all outside the policy's sending hours (unless forced)."""
    plan = ClientPlan()
    if not force and not may_send_at(now.astimezone(zone), policy, holidays):
        plan.waiting = {i.invoice_id: "outside_sending_hours" for i in invoices}
        return plan
    for invoice in invoices:
        decisions, waiting = plan_invoice(invoice, context, policy, decided.get(invoice.invoice_id, set()),
                                          now, zone, force=force, holidays=holidays)
        plan.decisions.extend(decisions)
        if waiting:
            plan.waiting[invoice.invoice_id] = waiting
    return plan


# A safety net, not the mechanism: a change to an invoice's data has it planned at once, and time is
# watched below; what ends a wait by time alone without a write (a payment in flight for too long, a
# pause or promise whose date passed) is seen within this long. Spread over its second half per
# invoice, so invoices planned in one tick do not all come back in one tick.
LOOK_AGAIN_WITHIN = timedelta(hours=1)


def next_plan_at(invoice: OpenInvoice, context: ClientContext, policy: Policy, decided: set[str],
                 now: datetime, zone: ZoneInfo, holidays: frozenset[date] = frozenset()) -> datetime:
    """For an invoice with nothing to decide now: the next instant at which time alone may give it
    something to decide (its next step, the end of a retry's wait, the next hour while sending is not
    allowed), and never later than `LOOK_AGAIN_WITHIN`. Always after `now`."""
    if invoice.balance_minor <= 0:
        return datetime.max.replace(tzinfo=now.tzinfo)  # paid: only a change to its data matters
    spread = (zlib.crc32(invoice.invoice_id.encode()) % 1024) / 2048
    candidates = [now + LOOK_AGAIN_WITHIN * (0.5 + spread)]
    local = now.astimezone(zone)
    if not may_send_at(local, policy, holidays):
        candidates.append(local.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1))
    if invoice.retry_at is not None and invoice.retry_at > now:
        candidates.append(invoice.retry_at)
    for step in steps_for(policy, drifting=context.drifting)[_last_step(decided) + 1:]:
        at = step_send_at(invoice.due_on, step, policy, zone, holidays)
        if at > local:
            candidates.append(at)
            break
    return min(candidates)


def message_level(decisions: list[Decision]) -> Level:
    """The firmest level among the items of one consolidated email."""
    order = ("courtesy", "friendly", "firm", "final", "handoff")
    return max((d.level for d in decisions), key=order.index)
