"""The per-invoice state machine: context rules decide between sending, skipping and waiting."""
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from payloop_collections.planner import (
    LOOK_AGAIN_WITHIN, ClientContext, OpenInvoice, autopay_eligible, next_plan_at, plan_client, plan_invoice,
)
from payloop_collections.policy import Policy

ZONE = ZoneInfo("UTC")
DUE = date(2026, 3, 4)  # Wednesday
POLICY = Policy(business_days=False)


def at(days: int, hour: int = 10) -> datetime:
    return datetime(2026, 3, 4, hour, tzinfo=UTC) + timedelta(days=days)


def invoice(**kw) -> OpenInvoice:
    return OpenInvoice(**{"invoice_id": "i1", "number": "1", "due_on": DUE, "balance_minor": 100,
                          "currency": "USD", **kw})


def decide(inv=None, context=ClientContext(), decided=frozenset(), now=at(0), **kw):
    return plan_invoice(inv or invoice(), context, POLICY, set(decided), now, ZONE, **kw)


def test_the_newest_due_step_is_sent_and_older_ones_superseded():
    decisions, _ = decide(now=at(8))
    assert [(d.key, d.outcome) for d in decisions] == [
        ("step0", "superseded"), ("step1", "superseded"), ("step2", "superseded"), ("step3", "send")]
    decisions, why = decide(now=at(8), decided={"step0", "step1", "step2", "step3"})
    assert decisions == [] and why == "not_due"


def test_nothing_before_the_first_step_or_for_a_paid_invoice():
    assert decide(now=at(-4)) == ([], "not_due")
    assert decide(invoice(balance_minor=0), now=at(3)) == ([], "paid")


def test_disputes_promises_pauses_and_payments_in_flight_wait():
    assert decide(invoice(disputed=True), now=at(3))[1] == "dispute"
    assert decide(invoice(payment_in_flight=True), now=at(3))[1] == "payment_in_flight"
    assert decide(context=ClientContext(promised_invoice_ids=frozenset({"i1"})), now=at(3))[1] == "promise"
    assert decide(context=ClientContext(promise_covers_all=True), now=at(3))[1] == "promise"
    assert decide(context=ClientContext(paused=True), now=at(3))[1] == "manual"
    until = ClientContext(paused=True, paused_until=DUE + timedelta(days=2))
    assert decide(context=until, now=at(2))[1] == "manual"
    assert decide(context=until, now=at(3))[0][-1].outcome == "send"  # resumes after the date


def test_autopay_skips_dunning_with_one_courtesy_notice_before_the_charge():
    enrolled = ClientContext(autopay_enrolled=True)
    first, _ = decide(context=enrolled, now=at(-3))
    assert [(d.key, d.outcome) for d in first] == [("step0", "courtesy")]
    later, _ = decide(context=enrolled, now=at(3), decided={"step0"})
    assert [(d.key, d.outcome, d.reason) for d in later] == [
        ("step1", "superseded", "step2 is due"), ("step2", "skip", "autopay_scheduled")]
    # No courtesy when the policy does not ask for it.
    quiet = plan_invoice(invoice(), enrolled, Policy(business_days=False, autopay_courtesy=False), set(), at(-3), ZONE)
    assert quiet[0][-1].outcome == "skip"
    # A final auto-pay failure hands the invoice back to dunning.
    failed, _ = decide(invoice(autopay_failed=True), context=enrolled, now=at(3), decided={"step0"})
    assert failed[-1].outcome == "send"


def test_installment_plan_skips_the_steps():
    decisions, _ = decide(invoice(installment_plan=True), now=at(3))
    assert decisions[-1].outcome == "skip" and decisions[-1].reason == "installment_plan"


def test_a_scheduled_retry_gets_one_notice_and_dunning_waits_for_its_outcome():
    retry_at = at(2, hour=15)
    failed = invoice(retry_at=retry_at, retry_attempt=1)
    decisions, _ = decide(failed, now=at(1))
    assert [(d.key, d.outcome, d.retry_at) for d in decisions] == [("retry1", "retry_notice", retry_at)]
    assert decide(failed, now=at(2), decided={"retry1"}) == ([], "autopay_retry_scheduled")
    # After the retry time has passed without a success, dunning continues with the newest due step.
    after, _ = decide(failed, now=at(3), decided={"retry1", "step0"})
    assert after[-1].key == "step2" and after[-1].outcome == "send"


def test_handoff_steps_escalate_to_a_person():
    decisions, _ = decide(now=at(31), decided={f"step{i}" for i in range(5)})
    assert [(d.key, d.outcome, d.level) for d in decisions] == [("step5", "escalate", "handoff")]


def test_drifting_client_gets_the_firmer_step_earlier():
    decisions, _ = decide(context=ClientContext(drifting=True), now=at(1), decided={"step0", "step1"})
    assert [(d.key, d.outcome, d.offset_days, d.level) for d in decisions] == [("step2", "send", 1, "final")]
    assert decide(now=at(1), decided={"step0", "step1"})[1] == "not_due"


def test_force_sends_the_next_step_early_and_the_client_waits_outside_sending_hours():
    decisions, _ = decide(now=at(-10), force=True)
    assert [(d.key, d.outcome) for d in decisions] == [("step0", "send")]
    plan = plan_client([invoice()], ClientContext(), Policy(), {}, at(3, hour=21), ZONE)
    assert plan.decisions == [] and plan.waiting == {"i1": "outside_sending_hours"}


def test_autopay_covers_only_invoices_within_its_rule():
    rule = {"rule": "on_due", "cap_minor": 50_000, "excluded_kinds": ["product"]}
    assert autopay_eligible(rule, {"recurring"}, 50_000)
    assert not autopay_eligible(rule, {"recurring"}, 50_001)
    assert not autopay_eligible(rule, {"recurring", "product"}, 100)
    assert autopay_eligible(None, {"product"}, 10**9)
    # Outside the rule, an enrolled client's invoice is chased like any other.
    decisions, _ = decide(invoice(autopay_eligible=False), context=ClientContext(autopay_enrolled=True), now=at(0))
    assert decisions[-1].outcome == "send"


def look(inv=None, decided=frozenset(), now=at(0), context=ClientContext(), policy=POLICY):
    return next_plan_at(inv or invoice(), context, policy, set(decided), now, ZONE)


def test_an_invoice_is_planned_again_when_time_alone_may_change_its_plan():
    # Its next step (+3 days, at a send hour of midnight), when that comes before the safety net.
    always = Policy(business_days=False, send_hour=0, quiet_start_hour=0, quiet_end_hour=0)
    assert look(decided={"step0", "step1"}, now=at(3, hour=0) - timedelta(minutes=20), policy=always) == at(3, hour=0)
    # The end of an auto-pay retry's wait.
    retry = at(0, hour=10) + timedelta(minutes=20)
    assert look(invoice(retry_at=retry, retry_attempt=1), decided={"step0", "step1", "retry1"}) == retry
    # Outside the sending hours: the next hour, when sending may be allowed again.
    assert look(decided={"step0", "step1"}, now=at(0, hour=21) + timedelta(minutes=40)) == at(0, hour=22)
    # A paid invoice only when its data changes; anything else within the safety net, never now.
    assert look(invoice(balance_minor=0)).year == 9999
    for now in (at(-10), at(0), at(40)):
        assert now < look(decided={"step0", "step1", "step2", "step3", "step4", "step5"}, now=now) \
            <= now + LOOK_AGAIN_WITHIN
