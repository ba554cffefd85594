"""What the shared vendor tests know of each PSA simulator: how to connect, what it holds (read straight
from the simulator's own state, in the vendor's format), and how to change it or break it.

Loaded by conftest.py as `psa_vendor_harness`; the tests in test_vendor_sync.py run once per entry.
"""
from __future__ import annotations

import json
from decimal import Decimal

from payloop.simulators import autotask


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
                "lines": len(items), "status": status, "agreement": any(i["contractID"] for i in items)}
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
