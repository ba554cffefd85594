"""The internal journal: every entry balances, ids derive from (event, purpose), bad events are refused."""
import uuid
from datetime import date

import pytest

from payloop_gl_posting import journal

EVENT = uuid.UUID("01890000-0000-7000-8000-000000000001")


def test_payment_with_overpayment_balances_and_keeps_the_excess_as_client_credit():
    entry = journal.payment_settled(tenant_id="t", source_event_id=EVENT, payment_id="pay_1", amount_minor=35_000,
                                    currency="USD", occurred_on=date(2026, 3, 3),
                                    allocations=[{"invoice_id": "inv_1", "amount_minor": 30_000}])
    assert sum(line.amount_minor for line in entry.lines) == 0
    assert entry.amount("clearing") == 35_000
    assert entry.amount("receivable") == -30_000
    assert entry.amount("client_credit") == -5_000


def test_entry_id_and_reference_are_derived_from_event_and_purpose():
    first = journal.entry_id(EVENT, "payment")
    assert first == journal.entry_id(EVENT, "payment")
    assert first != journal.entry_id(EVENT, "deposit")
    entry = journal.payment_reversed("refund", tenant_id="t", source_event_id=EVENT, payment_id="pay_1",
                                     reversal_id="re_1", amount_minor=500, currency="USD", occurred_on=date(2026, 3, 3))
    assert entry.id == journal.entry_id(EVENT, "refund")
    assert len(entry.reference) <= 21  # QuickBooks DocNumber limit


def test_payout_clears_gross_puts_net_in_bank_and_fees_in_expense():
    items = [{"type": "charge", "payment_id": "p1", "gross_minor": 100_000, "fee_minor": 2_930, "net_minor": 97_070},
             {"type": "refund", "payment_id": "p2", "gross_minor": -20_000, "fee_minor": 0, "net_minor": -20_000},
             {"type": "dispute", "payment_id": "p3", "gross_minor": -45_000, "fee_minor": 1_500, "net_minor": -46_500}]
    entry = journal.payout_paid(tenant_id="t", source_event_id=EVENT, payout_id="po_1", amount_minor=30_570,
                                currency="USD", items=items, arrival_date=date(2026, 3, 5))
    assert entry.amount("bank") == 30_570
    assert entry.amount("fee_expense") == 4_430
    assert entry.amount("clearing") == -35_000
    assert sum(line.amount_minor for line in entry.lines) == 0


def test_processor_adjustments_go_to_fee_expense_not_clearing():
    items = [{"type": "charge", "payment_id": "p1", "gross_minor": 10_000, "fee_minor": 320, "net_minor": 9_680},
             {"type": "adjustment", "payment_id": None, "gross_minor": -500, "fee_minor": 0, "net_minor": -500}]
    entry = journal.payout_paid(tenant_id="t", source_event_id=EVENT, payout_id="po_2", amount_minor=9_180,
                                currency="USD", items=items, arrival_date=date(2026, 3, 5))
    assert entry.amount("clearing") == -10_000  # exactly what payment p1 put in
    assert entry.amount("fee_expense") == 820
    assert entry.details["fee_minor"] == 320 and entry.details["adjustment_minor"] == 500


def test_unbalanced_or_overallocated_events_are_refused():
    with pytest.raises(journal.UnbalancedEntry):
        journal.payment_settled(tenant_id="t", source_event_id=EVENT, payment_id="p", amount_minor=100,
                                currency="USD", occurred_on=date(2026, 3, 3),
                                allocations=[{"invoice_id": "i", "amount_minor": 101}])
    with pytest.raises(journal.UnbalancedEntry):
        journal.payout_paid(tenant_id="t", source_event_id=EVENT, payout_id="po", amount_minor=90, currency="USD",
                            arrival_date=date(2026, 3, 3),
                            items=[{"type": "charge", "payment_id": "p", "gross_minor": 100, "fee_minor": 5,
                                    "net_minor": 90}])
    with pytest.raises(journal.UnbalancedEntry):
        journal.JournalEntry(id=EVENT, tenant_id="t", source_event_id=EVENT, purpose="payment", subject_id="p",
                             currency="USD", occurred_on=date(2026, 3, 3),
                             lines=(journal.JournalLine("clearing", 100), journal.JournalLine("receivable", -99)))


def test_amounts_leave_as_exact_decimals():
    from decimal import Decimal

    from payloop_gl_posting.connectors.base import to_decimal
    assert to_decimal(123_456_789, "USD") == Decimal("1234567.89")
    assert to_decimal(5_000, "JPY") == Decimal("5000")


def test_a_won_dispute_returns_to_clearing_exactly_what_the_dispute_took_out():
    taken = journal.payment_reversed("dispute", tenant_id="t", source_event_id=EVENT, payment_id="pay_1",
                                     reversal_id="dp_1", amount_minor=45_000, currency="USD", occurred_on=date(2026, 3, 3))
    returned = journal.dispute_won(tenant_id="t", source_event_id=EVENT, payment_id="pay_1", dispute_id="dp_1",
                                   amount_minor=45_000, currency="USD", occurred_on=date(2026, 3, 9))
    assert sum(line.amount_minor for line in returned.lines) == 0
    for account in ("clearing", "refunds"):
        assert taken.amount(account) + returned.amount(account) == 0
    assert returned.id != taken.id and returned.purpose == "dispute_won"
    with pytest.raises(journal.UnbalancedEntry):
        journal.dispute_won(tenant_id="t", source_event_id=EVENT, payment_id="pay_1", dispute_id="dp_1",
                            amount_minor=0, currency="USD", occurred_on=date(2026, 3, 9))


def test_a_convenience_fee_puts_into_clearing_what_the_payout_grosses_beyond_the_payment():
    payment = journal.payment_settled(tenant_id="t", source_event_id=EVENT, payment_id="pay_1", amount_minor=100_000,
                                      currency="USD", occurred_on=date(2026, 3, 3),
                                      allocations=[{"invoice_id": "inv_1", "amount_minor": 100_000}])
    fee = journal.convenience_fee(tenant_id="t", source_event_id=EVENT, payment_id="pay_1", surcharge_minor=3_000,
                                  currency="USD", occurred_on=date(2026, 3, 3))
    payout = journal.payout_paid(tenant_id="t", source_event_id=EVENT, payout_id="po_1", amount_minor=99_983,
                                 currency="USD", arrival_date=date(2026, 3, 5),
                                 items=[{"type": "charge", "payment_id": "pay_1", "gross_minor": 103_000,
                                         "fee_minor": 3_017, "net_minor": 99_983}])
    assert fee.id == journal.entry_id(EVENT, "convenience_fee") != payment.id
    assert fee.amount("convenience_fee") == -3_000
    assert sum(entry.amount("clearing") for entry in (payment, fee, payout)) == 0
    with pytest.raises(journal.UnbalancedEntry):
        journal.convenience_fee(tenant_id="t", source_event_id=EVENT, payment_id="pay_1", surcharge_minor=0,
                                currency="USD", occurred_on=date(2026, 3, 3))
