"""A card convenience fee (`surcharge_minor`) in the journal: the MSP's income, and clearing back to zero.

Stripe charges the invoice amount plus the fee, so the payout's charge item grosses both: clearing must
have received both when the payment settled, or it cannot return to zero.
"""
import pytest
from gl_activity import apply, entries, surcharged_activity, surcharged_dispute, tenant

from payloop.testing.plugin import running_service
from payloop_gl_posting.service import SERVICE


async def test_a_surcharged_payment_and_its_payout_leave_clearing_at_zero(infra, token):
    t = tenant()
    headers = token(t, "admin")
    async with running_service(infra, SERVICE, consumers=False) as client:
        events = surcharged_activity(t)
        await apply(client, *events)
        await apply(client, events[1])  # the settlement told again: journaled once

        journal = await entries(client, headers)
        assert sorted(e["purpose"] for e in journal) == ["convenience_fee", "deposit", "payment", "refund"]
        fee = next(e for e in journal if e["purpose"] == "convenience_fee")
        assert fee["subject_id"] == "p1"
        assert {line["account"]: line["amount_minor"] for line in fee["lines"]} == \
            {"clearing": 3_000, "convenience_fee": -3_000}

        report = (await client.get("/v1/gl/reconciliation", headers=headers)).json()
        assert report["clearing_balance_minor"] == 0
        assert report["convenience_fees"] == {"count": 1, "amount_minor": 3_000, "posted_count": 0,
                                              "posted_amount_minor": 0}
        assert {m["kind"] for m in report["mismatches"]} == \
            {"payment_not_posted", "convenience_fee_not_posted", "refund_not_posted", "deposit_not_posted"}


@pytest.mark.parametrize("status", ["lost", "won"])
async def test_a_dispute_of_a_surcharged_payment_takes_the_fee_back_out_of_clearing_and_income(
        infra, token, status):
    """Stripe withdraws the whole charge, fee included; the dispute's entry takes the fee share out of
    clearing and back from the fee income (a won dispute returns both), so every payout clears to zero."""
    t = tenant()
    headers = token(t, "admin")
    async with running_service(infra, SERVICE, consumers=False) as client:
        events = surcharged_dispute(t, status)
        await apply(client, *events)
        await apply(client, events[4])  # the dispute told again: journaled once

        report = (await client.get("/v1/gl/reconciliation", headers=headers)).json()
        assert report["clearing_balance_minor"] == 0

        journal = await entries(client, headers)
        lines = {e["purpose"]: {line["account"]: line["amount_minor"] for line in e["lines"]} for e in journal}
        assert sorted(e["purpose"] for e in journal) == sorted(
            ["payment", "convenience_fee", "deposit", "dispute", "payment", "deposit"]
            + (["dispute_won", "deposit"] if status == "won" else []))
        assert lines["dispute"] == {"refunds": 100_000, "convenience_fee": 3_000, "clearing": -103_000}
        if status == "won":
            assert lines["dispute_won"] == {"refunds": -100_000, "convenience_fee": -3_000, "clearing": 103_000}
        income = sum(line.get("convenience_fee", 0) for line in lines.values())
        assert income == (-3_000 if status == "won" else 0)  # credit: income kept only when the dispute is won

