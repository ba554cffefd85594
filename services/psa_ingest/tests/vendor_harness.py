"""What the shared vendor tests know of each PSA simulator: how to connect, what it holds (read straight
from the simulator's own state, in the vendor's format), and how to change it or break it.

Loaded by conftest.py as `psa_vendor_harness`; the tests in test_vendor_sync.py run once per entry.
"""
from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

from graphql import OperationDefinitionNode, build_schema, parse, validate
from graphql.execution.values import get_variable_values

from payloop.simulators import autotask, halopsa, superops


SPECS = Path(__file__).resolve().parents[3] / "specs"


def halo_fields(name: str) -> set[str]:
    """The field names of one of Halo's example objects (specs/halopsa/*.json)."""
    return set(json.loads((SPECS / "halopsa" / f"{name}.json").read_text())[0])


def minor(value) -> int:
    return int((Decimal(str(value)) * 100).quantize(Decimal(1)))


class AutotaskHarness:
    source = "autotask"
    client_listing = "/Companies/query"
    invoice_listing = "/Invoices/query"
    # The edit Autotask allows on a posted invoice is marking it paid; lines cannot change after posting.
    edit_changes = "status"

    def __init__(self) -> None:
        self.sim = autotask.AutotaskSimulator()

    def connection(self, *, wrong_secret: bool = False, **settings) -> dict:
        return {"source": "autotask", "name": "Sim", "base_url": self.sim.api_url, "poll_interval_s": 3600,
                "credentials": {"integration_code": autotask.INTEGRATION_CODE, "username": autotask.USERNAME,
                                "secret": "wrong-secret" if wrong_secret else autotask.SECRET},
                "settings": {"backoff_initial_s": 0.05, "page_size": 100, **settings}}

    def invoices(self) -> dict[str, dict]:
        """Every invoice (not the credits) as the tests expect it normalized."""
        out = {}
        for invoice in self.sim.state["Invoices"].values():
            if invoice["invoiceTotal"] < 0:
                continue
            items = autotask.billing_items(self.sim.state, invoice["id"])
            status = "void" if invoice["isVoided"] else "paid" if invoice["paidDate"] else "open"
            out[str(invoice["id"])] = {
                "number": invoice["invoiceNumber"], "total_minor": minor(invoice["invoiceTotal"]),
                "subtotal_minor": minor(invoice["invoiceTotal"]) - minor(invoice["totalTaxValue"]),
                "lines": len(items), "status": status, "agreement": any(i["contractID"] for i in items),
                "paid_on": invoice["paidDate"][:10] if status == "paid" else None}
        return out

    def counts(self) -> dict[str, int]:
        state = self.sim.state
        return {"client.upserted": len(state["Companies"]), "agreement.upserted": len(state["Contracts"]),
                "invoice.created": len(self.invoices()),
                "credit_memo.created": sum(1 for i in state["Invoices"].values() if i["invoiceTotal"] < 0),
                "ticket.flagged": len(state["Tickets"])}

    def open_invoices(self) -> list[str]:
        return [k for k, v in self.invoices().items() if v["status"] == "open" and v["agreement"]]

    def edit(self, external_id: str) -> None:
        self.sim.mark_paid(int(external_id))

    def void(self, external_id: str) -> None:
        self.sim.void_invoice(int(external_id))

    def add(self) -> str:
        company = next(iter(self.sim.state["Companies"]))
        return str(self.sim.new_invoice(company, [("HW-SWITCH-24", "1", "899.00", "24-port switch")])["id"])

    def break_invoice(self) -> str:
        invoice = next(i for i in self.sim.state["Invoices"].values() if i["invoiceTotal"] > 0)
        invoice["companyID"] = "not-a-number"
        invoice["invoiceDateTime"] = None
        return str(invoice["id"])

    def authenticated(self, request: dict) -> bool:
        headers = request["headers"]
        return bool(headers.get("apiintegrationcode") and headers.get("username") and headers.get("secret"))

    def paid_in_psa(self, external_id: str) -> bool:
        return bool(self.sim.state["Invoices"][int(external_id)]["paidDate"])

    def payments_in_psa(self, external_id: str) -> int:
        comments = self.sim.state["Invoices"][int(external_id)]["comments"] or ""
        return sum(1 for line in comments.splitlines() if line.startswith("payloop:"))

    writeback_fault = {"path_contains": "/Invoices", "method": "PATCH"}

    def check_requests_against_spec(self) -> None:
        """No machine-readable Autotask spec is kept (specs/SOURCES.md): nothing to check against."""

    def configure_webhook(self, url: str) -> None:
        """Nothing to do by hand: the connector subscribed through the PSA's API."""

    def change_with_webhook(self) -> tuple[str, str]:
        """Change a record whose webhook the PSA sends; returns the event type and external id expected."""
        company = next(iter(self.sim.state["Companies"]))
        self.sim.rename_company(company, "Acme Dental Group LLC")
        return "client.upserted", str(company)

    def forged_webhooks(self) -> list[tuple[bytes, dict]]:
        body = json.dumps({"Action": "Update", "Guid": "forged", "EntityType": "Company", "Id": 1,
                           "Fields": {"companyName": "x"}, "SequenceNumber": 1}).encode()
        return [(body, {"x-hook-signature": autotask.sign_webhook("guessed-secret", body)}),
                (body, {"x-hook-signature": "sha1=" + "A" * 28}),
                (body, {})]


HARNESSES = {"autotask": AutotaskHarness}


class HaloHarness:
    source = "halopsa"
    client_listing = "/api/Client"
    invoice_listing = "/api/Invoice"
    edit_changes = "total_minor"
    writeback_fault = {"path_contains": "/api/Invoice", "method": "POST"}

    def __init__(self) -> None:
        self.sim = halopsa.HaloSimulator()

    def connection(self, *, wrong_secret: bool = False, **settings) -> dict:
        return {"source": "halopsa", "name": "Sim", "base_url": self.sim.base_url, "poll_interval_s": 3600,
                "credentials": {"client_id": halopsa.CLIENT_ID,
                                "client_secret": "wrong-secret" if wrong_secret else halopsa.CLIENT_SECRET},
                "settings": {"backoff_initial_s": 0.05, "page_size": 100, **settings}}

    def _total(self, invoice: dict) -> int:
        return sum(minor(line["net_amount"]) + minor(line["tax_amount"]) for line in invoice["lines"])

    def invoices(self) -> dict[str, dict]:
        out = {}
        for invoice in self.sim.state["Invoice"].values():
            total = self._total(invoice)
            if total < 0:
                continue
            due = minor(invoice["amountdue"])
            status = ("void" if invoice["paymentstatus"] == halopsa.VOID else "paid" if due <= 0 < total
                      else "partially_paid" if invoice["amountpaid"] else "open")
            out[str(invoice["id"])] = {"number": invoice["invoicenumber"], "total_minor": total,
                                       "subtotal_minor": total - sum(minor(li["tax_amount"]) for li in invoice["lines"]),
                                       "lines": len(invoice["lines"]), "status": status,
                                       "agreement": bool(invoice["chid"]),
                                       "paid_on": (invoice["datepaid"] or "")[:10] or None if status == "paid" else None}
        return out

    def counts(self) -> dict[str, int]:
        state = self.sim.state
        return {"client.upserted": len(state["Client"]), "agreement.upserted": len(state["ClientContract"]),
                "invoice.created": len(self.invoices()),
                "credit_memo.created": sum(1 for i in state["Invoice"].values() if self._total(i) < 0),
                "ticket.flagged": sum(1 for t in state["Tickets"].values()
                                      if t["tickettype_id"] == halopsa.DISPUTE_TYPE_ID)}

    def open_invoices(self) -> list[str]:
        return [k for k, v in self.invoices().items() if v["status"] == "open" and v["agreement"]]

    def edit(self, external_id: str) -> None:
        self.sim.add_invoice_line(int(external_id), "ADJ-ONSITE", "1", "80.00", "After-hours callout")

    def void(self, external_id: str) -> None:
        self.sim.void_invoice(int(external_id))

    def add(self) -> str:
        client = next(iter(self.sim.state["Client"]))
        return str(self.sim.new_invoice(client, [("HW-SWITCH-24", "1", "899.00", "24-port switch")])["id"])

    def break_invoice(self) -> str:
        invoice = next(i for i in self.sim.state["Invoice"].values() if self._total(i) > 0)
        invoice["client_id"] = "not-a-number"
        invoice["invoice_date"] = None
        return str(invoice["id"])

    def authenticated(self, request: dict) -> bool:
        return request["path"] == "/auth/token" or request["headers"].get("authorization", "").startswith("Bearer ")

    def paid_in_psa(self, external_id: str) -> bool:
        return self.sim.state["Invoice"][int(external_id)]["paymentstatus"] == halopsa.PAID

    def payments_in_psa(self, external_id: str) -> int:
        refs = self.sim.state["Invoice"][int(external_id)]["payment_ref"] or ""
        return sum(1 for ref in refs.split(";") if ref.strip().startswith("payloop:"))

    def check_requests_against_spec(self) -> None:
        """Our invoice updates name only fields of Halo's Invoice object."""
        updates = [r for r in self.sim.requests if r["method"] == "POST" and r["path"] == "/api/Invoice"]
        assert updates
        for request in updates:
            for item in json.loads(request["body"]):
                assert set(item) <= halo_fields("Invoice"), set(item) - halo_fields("Invoice")

    def configure_webhook(self, url: str) -> None:
        """Nothing to do by hand: the connector subscribed through the PSA's API."""

    def change_with_webhook(self) -> tuple[str, str]:
        invoice = self.open_invoices()[0]
        self.edit(invoice)
        return "invoice.updated", invoice

    def forged_webhooks(self) -> list[tuple[bytes, dict]]:
        body = json.dumps({"id": "forged", "event": "Invoice Updated", "object_type": "Invoice",
                           "object_id": 1}).encode()
        return [(body, {"authorization": halopsa.basic_auth("payloop", "guessed-password")}),
                (body, {"authorization": "Bearer forged"}),
                (body, {})]


HARNESSES["halopsa"] = HaloHarness


class SuperOpsHarness:
    source = "superops"
    # One GraphQL endpoint: the simulator logs each request as `/msp:<root field>`, so faults and these
    # filters can name an operation the way the REST harnesses name a path.
    client_listing = ":getClientList"
    invoice_listing = ":getInvoiceList"
    edit_changes = "total_minor"
    writeback_fault = {"path_contains": ":updateInvoice", "method": "POST"}
    webhook_secret = "payloop-superops-webhook-secret"

    def __init__(self) -> None:
        self.sim = superops.SuperOpsSimulator()

    def connection(self, *, wrong_secret: bool = False, **settings) -> dict:
        return {"source": "superops", "name": "Sim", "base_url": self.sim.api_url, "poll_interval_s": 3600,
                "credentials": {"api_token": "wrong-token" if wrong_secret else superops.API_TOKEN,
                                "subdomain": superops.SUBDOMAIN, "webhook_secret": self.webhook_secret},
                "settings": {"backoff_initial_s": 0.05, "page_size": 100, **settings}}

    def invoices(self) -> dict[str, dict]:
        out = {}
        for invoice in self.sim.state.invoices.values():
            total = minor(invoice["totalAmount"])
            if total < 0 or invoice["statusEnum"] == "DRAFT":
                continue
            status = {"PAID": "paid", "VOID": "void"}.get(invoice["statusEnum"], "open")
            out[invoice["invoiceId"]] = {
                "number": invoice["displayId"], "total_minor": total,
                "subtotal_minor": sum(minor(i["amount"]) for i in invoice["items"]), "lines": len(invoice["items"]),
                "status": status, "agreement": invoice["_contractBilled"],
                "paid_on": invoice["paymentDate"] if status == "paid" else None}
        return out

    def counts(self) -> dict[str, int]:
        state = self.sim.state
        return {"client.upserted": len(state.clients),
                "agreement.upserted": len({c["client"]["accountId"] for c in state.contracts.values()
                                           if c["contractStatus"] == "ACTIVE"}),
                "invoice.created": len(self.invoices()),
                "credit_memo.created": sum(1 for i in state.invoices.values() if minor(i["totalAmount"]) < 0),
                "ticket.flagged": sum(1 for t in state.tickets.values() if t["category"] == superops.DISPUTE_CATEGORY)}

    def open_invoices(self) -> list[str]:
        return [k for k, v in self.invoices().items() if v["status"] == "open" and v["agreement"]]

    def edit(self, external_id: str) -> None:
        self.sim.add_invoice_line(external_id, "ADJ-ONSITE", "1", "80.00", "After-hours callout")

    def void(self, external_id: str) -> None:
        self.sim.void_invoice(external_id)

    def add(self) -> str:
        account = next(iter(self.sim.state.clients))
        return self.sim.new_invoice(account, [("HW-SWITCH-24", "1", "899.00", "24-port switch")])["invoiceId"]

    def break_invoice(self) -> str:
        invoice = next(i for i in self.sim.state.invoices.values() if minor(i["totalAmount"]) > 0)
        invoice["client"] = {"accountId": None}
        invoice["items"][0]["quantity"] = "a dozen"
        return invoice["invoiceId"]

    def authenticated(self, request: dict) -> bool:
        headers = request["headers"]
        return headers.get("authorization", "").startswith("Bearer ") and bool(headers.get("customersubdomain"))

    def paid_in_psa(self, external_id: str) -> bool:
        return self.sim.state.invoices[external_id]["statusEnum"] == "PAID"

    def payments_in_psa(self, external_id: str) -> int:
        return int(str(self.sim.state.invoices[external_id]["paymentReference"] or "").startswith("payloop:"))

    def check_requests_against_spec(self) -> None:
        """Every GraphQL document we sent is valid against SuperOps' published schema, variables included."""
        schema = build_schema((SPECS / "superops" / "superops.graphql").read_text())
        sent = [json.loads(r["body"]) for r in self.sim.requests]
        assert any("updateInvoice" in body["query"] for body in sent)
        for body in sent:
            document = parse(body["query"])
            assert validate(schema, document) == [], body["query"]
            operation = next(d for d in document.definitions if isinstance(d, OperationDefinitionNode))
            coerced = get_variable_values(schema, operation.variable_definitions, body.get("variables") or {})
            assert not isinstance(coerced, list), (coerced, body)  # a list is the coercion errors

    def configure_webhook(self, url: str) -> None:
        """SuperOps has no webhook API: the MSP enters the URL and our header in SuperOps, as done here."""
        self.sim.add_webhook(url, {"X-Payloop-Token": self.webhook_secret})

    def change_with_webhook(self) -> tuple[str, str]:
        invoice = self.open_invoices()[0]
        self.edit(invoice)
        return "invoice.updated", invoice

    def forged_webhooks(self) -> list[tuple[bytes, dict]]:
        body = json.dumps({"eventId": "forged", "event": "invoice.updated", "data": {"invoiceId": "1"}}).encode()
        return [(body, {"x-payloop-token": "guessed-secret-guessed"}),
                (body, {"authorization": f"Bearer {superops.API_TOKEN}"}),
                (body, {})]


HARNESSES["superops"] = SuperOpsHarness
