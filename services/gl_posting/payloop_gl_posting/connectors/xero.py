"""Xero (Accounting API 2.0): payments, transfers and bank transactions for our entries.

- Every call names the organisation in the `xero-tenant-id` header; every write carries an
  `Idempotency-Key` derived from our entry id and the step, so a repeated write (after a lost
  response) is answered with the first result and applied once.
- An entry can take more than one Xero record (a payment per invoice it pays, a transfer and a fee
  transaction per payout). Each is a step with its own reference (`PL-<entry>-<step>` in `Reference`)
  and its id is stored as soon as Xero answers, so a retry resumes after the last step done; after a
  call that may have been applied we look the steps up by reference first.
- A payment is one Xero Payment per invoice it pays, into the clearing account (a bank account in
  Xero); what exceeds the invoices becomes a RECEIVE-OVERPAYMENT bank transaction (client credit).
- A payout is a bank transfer of its amount from clearing to the bank, plus a SPEND bank transaction
  of its fees and processor adjustments from clearing to the fee expense account: clearing gives up
  exactly the gross of the payout's payment items.
- A card convenience fee is a RECEIVE bank transaction into clearing from the mapped income account,
  from the payment's contact; the payout's transfer then carries it to the bank with the payment.
- A refund or dispute is a SPEND bank transaction out of clearing to the refunds account; a won dispute
  its mirror, a RECEIVE bank transaction into clearing from the refunds account. A dispute's share of a
  convenience fee is a second line of it, on the fee's income account.
Vendor facts we rely on are in docs/vendors/xero.md.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

import httpx

from payloop_gl_posting.connectors.base import (
    CustomerNotFound, InvoiceNotFound, LedgerAccount, LedgerBalances, LedgerItem, PeriodClosed,
    PostingContext, PostingError, RateLimited, Rejected, TokenRevoked, WaitingForPayment, chunks, dumps, to_decimal,
    to_minor,
)
from payloop_gl_posting.journal import JournalEntry
from payloop_gl_posting.models import AccountMapping
from payloop_gl_posting.oauth import TokenStore
from payloop_gl_posting.settings import GlSettings


@dataclass(frozen=True)
class Step:
    """One Xero record of an entry."""

    name: str
    collection: str  # the endpoint, also the key of the records in request and answer
    id_field: str

    @property
    def kind(self) -> str:
        """The id map kind its Xero id is stored under (keyed by our entry id)."""
        return f"xero_step:{self.name}"


PAYMENT, TRANSACTION, TRANSFER = ("Payments", "PaymentID"), ("BankTransactions", "BankTransactionID"), \
    ("BankTransfers", "BankTransferID")


def plan(entry: JournalEntry) -> list[Step]:
    """The Xero records an entry becomes, in the order they are written."""
    details = entry.details
    if entry.purpose == "payment":
        steps = [Step(f"payment-{n}", *PAYMENT) for n in range(1, len(details["allocations"]) + 1)]
        return steps + ([Step("overpayment", *TRANSACTION)] if details["unapplied_minor"] else [])
    if entry.purpose == "deposit":
        return ([Step("transfer", *TRANSFER)] if details["amount_minor"] else []) + \
               ([Step("fees", *TRANSACTION)] if processor_charges(entry) else [])
    if entry.purpose == "convenience_fee":
        return [Step("convenience-fee", *TRANSACTION)]
    return [Step("reversal", *TRANSACTION)]


def processor_charges(entry: JournalEntry) -> int:
    """What a payout's processor kept beyond the payments: fees plus adjustments (older entries have none)."""
    return entry.details["fee_minor"] + entry.details.get("adjustment_minor", 0)


async def connected_tenants(http: httpx.AsyncClient, settings: GlSettings, access_token: str) -> list[str]:
    """The organisations a fresh grant reaches (Xero's consent does not name them in the redirect)."""
    response = await http.get(settings.xero_connections_url,
                              headers={"Authorization": f"Bearer {access_token}", "Accept": "application/json"})
    if response.status_code >= 400:
        raise PostingError(f"Xero connections answered {response.status_code}: {response.text[:200]}")
    return [connection["tenantId"] for connection in response.json()]


class Xero:
    system = "xero"

    def __init__(self, http: httpx.AsyncClient, settings: GlSettings, tenant_id: str, tokens: TokenStore):
        self.http, self.settings, self.tenant_id, self.tokens = http, settings, tenant_id, tokens

    # --- transport --------------------------------------------------------------------------------

    async def _call(self, method: str, path: str, *, params: dict[str, str] | None = None,
                    body: dict[str, Any] | None = None, idempotency_key: str | None = None) -> dict[str, Any]:
        content = dumps(body) if body is not None else None
        headers = {"xero-tenant-id": self.tenant_id, "Accept": "application/json",
                   **({"Content-Type": "application/json"} if content else {}),
                   **({"Idempotency-Key": idempotency_key} if idempotency_key else {})}
        token = await self.tokens.access_token()
        for attempt in (1, 2):
            response = await self.http.request(method, f"{self.settings.xero_api_base}/{path}", params=params,
                                               content=content, headers={**headers, "Authorization": f"Bearer {token}"})
            if response.status_code == 401 and attempt == 1:
                token = await self.tokens.refresh(refused=token)
                continue
            return _answer(response)
        raise TokenRevoked("Xero refused a freshly refreshed token")  # pragma: no cover - loop returns

    async def _records(self, collection: str, params: dict[str, str]) -> list[dict[str, Any]]:
        return (await self._call("GET", collection, params=params)).get(collection) or []

    # --- reference data ---------------------------------------------------------------------------

    async def chart_of_accounts(self) -> list[LedgerAccount]:
        return [LedgerAccount(a["AccountID"], a["Name"], a["Type"])
                for a in await self._records("Accounts", {"where": 'Status=="ACTIVE"'})]

    async def items(self) -> list[LedgerItem]:
        return []  # Xero postings use accounts only; the QuickBooks refund item has no Xero role

    async def _account_code(self, account_id: str, context: PostingContext) -> str:
        """Bank transaction lines name their account by code; learned once per account."""
        code = await context.remembered("account_code", account_id)
        if code is None:
            found = (await self._call("GET", f"Accounts/{account_id}")).get("Accounts") or []
            code = found[0].get("Code") if found else None
            if not code:
                raise Rejected(f"Xero account {account_id} has no code to put on a bank transaction line")
            await context.remember("account_code", account_id, code)
        return code

    async def _invoice(self, invoice_id: str, context: PostingContext) -> tuple[str, str]:
        """The Xero InvoiceID and ContactID of one of our invoices, found by number once, then remembered."""
        xero_id, contact = (await context.remembered("invoice", invoice_id),
                            await context.remembered("invoice_contact", invoice_id))
        if xero_id and contact:
            return xero_id, contact
        number = await context.invoice_number(invoice_id)
        if number is None:
            raise InvoiceNotFound(f"invoice {invoice_id} has not been seen (no invoice.created yet)")
        found = [i for i in await self._records("Invoices", {"InvoiceNumbers": number})
                 if i.get("Type") == "ACCREC" and i.get("Status") not in ("DELETED", "VOIDED")]
        if not found:
            raise InvoiceNotFound(f"no Xero invoice numbered {number!r}")
        await context.remember("invoice", invoice_id, found[0]["InvoiceID"])
        await context.remember("invoice_contact", invoice_id, found[0]["Contact"]["ContactID"])
        return found[0]["InvoiceID"], found[0]["Contact"]["ContactID"]

    async def read_back(self, account_ids: list[str], invoice_numbers: list[str], currency: str,
                        as_of: date) -> LedgerBalances:
        """Closing balances at the end of `as_of` from the Bank Summary report (clearing and bank are both
        bank accounts in Xero), and `AmountDue` of the receivable invoices by number."""
        answer = await self._call("GET", "Reports/BankSummary",
                                  params={"fromDate": as_of.isoformat(), "toDate": as_of.isoformat()})
        closing = bank_summary_closing(answer)
        accounts = {account: to_minor(closing[account], currency) for account in account_ids if account in closing}
        invoices: dict[str, int] = {}
        # InvoiceNumbers goes in the query string: a few dozen numbers a call keep the URL short.
        for part in chunks(invoice_numbers, 40):
            page = 1
            while True:
                found = await self._records("Invoices", {"InvoiceNumbers": ",".join(part), "page": str(page)})
                for invoice in found:
                    if invoice.get("Type") == "ACCREC" and invoice.get("Status") not in ("DELETED", "VOIDED"):
                        invoices.setdefault(invoice["InvoiceNumber"], to_minor(invoice["AmountDue"], currency))
                if len(found) < 100:
                    break
                page += 1
        return LedgerBalances(as_of, accounts, invoices)

    # --- posting ----------------------------------------------------------------------------------

    async def find_posted(self, entry: JournalEntry, context: PostingContext) -> str | None:
        """After a call that may have been applied: adopt every step Xero already has, by reference.

        Returns the main record's id only when every step exists; otherwise `post` writes the rest.
        """
        first = None
        for step in plan(entry):
            found = await context.remembered(step.kind, str(entry.id))
            if found is None:
                matches = await self._records(step.collection, {"where": f'Reference=="{reference(entry, step)}"'})
                found = next((r[step.id_field] for r in matches if r.get("Status") != "DELETED"), None)
                if found is None:
                    return None
                await context.remember(step.kind, str(entry.id), found)
            first = first or found
        return first

    async def post(self, entry: JournalEntry, mapping: AccountMapping, context: PostingContext) -> str:
        steps = plan(entry)
        if not steps:
            raise Rejected(f"{entry.purpose} entry {entry.id} has nothing to write to Xero")
        pending = [s for s in steps if await context.remembered(s.kind, str(entry.id)) is None]
        # Everything that can refuse the entry is checked before its first record is written.
        records = {step.name: await self._record(entry, step, mapping, context) for step in pending}
        for step in pending:
            answer = await self._call("PUT", step.collection, body={step.collection: [records[step.name]]},
                                      idempotency_key=f"{entry.id}-{step.name}")
            await context.remember(step.kind, str(entry.id), answer[step.collection][0][step.id_field])
        main = await context.remembered(steps[0].kind, str(entry.id))
        assert main is not None
        return main

    async def _record(self, entry: JournalEntry, step: Step, mapping: AccountMapping,
                      context: PostingContext) -> dict[str, Any]:
        common = {"Date": entry.occurred_on.isoformat(), "Reference": reference(entry, step)}
        details = entry.details
        if step.name.startswith("payment-"):
            allocation = details["allocations"][int(step.name.removeprefix("payment-")) - 1]
            invoice, contact = await self._invoice(allocation["invoice_id"], context)
            await self._remember_customer(entry, contact, context)
            return {**common, "Invoice": {"InvoiceID": invoice}, "Account": {"AccountID": mapping.clearing_account_id},
                    "Amount": to_decimal(allocation["amount_minor"], entry.currency)}
        if step.name == "overpayment":
            contact = await self._payment_contact(entry, context)
            await self._remember_customer(entry, contact, context)
            return self._transaction(entry, common, "RECEIVE-OVERPAYMENT", {"ContactID": contact},
                                     mapping.clearing_account_id, details["unapplied_minor"],
                                     f"Unapplied part of payment {entry.subject_id}", account_code=None)
        if step.name == "transfer":
            await self._payments_posted(entry, context)
            source, target = mapping.clearing_account_id, mapping.bank_account_id
            if details["amount_minor"] < 0:  # a negative payout is the processor debiting the bank
                source, target = target, source
            return {**common, "FromBankAccount": {"AccountID": source}, "ToBankAccount": {"AccountID": target},
                    "Amount": to_decimal(abs(details["amount_minor"]), entry.currency)}
        if step.name == "fees":
            await self._payments_posted(entry, context)
            fee = processor_charges(entry)
            return self._transaction(entry, common, "SPEND" if fee > 0 else "RECEIVE",
                                     {"Name": self.settings.xero_fee_contact}, mapping.clearing_account_id, abs(fee),
                                     f"Processing fees and adjustments of payout {entry.subject_id}",
                                     account_code=await self._account_code(mapping.fee_account_id, context))
        # The rest are about a posted payment and its contact: a convenience fee into clearing from its
        # income account, a refund or a dispute out of clearing, or a won dispute back in.
        if await context.posted_payment(entry.subject_id) is None:
            raise WaitingForPayment(f"payment {entry.subject_id} is not posted yet")
        contact = await context.remembered("payment_customer", entry.subject_id)
        if contact is None:
            raise CustomerNotFound(f"payment {entry.subject_id} has no Xero contact on record")
        if step.name == "convenience-fee":
            return self._transaction(entry, common, "RECEIVE", {"ContactID": contact}, mapping.clearing_account_id,
                                     details["amount_minor"], f"Card convenience fee of payment {entry.subject_id}",
                                     account_code=await self._account_code(mapping.convenience_fee_account_id,
                                                                           context))
        kind = "RECEIVE" if entry.purpose == "dispute_won" else "SPEND"
        what = f"{entry.purpose.replace('_', ' ')} {details['reversal_id']} of payment {entry.subject_id}"
        record = self._transaction(entry, common, kind, {"ContactID": contact}, mapping.clearing_account_id,
                                   details["amount_minor"], what,
                                   account_code=await self._account_code(mapping.refunds_account_id, context))
        if details.get("surcharge_minor"):
            record["LineItems"].append(self._line(
                entry, details["surcharge_minor"], f"{what}: card convenience fee",
                await self._account_code(mapping.convenience_fee_account_id, context)))
        return record

    @staticmethod
    def _transaction(entry: JournalEntry, common: dict[str, Any], kind: str, contact: dict[str, str],
                     bank_account_id: str, amount_minor: int, description: str,
                     account_code: str | None) -> dict[str, Any]:
        return {**common, "Type": kind, "Contact": contact, "BankAccount": {"AccountID": bank_account_id},
                "CurrencyCode": entry.currency, "LineAmountTypes": "NoTax",
                "LineItems": [Xero._line(entry, amount_minor, description, account_code)]}

    @staticmethod
    def _line(entry: JournalEntry, amount_minor: int, description: str, account_code: str | None) -> dict[str, Any]:
        line: dict[str, Any] = {"Description": description, "Quantity": Decimal(1),
                                "UnitAmount": to_decimal(amount_minor, entry.currency)}
        if account_code is not None:  # overpayment lines go to receivables by themselves
            line["AccountCode"] = account_code
        return line

    async def _payment_contact(self, entry: JournalEntry, context: PostingContext) -> str:
        if entry.details["allocations"]:
            return (await self._invoice(entry.details["allocations"][0]["invoice_id"], context))[1]
        contact = await context.remembered("customer", entry.client_id) if entry.client_id else None
        if contact is None:
            raise CustomerNotFound(f"payment {entry.subject_id} has no invoice to name its Xero contact")
        return contact

    @staticmethod
    async def _remember_customer(entry: JournalEntry, contact: str, context: PostingContext) -> None:
        await context.remember("payment_customer", entry.subject_id, contact)
        if entry.client_id:
            await context.remember("customer", entry.client_id, contact)

    @staticmethod
    async def _payments_posted(entry: JournalEntry, context: PostingContext) -> None:
        """A payout moves money that must be in clearing first: wait for its payments."""
        for item in entry.details["items"]:
            if item["type"] == "charge" and item.get("payment_id") and \
                    await context.posted_payment(item["payment_id"]) is None:
                raise WaitingForPayment(f"payment {item['payment_id']} of this payout is not posted yet")


def bank_summary_closing(answer: dict[str, Any]) -> dict[str, str]:
    """AccountID -> closing balance of a Bank Summary report (`ReportWithRows`): the header row names the
    columns, each account row carries its id as the `accountID` attribute of its first cell."""
    report = (answer.get("Reports") or [{}])[0]
    rows = report.get("Rows") or []
    header = next((r["Cells"] for r in rows if r.get("RowType") == "Header"), [])
    column = next((n for n, cell in enumerate(header) if cell.get("Value") == "Closing Balance"), None)
    if column is None:
        raise PostingError("Xero's Bank Summary report has no Closing Balance column")
    closing = {}
    for section in (r for r in rows if r.get("RowType") == "Section"):
        for row in (r for r in section.get("Rows") or [] if r.get("RowType") == "Row"):
            cells = row["Cells"]
            account = next((a["Value"] for a in cells[0].get("Attributes") or [] if a.get("Id") == "accountID"), None)
            if account:
                closing[account] = cells[column]["Value"]
    return closing


def reference(entry: JournalEntry, step: Step) -> str:
    return f"{entry.reference}-{step.name}"


def _answer(response: httpx.Response) -> dict[str, Any]:
    try:
        body = json.loads(response.content or b"{}", parse_float=Decimal)
    except ValueError:
        body = {"Message": response.text[:200]}
    if response.status_code < 400:
        return body
    message = _message(body)
    if response.status_code == 429:
        retry_after = response.headers.get("Retry-After")
        raise RateLimited(f"Xero rate limit ({response.headers.get('X-Rate-Limit-Problem', 'unknown')}): {message}",
                          retry_after_s=float(retry_after) if retry_after else 60.0)
    if response.status_code in (401, 403):
        # 403: the organisation was disconnected from our app; only reconnecting helps.
        raise TokenRevoked(f"Xero refused access ({response.status_code}): {message}")
    if "lock date" in message.lower():
        raise PeriodClosed(f"Xero books are locked for this date: {message}")
    if response.status_code >= 500:
        raise PostingError(f"Xero answered {response.status_code}: {message}")
    raise Rejected(f"Xero rejected the request ({response.status_code}): {message}")


def _message(body: Any) -> str:
    if not isinstance(body, dict):
        return str(body)[:200]
    found = [error.get("Message", "") for element in body.get("Elements") or []
             for error in element.get("ValidationErrors") or []]
    return "; ".join(found) or body.get("Detail") or body.get("Message") or body.get("Title") or ""
