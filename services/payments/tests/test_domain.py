"""Pure rules: allocation conserves every cent; retries obey Nacha and the card networks."""
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given, settings, strategies as st

from payloop_payments.domain.allocation import (
    Allocation, AllocationError, OpenInvoice, allocate, apply_credit, split_installments, split_refund,
)
from payloop_payments.domain.retry_policy import (
    Failure, Outcome, PastAttempt, RetryPolicy, decide,
)

T0 = datetime(2026, 1, 5, 14, tzinfo=UTC)
invoices_st = st.lists(st.integers(min_value=1, max_value=10**9), min_size=0, max_size=8).map(
    lambda amounts: [OpenInvoice(f"i{n}", date(2026, 1, 1) + timedelta(days=n % 5), a) for n, a in enumerate(amounts)])


@settings(max_examples=300, deadline=None)
@given(amount=st.integers(min_value=1, max_value=10**10), invoices=invoices_st)
def test_allocation_never_creates_or_loses_a_cent(amount, invoices):
    result = allocate(amount, invoices)
    assert result.allocated_minor + result.credit_minor == amount
    open_by_id = {i.invoice_id: i.open_minor for i in invoices}
    assert all(0 < a.amount_minor <= open_by_id[a.invoice_id] for a in result.allocations)
    # Credit only when every invoice is fully paid.
    if result.credit_minor:
        assert result.allocated_minor == sum(open_by_id.values())


@settings(max_examples=300, deadline=None)
@given(invoices=invoices_st.filter(bool), data=st.data())
def test_refunds_return_exactly_what_was_paid(invoices, data):
    amount = data.draw(st.integers(min_value=1, max_value=2 * sum(i.open_minor for i in invoices)))
    result = allocate(amount, invoices)
    refunds = data.draw(st.lists(st.integers(min_value=1, max_value=amount), max_size=5))
    credit, allocations = result.credit_minor, list(result.allocations)
    returned = 0
    for refund in refunds:
        paid = credit + sum(a.amount_minor for a in allocations)
        if refund > paid:
            with pytest.raises(AllocationError):
                split_refund(refund, allocations, credit)
            continue
        from_credit, reversals = split_refund(refund, allocations, credit)
        assert from_credit + sum(r.amount_minor for r in reversals) == refund
        credit -= from_credit
        left = {a.invoice_id: a.amount_minor for a in allocations}
        for r in reversals:
            left[r.invoice_id] -= r.amount_minor
            assert left[r.invoice_id] >= 0
        allocations = [Allocation(k, v) for k, v in left.items() if v > 0]
        returned += refund
    assert credit + sum(a.amount_minor for a in allocations) + returned == amount


@given(credit=st.integers(min_value=0, max_value=10**9), charge=st.integers(min_value=0, max_value=10**9))
def test_credit_reduces_a_charge_exactly(credit, charge):
    used, rest = apply_credit(credit, charge)
    assert used + rest == charge and 0 <= used <= credit


@given(balance=st.integers(min_value=12, max_value=10**9), parts=st.integers(min_value=1, max_value=12))
def test_installments_sum_to_the_balance(balance, parts):
    amounts = split_installments(balance, parts)
    assert sum(amounts) == balance and max(amounts) - min(amounts) <= 1


def test_explicit_allocation_respects_open_balances():
    invoices = [OpenInvoice("a", date(2026, 1, 1), 500), OpenInvoice("b", date(2026, 2, 1), 700)]
    result = allocate(1_000, invoices, {"b": 700, "a": 200})
    assert result.credit_minor == 100
    with pytest.raises(AllocationError):
        allocate(1_000, invoices, {"a": 600})
    with pytest.raises(AllocationError):
        allocate(100, invoices, {"a": 200})


def failure(code, *, method="card", brand="visa", at=T0, client=False, first=None, payment="p1", retry=False):
    return Failure(at=at, payment_id=payment, method_type=method, decline_code=code, client_initiated=client,
                   card_brand=brand, first_attempt_at=first or at, is_retry=retry)


def test_soft_card_decline_follows_the_default_schedule():
    decision = decide(failure("insufficient_funds"), [])
    assert decision.outcome is Outcome.RETRY and decision.next_attempt_at == T0 + timedelta(days=1)
    history = [PastAttempt(T0, "p1", False, False, "insufficient_funds")]
    second = decide(failure("insufficient_funds", at=T0 + timedelta(days=1), first=T0, retry=True), history)
    assert second.next_attempt_at == T0 + timedelta(days=3)
    three_retries = history + [PastAttempt(T0 + timedelta(days=d), "p1", False, True, "insufficient_funds")
                               for d in (1, 3, 5)]
    fourth = failure("insufficient_funds", at=T0 + timedelta(days=7), first=T0, retry=True)
    assert decide(fourth, three_retries).outcome is Outcome.STOP


@pytest.mark.parametrize("code", ["stolen_card", "lost_card", "pickup_card", "fraudulent", "expired_card"])
def test_hard_card_declines_are_never_retried(code):
    decision = decide(failure(code), [])
    assert decision.outcome is Outcome.UPDATE_METHOD and decision.next_attempt_at is None


def test_do_not_honor_becomes_hard_after_n():
    policy = RetryPolicy(do_not_honor_max=2)
    assert decide(failure("do_not_honor"), [], policy).outcome is Outcome.RETRY
    earlier = [PastAttempt(T0 - timedelta(days=1), "p1", False, False, "do_not_honor")]
    assert decide(failure("do_not_honor", first=T0 - timedelta(days=1)), earlier, policy).outcome is Outcome.UPDATE_METHOD


def test_visa_cap_of_15_retries_in_30_days_pushes_or_stops():
    # 15 merchant retries on this card in the last 30 days (other payments).
    history = [PastAttempt(T0 - timedelta(days=20) + timedelta(hours=h), f"old{h}", False, True, "insufficient_funds")
               for h in range(15)]
    decision = decide(failure("insufficient_funds"), history)
    assert decision.outcome is Outcome.RETRY
    assert decision.next_attempt_at > T0 - timedelta(days=20) + timedelta(days=30)
    in_window = [a for a in history if decision.next_attempt_at - timedelta(days=30) < a.at <= decision.next_attempt_at]
    assert len(in_window) < 15
    # Client-initiated attempts do not count against the budget.
    theirs = [PastAttempt(T0 - timedelta(hours=h), f"c{h}", True, True, "insufficient_funds") for h in range(1, 40)]
    assert decide(failure("insufficient_funds"), theirs).next_attempt_at == T0 + timedelta(days=1)


def test_mastercard_never_more_than_10_attempts_in_24_hours():
    schedule = RetryPolicy(schedule_days=(0,))
    history = [PastAttempt(T0 - timedelta(hours=20) + timedelta(minutes=m), f"x{m}", False, False, "insufficient_funds")
               for m in range(9)]
    decision = decide(failure("insufficient_funds", brand="mastercard"), history, schedule)
    window = [a.at for a in history] + [T0]
    assert len([t for t in window if decision.next_attempt_at - timedelta(hours=24) < t <= decision.next_attempt_at]) < 10
    visa = decide(failure("insufficient_funds", brand="visa"), history, schedule)
    assert visa.next_attempt_at < decision.next_attempt_at


def test_client_initiated_failures_are_not_retried():
    assert decide(failure("insufficient_funds", client=True), []).outcome is Outcome.STOP


def test_ach_r01_r09_re_presented_at_most_twice_in_180_days():
    assert decide(failure("R01", method="ach"), []).outcome is Outcome.RETRY
    assert decide(failure("insufficient_funds", method="ach"), []).outcome is Outcome.RETRY  # Stripe's name for R01
    once = [PastAttempt(T0, "p1", False, False, "R01")]
    first_retry = failure("R01", method="ach", at=T0 + timedelta(days=1), first=T0, retry=True)
    assert decide(first_retry, once).outcome is Outcome.RETRY
    once_more = once + [PastAttempt(T0 + timedelta(days=1), "p1", False, True, "R01")]
    second_retry = failure("R09", method="ach", at=T0 + timedelta(days=3), first=T0, retry=True)
    assert decide(second_retry, once_more).outcome is Outcome.STOP
    late = decide(failure("R01", method="ach", at=T0 + timedelta(days=200), first=T0), [])
    assert late.outcome is Outcome.STOP


@pytest.mark.parametrize("code", ["R02", "R03", "R04", "account_closed", "no_account", "invalid_account_number"])
def test_ach_closed_or_invalid_accounts_are_unusable(code):
    assert decide(failure(code, method="ach"), []).outcome is Outcome.UPDATE_METHOD


@pytest.mark.parametrize("code", ["R07", "R08", "R10", "R29", "debit_not_authorized"])
def test_ach_unauthorized_revokes_the_authorization(code):
    assert decide(failure(code, method="ach"), []).outcome is Outcome.REVOKE_AUTHORIZATION


def test_tenant_policy_from_settings():
    policy = RetryPolicy.from_settings({"payment_retry": {"schedule_days": [2, 4]}})
    assert policy.schedule_days == (2, 4)
    assert decide(failure("processing_error"), [], policy).next_attempt_at == T0 + timedelta(days=2)
