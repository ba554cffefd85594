"""The PSA and the ledger of an MSP in the vendor variants of the auto-pay loop (issue 9, 2d).

A PSA side is one vendor's simulator, on a free port of the test's event loop, with what the test needs
of it: the connection body psa_ingest gets, an invoice due today for a client with no other debt, and
what the PSA shows once we wrote the payment back (read from the simulator's state, in the vendor's
format). A ledger side is QuickBooks Online or Xero, connected through gl_posting's own API.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Protocol
from urllib.parse import parse_qs, urlparse

import httpx

from payloop.embedded import free_port
from payloop.simulators import autotask, halopsa, superops
from payloop.simulators.connectwise import CLIENT_ID, COMPANY_ID, PRIVATE_KEY, PUBLIC_KEY, ConnectWiseSimulator

from e2e_harness import Msp, today, wait_for

FAST = {"backoff_initial_s": 0.05, "timeout_s": 5}


@dataclass(frozen=True)
class DueInvoice:
    external_id: str
    company_external_id: str
    number: str
    company_name: str


class PsaSide(Protocol):
    source: str

    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    def connection(self) -> dict: ...
    def invoice_due_today(self, amount: str) -> DueInvoice: ...
    def paid(self, external_id: str) -> bool: ...
    def payments_recorded(self, external_id: str) -> int: ...


class ConnectWiseSide:
    source = "connectwise"

    def __init__(self) -> None:
        self.sim = ConnectWiseSimulator(companies=4, months=1)

    async def start(self) -> None:
        await self.sim.start(free_port())

    async def stop(self) -> None:
        await self.sim.stop()

    def connection(self) -> dict:
        return {"source": "connectwise", "name": "CW", "base_url": self.sim.api_url, "poll_interval_s": 3600,
                "credentials": {"company_id": COMPANY_ID, "public_key": PUBLIC_KEY, "private_key": PRIVATE_KEY,
                                "client_id": CLIENT_ID}, "settings": FAST}

    def invoice_due_today(self, amount: str) -> DueInvoice:
        company_id = list(self.sim.state.companies)[3]  # the one the seed left without void, credit or dispute
        for invoice in [i for i in self.sim.state.invoices.values() if i["company"]["id"] == company_id]:
            self.sim.update_invoice(invoice["id"], payments=invoice["total"])
        invoice = self.sim.new_invoice(company_id, [("MS-BASE", "1", amount, "Managed Services - Base Platform")])
        self.sim.update_invoice(invoice["id"], dueDate=f"{today().isoformat()}T00:00:00Z")
        return DueInvoice(str(invoice["id"]), str(company_id), invoice["invoiceNumber"],
                          self.sim.state.companies[company_id]["name"])

    def paid(self, external_id: str) -> bool:
        return self.sim.state.invoices[int(external_id)]["status"]["name"] == "Paid"

    def payments_recorded(self, external_id: str) -> int:
        return len(self.sim.payments_of(int(external_id)))


class AutotaskSide:
    """Autotask invoices have no balance: a written-back payment sets `paidDate` and leaves our reference
    in `comments` (docs/vendors/autotask.md)."""

    source = "autotask"

    def __init__(self) -> None:
        self.sim = autotask.AutotaskSimulator()

    async def start(self) -> None:
        await self.sim.start(free_port())

    async def stop(self) -> None:
        await self.sim.stop()

    def connection(self) -> dict:
        return {"source": "autotask", "name": "Autotask", "base_url": self.sim.api_url, "poll_interval_s": 3600,
                "credentials": {"integration_code": autotask.INTEGRATION_CODE, "username": autotask.USERNAME,
                                "secret": autotask.SECRET}, "settings": {**FAST, "page_size": 200}}

    def invoice_due_today(self, amount: str) -> DueInvoice:
        state = self.sim.state
        company_id = max(state["Companies"])  # a fresh client: its history is settled below
        for invoice in [i for i in state["Invoices"].values() if i["companyID"] == company_id]:
            if not invoice["paidDate"] and not invoice["isVoided"]:
                self.sim.mark_paid(invoice["id"])
        invoice = self.sim.new_invoice(company_id, [("MS-BASE", "1", amount, "Managed Services - Base Platform")])
        invoice["dueDate"] = f"{today().isoformat()}T00:00:00.000Z"
        return DueInvoice(str(invoice["id"]), str(company_id), invoice["invoiceNumber"],
                          state["Companies"][company_id]["companyName"])

    def paid(self, external_id: str) -> bool:
        return bool(self.sim.state["Invoices"][int(external_id)]["paidDate"])

    def payments_recorded(self, external_id: str) -> int:
        comments = self.sim.state["Invoices"][int(external_id)]["comments"] or ""
        return sum(1 for line in comments.splitlines() if line.startswith("payloop:"))


class HaloSide:
    source = "halopsa"

    def __init__(self) -> None:
        self.sim = halopsa.HaloSimulator()

    async def start(self) -> None:
        await self.sim.start(free_port())

    async def stop(self) -> None:
        await self.sim.stop()

    def connection(self) -> dict:
        return {"source": "halopsa", "name": "Halo", "base_url": self.sim.base_url, "poll_interval_s": 3600,
                "credentials": {"client_id": halopsa.CLIENT_ID, "client_secret": halopsa.CLIENT_SECRET},
                "settings": {**FAST, "page_size": 200}}

    def invoice_due_today(self, amount: str) -> DueInvoice:
        state = self.sim.state
        client_id = max(state["Client"])
        for invoice in [i for i in state["Invoice"].values() if i["client_id"] == client_id]:
            if invoice["paymentstatus"] != halopsa.VOID:
                invoice["amountpaid"] = invoice["_total"]
                halopsa.recompute(invoice)
        invoice = self.sim.new_invoice(client_id, [("MS-BASE", "1", amount, "Managed Services - Base Platform")])
        # Halo's due date is the invoice date plus the payment terms in days (docs/vendors/halopsa.md).
        invoice["invoice_date"] = (today() - timedelta(days=invoice["paymentterms"])).strftime("%Y-%m-%dT00:00:00")
        return DueInvoice(str(invoice["id"]), str(client_id), invoice["invoicenumber"],
                          state["Client"][client_id]["name"])

    def paid(self, external_id: str) -> bool:
        return self.sim.state["Invoice"][int(external_id)]["paymentstatus"] == halopsa.PAID

    def payments_recorded(self, external_id: str) -> int:
        refs = self.sim.state["Invoice"][int(external_id)]["payment_ref"] or ""
        return sum(1 for ref in refs.split(";") if ref.strip().startswith("payloop:"))


class SuperOpsSide:
    """SuperOps invoices carry a status, not a balance: a written-back payment marks the invoice PAID with
    our reference in `paymentReference` (docs/vendors/superops.md)."""

    source = "superops"

    def __init__(self) -> None:
        self.sim = superops.SuperOpsSimulator()

    async def start(self) -> None:
        await self.sim.start(free_port())

    async def stop(self) -> None:
        await self.sim.stop()

    def connection(self) -> dict:
        return {"source": "superops", "name": "SuperOps", "base_url": self.sim.api_url, "poll_interval_s": 3600,
                "credentials": {"api_token": superops.API_TOKEN, "subdomain": superops.SUBDOMAIN,
                                "webhook_secret": "e2e-superops-webhook-secret"},
                "settings": {**FAST, "page_size": 100}}

    def invoice_due_today(self, amount: str) -> DueInvoice:
        state = self.sim.state
        account = max(state.clients)
        for invoice in [i for i in state.invoices.values() if i["client"]["accountId"] == account]:
            if invoice["statusEnum"] != "VOID":
                invoice["statusEnum"] = "PAID"
        invoice = self.sim.new_invoice(account, [("MS-BASE", "1", amount, "Managed Services - Base Platform")])
        invoice["dueDate"] = today().isoformat()
        return DueInvoice(invoice["invoiceId"], account, invoice["displayId"], state.clients[account]["name"])

    def paid(self, external_id: str) -> bool:
        return self.sim.state.invoices[external_id]["statusEnum"] == "PAID"

    def payments_recorded(self, external_id: str) -> int:
        return int(str(self.sim.state.invoices[external_id]["paymentReference"] or "").startswith("payloop:"))


class LedgerSide(Protocol):
    system: str

    async def connect(self, msp: Msp) -> None: ...
    async def invoice_in_books(self, msp: Msp, due: DueInvoice, amount_minor: int) -> None: ...
    async def payments(self, msp: Msp) -> list[Decimal]: ...
    async def invoice_balances(self, msp: Msp) -> list[Decimal]: ...
    async def deposits(self, msp: Msp) -> int: ...
    async def balances(self, msp: Msp) -> dict[str, Decimal]:
        """Bank, fee expense and clearing account balances, under those three names."""


class QuickBooksLedger:
    system = "quickbooks"

    async def connect(self, msp: Msp) -> None:
        await msp.connect_quickbooks()

    async def invoice_in_books(self, msp: Msp, due: DueInvoice, amount_minor: int) -> None:
        await msp.invoice_in_books(due.number, due.company_name, amount_minor)

    async def payments(self, msp: Msp) -> list[Decimal]:
        return [money(p["TotalAmt"]) for p in (await msp.books())["entities"].get("Payment", [])]

    async def invoice_balances(self, msp: Msp) -> list[Decimal]:
        return [money(i["Balance"]) for i in (await msp.books())["entities"]["Invoice"]]

    async def deposits(self, msp: Msp) -> int:
        return len((await msp.books())["entities"].get("Deposit", []))

    async def balances(self, msp: Msp) -> dict[str, Decimal]:
        accounts = {a["Name"]: money(a["CurrentBalance"]) for a in (await msp.books())["entities"]["Account"]}
        return {"bank": accounts["Checking"], "fees": accounts["Merchant Processing Fees"],
                "clearing": accounts["Undeposited Funds"]}


class XeroLedger:
    system = "xero"

    def __init__(self) -> None:
        self.organisation = ""

    def _sim(self, msp: Msp) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=msp.platform.world.xero.url)

    async def state(self, msp: Msp) -> dict:
        async with self._sim(msp) as http:
            return (await http.get(f"/_sim/organisations/{self.organisation}")).json()

    async def connect(self, msp: Msp) -> None:
        self.organisation = msp.platform.world.xero_sim.create_organisation(f"{msp.tenant} books").tenant_id
        async with self._sim(msp) as http:
            consent = await http.get("/identity/connect/authorize", params={
                "response_type": "code", "client_id": "payloop-dev", "redirect_uri": "http://127.0.0.1/cb",
                "scope": "openid offline_access accounting.transactions accounting.settings", "state": "e2e",
                "tenantId": self.organisation})
            code = parse_qs(urlparse(consent.headers["location"]).query)["code"][0]
        async with msp.api("gl_posting") as gl:
            answer = await gl.put("/v1/gl/connection", json={"system": "xero", "company_id": self.organisation,
                                                               "authorization_code": code,
                                                               "redirect_uri": "http://127.0.0.1/cb"})
            assert answer.status_code == 202, answer.text

            async def connected():
                return (await gl.get("/v1/gl/connection")).json()["status"] == "connected"
            await wait_for(connected, "gl_posting to connect to Xero")
            accounts = {a["Name"]: a["AccountID"] for a in (await self.state(msp))["Accounts"]}
            answer = await gl.put("/v1/gl/account-mapping", json={
                "clearing_account_id": accounts["Stripe Clearing"], "bank_account_id": accounts["Business Bank Account"],
                "fee_account_id": accounts["Merchant Processing Fees"],
                "refunds_account_id": accounts["Refunds and Chargebacks"],
                "convenience_fee_account_id": accounts["Card Convenience Fees"]})
            assert answer.status_code == 200, answer.text

    async def invoice_in_books(self, msp: Msp, due: DueInvoice, amount_minor: int) -> None:
        async with self._sim(msp) as http:
            answer = await http.post(f"/_sim/organisations/{self.organisation}/invoices", json={
                "invoice_number": due.number, "contact": due.company_name, "amount": str(Decimal(amount_minor) / 100)})
            assert answer.status_code == 200, answer.text

    async def payments(self, msp: Msp) -> list[Decimal]:
        return [money(p["Amount"]) for p in (await self.state(msp))["Payments"]]

    async def invoice_balances(self, msp: Msp) -> list[Decimal]:
        return [money(i["AmountDue"]) for i in (await self.state(msp))["Invoices"]]

    async def deposits(self, msp: Msp) -> int:
        return len((await self.state(msp))["BankTransfers"])

    async def balances(self, msp: Msp) -> dict[str, Decimal]:
        balances = {name: money(value) for name, value in (await self.state(msp))["balances"].items()}
        return {"bank": balances.get("Business Bank Account", Decimal(0)),
                "fees": balances.get("Merchant Processing Fees", Decimal(0)),
                "clearing": balances.get("Stripe Clearing", Decimal(0))}


def money(value) -> Decimal:
    return Decimal(str(value))
