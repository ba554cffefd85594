"""The known book of test_metrics.py, told as the events the other services would publish.

Tenant `TENANT` lives in America/New_York; instants are 15:00Z (10:00 there) unless a test needs a
date that differs between UTC and New York (I8's payment settles at 22:00 New York on Feb 25,
already Feb 26 in UTC).
"""
from __future__ import annotations

import json
import uuid
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import text

from payloop.events import new_event
from payloop.events.catalogue import CATALOGUE
from payloop.events.envelope import Envelope

from payloop_reporting.handlers import HANDLERS
from payloop_reporting.read_models import READ_MODEL_TABLES

AS_OF = date(2026, 3, 31)


def at(day: str, hour: int = 15) -> datetime:
    return datetime.fromisoformat(day).replace(hour=hour, tzinfo=UTC)


class Book:
    at = staticmethod(at)

    def __init__(self, tenant: str):
        self.tenant = tenant
        self.events: list[Envelope] = []

    def add(self, type_: str, occurred_at: datetime, data: dict, client: str | None = None) -> Envelope:
        producer = CATALOGUE.current(type_).producer
        event = new_event(type_, tenant_id=self.tenant, client_id=client, data=data, producer=producer,
                          occurred_at=occurred_at)
        self.events.append(event)
        return event

    def invoice(self, invoice_id: str, client: str, total: int, issued: str, due: str, *, type_="invoice.created",
                status="open", balance: int | None = None, occurred_at: datetime | None = None,
                paid_on: str | None = None) -> Envelope:
        data = {"invoice_id": invoice_id, "psa": {"source": "connectwise", "external_id": invoice_id},
                "number": f"INV-{invoice_id}", "agreement": {"id": f"AG-{client}", "kind": "managed_services",
                                                             "name": "Managed services"},
                "currency": "USD", "issued_on": issued, "due_on": due, "terms": "Net 30", "status": status,
                "subtotal_minor": total, "tax_minor": 0, "total_minor": total,
                "balance_minor": total if balance is None else balance,
                "lines": [{"kind": "recurring", "description": "Managed services", "quantity": "1",
                           "unit_price_minor": total, "amount_minor": total}]}
        if paid_on:
            data["paid_on"] = paid_on
        if type_ == "invoice.updated":
            data["changes"] = {"balance_minor": {"from": total, "to": balance}}
        return self.add(type_, occurred_at or at(issued), data, client)

    def payment(self, type_: str, payment_id: str, client: str, allocations: list[tuple[str, int]],
                occurred_at: datetime, **extra) -> Envelope:
        data = {"payment_id": payment_id, "method": {"type": "card", "brand": "visa", "last4": "4242"},
                "amount_minor": sum(a for _, a in allocations), "currency": "USD", "fee_minor": 30,
                "allocations": [{"invoice_id": i, "amount_minor": a} for i, a in allocations],
                "processor": {"name": "stripe", "payment_intent_id": f"pi_{payment_id}"}, **extra}
        return self.add(type_, occurred_at, data, client)


def blank(tenant: str) -> Book:
    b = Book(tenant)
    b.add("tenant.updated", at("2025-09-01"), {"tenant_id": tenant, "name": "Book MSP",
                                               "timezone": "America/New_York", "currency": "USD",
                                               "branding": {"primary_color": "#0b5394"}})
    return b


def build_book(tenant: str) -> Book:
    b = blank(tenant)
    for client, name in (("A", "Acme Dental"), ("B", "Bright Law"), ("C", "Cobalt Freight")):
        b.add("client.upserted", at("2025-09-02"), {"client_id": client, "name": name, "terms": "Net 30",
                                                    "psa": {"source": "connectwise", "external_id": client},
                                                    "billing_emails": [f"ap@{client.lower()}.example"]}, client)
    b.add("agreement.upserted", at("2025-09-03"), {"agreement_id": "AG-A", "client_id": "A", "kind": "managed_services",
                                                   "name": "Managed services", "billing_cycle": "monthly",
                                                   "psa": {"source": "connectwise", "external_id": "AG-A"},
                                                   "lines": []}, "A")
    b.invoice("I0", "A", 8_000, "2025-11-01", "2025-11-30")
    # A cheque recorded in the PSA: we only see the PSA's balance drop.
    b.invoice("I0", "A", 8_000, "2025-11-01", "2025-11-30", type_="invoice.updated", status="paid", balance=0,
              occurred_at=at("2025-11-21"))
    b.invoice("I1", "A", 10_000, "2025-12-01", "2025-12-31")
    b.invoice("I2", "A", 50_000, "2026-01-15", "2026-02-14")
    b.invoice("I3", "B", 30_000, "2026-03-01", "2026-03-31")
    b.invoice("I4", "B", 20_000, "2026-02-01", "2026-03-01")
    b.invoice("I5", "C", 40_000, "2025-10-01", "2025-10-31")
    b.invoice("I6", "C", 10_000, "2026-01-05", "2026-01-20")
    b.invoice("I7", "C", 25_000, "2026-02-10", "2026-03-12")
    b.invoice("I8", "A", 12_000, "2026-02-20", "2026-03-01")
    b.payment("payment.settled", "P1", "A", [("I1", 10_000)], at("2026-01-10"), settled_at=at("2026-01-10").isoformat())
    b.payment("payment.initiated", "P2", "A", [("I2", 20_000)], at("2026-02-01", 14), origin="autopay")
    b.payment("payment.settled", "P2", "A", [("I2", 20_000)], at("2026-02-01"))
    # The PSA hears of P2: its balance now includes it, which must not count twice.
    b.invoice("I2", "A", 50_000, "2026-01-15", "2026-02-14", type_="invoice.updated", status="partially_paid",
              balance=30_000, occurred_at=at("2026-02-03"))
    b.add("psa.payment_recorded", at("2026-02-03", 14), {"payment_id": "P2", "invoice_id": "I2", "amount_minor": 20_000,
                                                        "currency": "USD",
                                                        "psa": {"source": "connectwise", "external_id": "pay-2"}}, "A")
    b.add("credit_memo.created", at("2026-02-10"), {"credit_memo_id": "CM1", "number": "CM-1", "currency": "USD",
                                                    "issued_on": "2026-02-10", "total_minor": 5_000,
                                                    "psa": {"source": "connectwise", "external_id": "CM1"},
                                                    "applied_to": [{"invoice_id": "I4", "amount_minor": 5_000}]}, "B")
    b.payment("payment.settled", "P6", "C", [("I6", 10_000)], at("2026-01-18"))
    b.payment("payment.refunded", "P6", "C", [("I6", 10_000)], at("2026-02-05"), refund_id="R6",
              refunded_minor=10_000, reason="requested_by_customer")
    b.add("invoice.voided", at("2026-02-20"), {"invoice_id": "I7", "number": "INV-I7",
                                               "psa": {"source": "connectwise", "external_id": "I7"},
                                               "voided_at": at("2026-02-20").isoformat()}, "C")
    b.payment("payment.settled", "P8", "A", [("I8", 12_000)], datetime(2026, 2, 26, 3, tzinfo=UTC),
              settled_at=datetime(2026, 2, 26, 3, tzinfo=UTC).isoformat())
    for client, day, enrolled in (("A", "2026-01-01", True), ("B", "2026-02-01", True), ("B", "2026-03-15", False),
                                  ("C", "2026-04-05", True)):
        b.add("autopay.changed", at(day), {"enrolled": enrolled, "payment_method_id": f"pm_{client}",
                                           "rule": {"charge": "on_due_date"}}, client)
    b.add("payment_method.updated", at("2026-01-01", 14), {"payment_method_id": "pm_A", "status": "active",
                                                          "method": {"type": "card", "brand": "visa", "last4": "4242"}},
          "A")
    b.payment("payment.failed", "P5", "C", [("I5", 40_000)], at("2026-03-20"), attempt=1, decline_code="insufficient_funds",
              retryable=True, next_attempt_at=at("2026-03-23").isoformat())
    b.add("reminder.sent", at("2026-03-01"), {"invoice_ids": ["I5"], "step": 120, "level": "final", "channel": "email",
                                              "to": ["ap@c.example"], "template": "final"}, "C")
    b.add("collection.escalated", at("2026-03-05"), {"case_id": "CASE-C", "level": "handoff", "invoice_ids": ["I5"]}, "C")
    b.add("reminder.sent", at("2026-03-21"), {"invoice_ids": ["I2"], "step": 30, "level": "firm", "channel": "email",
                                              "to": ["ap@a.example"], "template": "firm"}, "A")
    b.add("promise.recorded", at("2026-03-25"), {"promise_id": "PR1", "invoice_ids": ["I2"], "promised_on": "2026-04-10",
                                                 "amount_minor": 30_000, "currency": "USD"}, "A")
    b.add("ticket.flagged", at("2026-03-10"), {"ticket_id": "T1", "invoice_ids": ["I4"], "summary": "Wrong seat count",
                                               "psa": {"source": "connectwise", "external_id": "T1"}}, "B")
    b.add("collection.paused", at("2026-03-10", 16), {"case_id": "CASE-B", "reason": "dispute"}, "B")
    b.add("installment_plan.created", at("2026-03-26"), {"plan_id": "PL1", "invoice_id": "I6", "payment_method_id": "pm_C",
                                                        "currency": "USD",
                                                        "parts": [{"due_on": "2026-04-15", "amount_minor": 5_000},
                                                                  {"due_on": "2026-05-15", "amount_minor": 5_000}]}, "C")
    # An inquiry (no funds withdrawn, so I1 stays paid); chargebacks and returns: test_disputes.py.
    b.payment("payment.disputed", "P1", "A", [("I1", 10_000)], at("2026-03-27"), dispute_id="DP1",
              disputed_minor=10_000, reason="fraudulent", status="warning_needs_response")
    b.add("payout.paid", at("2026-03-28"), {"payout_id": "PO1", "arrival_date": "2026-03-30", "amount_minor": 29_940,
                                            "currency": "USD", "items": [
                                                {"type": "charge", "payment_id": "P8", "gross_minor": 12_000,
                                                 "fee_minor": 30, "net_minor": 11_970},
                                                {"type": "charge", "payment_id": "PX", "gross_minor": 18_000,
                                                 "fee_minor": 30, "net_minor": 17_970}]})
    b.add("gl.post_failed", at("2026-03-28", 16), {"entry_id": "E1", "purpose": "payment", "system": "quickbooks",
                                                   "reason": "Account 'Undeposited Funds' missing", "retryable": False,
                                                   "source_event_id": "x"})
    b.add("gl.posted", at("2026-03-29"), {"entry_id": "E1", "purpose": "payment", "system": "quickbooks",
                                          "external_id": "QB-1", "source_event_id": "x"})
    b.add("gl.post_failed", at("2026-03-29", 16), {"entry_id": "E2", "purpose": "deposit", "system": "quickbooks",
                                                   "reason": "Bank account not mapped", "retryable": False,
                                                   "source_event_id": "y"})
    b.add("psa.sync_failed", at("2026-03-30"), {"connection_id": "CONN1", "source": "connectwise",
                                                "error": "401 Unauthorized: API member keys revoked", "retryable": False})
    return b


async def apply(session_factory, events: list[Envelope]) -> None:
    """Apply events through the service's handlers, one transaction per event, as the runtime would."""
    for event in events:
        data = CATALOGUE.parse(event.type, event.version, event.data)
        async with session_factory() as session, session.begin():
            await HANDLERS[event.type](session, event, data)


@pytest.fixture
def tenant() -> str:
    return f"book-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def book(tenant) -> Book:
    return build_book(tenant)


def shifted(book: Book, days: int) -> Book:
    """The same book moved `days` later: dates and instants alike."""
    delta = timedelta(days=days)
    moved = Book(book.tenant)

    def shift(value):
        if isinstance(value, dict):
            return {k: shift(v) for k, v in value.items()}
        if isinstance(value, list):
            return [shift(v) for v in value]
        if isinstance(value, str) and len(value) == 10 and value[4] == "-" and value[7] == "-":
            return (date.fromisoformat(value) + delta).isoformat()
        if isinstance(value, str) and len(value) > 10 and value[4] == "-" and "T" in value:
            try:
                return (datetime.fromisoformat(value) + delta).isoformat()
            except ValueError:
                return value
        return value

    for event in book.events:
        data = shift(dict(event.data))
        if event.type == "tenant.updated":
            data = dict(event.data)
        moved.add(event.type, event.occurred_at + delta, data, event.client_id)
    return moved


@pytest.fixture(scope="session")
def as_of() -> date:
    return AS_OF


@pytest.fixture(scope="session")
def apply_events():
    return apply


@pytest.fixture(scope="session")
def make_book():
    return build_book


@pytest.fixture(scope="session")
def shift_book():
    return shifted


@pytest.fixture(scope="session")
def blank_book():
    """`blank_book(tenant)`: a Book holding only the tenant's profile, to tell a story of one's own."""
    return blank


async def dump(session_factory, tenant: str) -> dict[str, list[str]]:
    """Every read-model row of a tenant, as sorted JSON per table: equal dumps, equal read models."""
    tables = {}
    async with session_factory() as session:
        for table in READ_MODEL_TABLES:
            rows = await session.execute(text(f"SELECT to_jsonb(t) FROM {table} t WHERE tenant_id = :t"), {"t": tenant})
            tables[table] = sorted(json.dumps(row[0], sort_keys=True) for row in rows)
    return tables


@pytest.fixture(scope="session")
def dump_read_models():
    return dump
