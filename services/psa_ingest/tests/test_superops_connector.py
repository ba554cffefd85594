"""What only SuperOps does: errors inside a 200 GraphQL answer, the subdomain header, one payment per invoice."""
from datetime import date
from decimal import Decimal

import pytest
import pytest_asyncio

from payloop.embedded import free_port
from payloop.simulators import superops
from payloop_psa_ingest.connectors.base import PsaAuthError, PsaRequestError, PsaRetryableError
from payloop_psa_ingest.connectors.superops import SuperOpsConnector


@pytest_asyncio.fixture
async def sim():
    simulator = superops.SuperOpsSimulator()
    await simulator.start(free_port())
    try:
        yield simulator
    finally:
        await simulator.stop()


def connector(sim, **credentials) -> SuperOpsConnector:
    return SuperOpsConnector(sim.api_url, {"api_token": superops.API_TOKEN, "subdomain": superops.SUBDOMAIN,
                                           **credentials}, {"backoff_initial_s": 0.01, "max_attempts": 3})


async def test_a_rate_limit_inside_a_200_answer_is_retried_and_account_errors_stop(sim):
    so = connector(sim)
    try:
        sim.fail_next(path_contains=":getClientList", graphql_code="rate_limit_exceeded")
        assert (await so.check())["clients"] == len(sim.state.clients)
        assert [r["operation"] for r in sim.requests] == ["getClientList", "getClientList"]

        sim.fail_next(path_contains=":getClientList", graphql_code="forbidden")
        with pytest.raises(PsaAuthError, match="forbidden"):
            await so.check()
        assert len(sim.requests) == 3, "an access error is not retried"

        sim.requests_per_minute = 0  # the documented 800 a minute, reached and staying so
        with pytest.raises(PsaRetryableError, match="rate_limit_exceeded"):
            await so.check()
        assert len(sim.requests) == 3 + 3, "retried with backoff until the attempts ran out"
    finally:
        await so.aclose()


async def test_an_unknown_subdomain_is_a_credentials_error_naming_the_subdomain(sim):
    so = connector(sim, subdomain="someone-else")
    try:
        with pytest.raises(PsaAuthError, match="subdomain"):
            await so.check()
        assert len(sim.requests) == 1
    finally:
        await so.aclose()


async def test_only_whole_payments_and_whole_refunds_are_written_and_each_once(sim):
    invoice = next(i for i in sim.state.invoices.values() if i["statusEnum"] in ("APPROVED", "OVERDUE")
                   and Decimal(i["totalAmount"]) > 0)
    total = int(Decimal(invoice["totalAmount"]) * 100)
    so = connector(sim)
    try:
        with pytest.raises(PsaRequestError, match="whole total"):
            await so.record_payment(invoice["invoiceId"], amount_minor=total - 1, currency="USD",
                                    paid_on=date(2026, 1, 5), reference="payloop:part")
        assert invoice["statusEnum"] != "PAID"

        paid = await so.record_payment(invoice["invoiceId"], amount_minor=total, currency="USD",
                                       paid_on=date(2026, 1, 5), reference="payloop:pay")
        again = await so.record_payment(invoice["invoiceId"], amount_minor=total, currency="USD",
                                        paid_on=date(2026, 1, 5), reference="payloop:pay")
        assert (paid.already_present, again.already_present) == (False, True)
        assert (invoice["statusEnum"], invoice["paymentDate"], invoice["paymentReference"]) == \
            ("PAID", "2026-01-05", "payloop:pay")

        refunded = await so.record_payment(invoice["invoiceId"], amount_minor=-total, currency="USD",
                                           paid_on=date(2026, 1, 9), reference="payloop:refund")
        assert not refunded.already_present
        assert (invoice["statusEnum"], invoice["paymentReference"]) == ("APPROVED", "payloop:refund")
        updates = [r for r in sim.requests if r["operation"] == "updateInvoice"]
        assert len(updates) == 2
    finally:
        await so.aclose()
