"""QuickBooks Online (Accounting API v3): payments, deposits and refund receipts for our entries.

- Every call names `minorversion`; every write carries `requestid` = our entry id, so a repeated
  write (after a lost response) is answered with the first result and applied once.
- Each record carries our reference in `DocNumber` (and a readable `PrivateNote`), so after a call
  that may have been applied we look it up (`select * from Payment where DocNumber = ...`) first.
- A payment is applied to the QuickBooks invoice found by its number (DocNumber), deposited to the
  clearing account (Undeposited Funds); what exceeds the invoices stays unapplied (client credit).
- A card convenience fee becomes a JournalEntry: clearing debited, the mapped income account credited
  (a Payment can carry no income, and a fee pays no invoice).
- A payout becomes a Deposit into the bank: one line linking each payment at its amount (a charge's
  gross beyond it is the payment's convenience fee, a clearing line of its own), refunds and disputes
  as negative clearing lines, and the fees as one negative line to the fee expense account, so the
  deposit equals the payout to the cent and clearing returns to zero.
- A refund or dispute becomes a RefundReceipt paid out of clearing against the refund item; a won dispute
  its mirror, a SalesReceipt of the same item into clearing, which the next payout deposits. A dispute that
  also took a convenience fee's share (and its return) is a JournalEntry instead: a receipt's lines are
  items, and no item stands for the fee's income account, which that share is debited to.
Vendor facts we rely on are in docs/vendors/quickbooks.md.
"""
from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from typing import Any

import httpx

from payloop_gl_posting.connectors.base import (
    CustomerNotFound, InvoiceNotFound, LedgerAccount, LedgerBalances, LedgerItem, PeriodClosed,
    PostingContext, PostingError, RateLimited, Rejected, TokenRevoked, WaitingForPayment, chunks, dumps, to_decimal,
    to_minor,
)
from payloop_gl_posting.journal import PROCESSOR_ITEMS, JournalEntry
from payloop_gl_posting.models import AccountMapping
from payloop_gl_posting.oauth import TokenStore
from payloop_gl_posting.settings import GlSettings

ENTITY = {"payment": "Payment", "deposit": "Deposit", "refund": "RefundReceipt", "dispute": "RefundReceipt",
          "dispute_won": "SalesReceipt", "convenience_fee": "JournalEntry"}


class QuickBooks:
    system = "quickbooks"

    def __init__(self, http: httpx.AsyncClient, settings: GlSettings, realm_id: str, tokens: TokenStore):
        self.http, self.settings, self.realm_id, self.tokens = http, settings, realm_id, tokens
        self.base = f"{settings.quickbooks_api_base}/v3/company/{realm_id}"

    # --- transport --------------------------------------------------------------------------------

    async def _call(self, method: str, path: str, *, params: dict[str, str] | None = None,
                    body: dict[str, Any] | None = None) -> dict[str, Any]:
        params = {**(params or {}), "minorversion": str(self.settings.quickbooks_minorversion)}
        content = dumps(body) if body is not None else None
        token = await self.tokens.access_token()
        for attempt in (1, 2):
            response = await self.http.request(
                method, f"{self.base}/{path}", params=params, content=content,
                headers={"Authorization": f"Bearer {token}", "Accept": "application/json",
                         **({"Content-Type": "application/json"} if content else {})})
            if response.status_code == 401 and attempt == 1:
                token = await self.tokens.refresh(refused=token)
                continue
            return self._answer(response)
        raise TokenRevoked("QuickBooks refused a freshly refreshed token")  # pragma: no cover - loop returns

    @staticmethod
    def _answer(response: httpx.Response) -> dict[str, Any]:
        body = json.loads(response.content or b"{}", parse_float=Decimal)
        if response.status_code < 400:
            return body
        fault = body.get("Fault") or body.get("fault") or {}
        errors = fault.get("Error") or fault.get("error") or [{}]
        message = f"{errors[0].get('Message') or errors[0].get('message', '')}: " \
                  f"{errors[0].get('Detail') or errors[0].get('detail', '')}".strip(": ")
        if response.status_code == 429:
            retry_after = response.headers.get("Retry-After")
            raise RateLimited(f"QuickBooks throttled the request: {message}",
                              retry_after_s=float(retry_after) if retry_after else 60.0)
        if response.status_code == 401:
            raise TokenRevoked(f"QuickBooks refused the token: {message}")
        if "account period has closed" in message.lower():
            raise PeriodClosed(f"QuickBooks books are closed for this date: {message}")
        if response.status_code >= 500:
            raise PostingError(f"QuickBooks answered {response.status_code}: {message}")
        raise Rejected(f"QuickBooks rejected the request ({response.status_code}): {message}")

    async def query(self, statement: str) -> list[dict[str, Any]]:
        """All rows of a query, following STARTPOSITION/MAXRESULTS paging."""
        rows: list[dict[str, Any]] = []
        start, page = 1, 1000
        while True:
            answer = await self._call("GET", "query", params={"query": f"{statement} STARTPOSITION {start} MAXRESULTS {page}"})
            found = next((v for k, v in answer.get("QueryResponse", {}).items() if isinstance(v, list)), [])
            rows += found
            if len(found) < page:
                return rows
            start += page

    # --- reference data ---------------------------------------------------------------------------

    async def chart_of_accounts(self) -> list[LedgerAccount]:
        return [LedgerAccount(a["Id"], a["Name"], a["AccountType"]) for a in await self.query("select * from Account")]

    async def items(self) -> list[LedgerItem]:
        return [LedgerItem(i["Id"], i["Name"]) for i in await self.query("select * from Item")]

    async def _invoice(self, number: str) -> dict[str, Any]:
        found = await self.query(f"select * from Invoice where DocNumber = '{_quote(number)}'")
        if not found:
            raise InvoiceNotFound(f"no QuickBooks invoice numbered {number!r}")
        return found[0]

    async def read_back(self, account_ids: list[str], invoice_numbers: list[str], currency: str,
                        as_of: date) -> LedgerBalances:
        """`CurrentBalance` of the accounts and `Balance` of the invoices, by query. An account's
        CurrentBalance covers every date (the query API has no as-of), hence `as_of=None`."""
        accounts = {row["Id"]: to_minor(row["CurrentBalance"], currency)
                    for row in await self.query(f"select * from Account where Id in ({_listed(account_ids)})")} \
            if account_ids else {}
        invoices: dict[str, int] = {}
        for part in chunks(invoice_numbers, 100):
            for row in await self.query(f"select * from Invoice where DocNumber in ({_listed(part)})"):
                invoices.setdefault(row["DocNumber"], to_minor(row["Balance"], currency))
        return LedgerBalances(None, accounts, invoices)

    # --- posting ----------------------------------------------------------------------------------

    async def find_posted(self, entry: JournalEntry, context: PostingContext) -> str | None:
        """The id of the record an earlier, unanswered call created for this entry, if it did."""
        found = await self.query(f"select * from {entity(entry)} where DocNumber = '{entry.reference}'")
        return found[0]["Id"] if found else None

    async def post(self, entry: JournalEntry, mapping: AccountMapping, context: PostingContext) -> str:
        record = entity(entry)
        if entry.purpose == "payment":
            body = await self._payment(entry, mapping, context)
        elif entry.purpose == "deposit":
            body = await self._deposit(entry, mapping, context)
        elif entry.purpose == "convenience_fee":
            body = self._journal_entry(entry, mapping, f"convenience fee of payment {entry.subject_id}")
        elif record == "JournalEntry":
            body = await self._disputed_fee(entry, mapping, context)
        else:
            body = await self._receipt(entry, mapping, context)
        answer = await self._call("POST", record.lower(), params={"requestid": str(entry.id)}, body=body)
        return answer[record]["Id"]

    def _common(self, entry: JournalEntry, note: str) -> dict[str, Any]:
        return {"DocNumber": entry.reference, "TxnDate": entry.occurred_on.isoformat(),
                "PrivateNote": f"Payloop {note} (entry {entry.id})", "CurrencyRef": {"value": entry.currency}}

    async def _payment(self, entry: JournalEntry, mapping: AccountMapping, context: PostingContext) -> dict[str, Any]:
        lines, customer = [], None
        for allocation in entry.details["allocations"]:
            number = await context.invoice_number(allocation["invoice_id"])
            if number is None:
                raise InvoiceNotFound(f"invoice {allocation['invoice_id']} has not been seen (no invoice.created yet)")
            invoice = await self._invoice(number)
            customer = customer or invoice["CustomerRef"]["value"]
            lines.append({"Amount": to_decimal(allocation["amount_minor"], entry.currency),
                          "LinkedTxn": [{"TxnId": invoice["Id"], "TxnType": "Invoice"}]})
        customer = customer or (await context.remembered("customer", entry.client_id) if entry.client_id else None)
        if customer is None:
            raise CustomerNotFound(f"payment {entry.subject_id} has no invoice to name its QuickBooks customer")
        await context.remember("payment_customer", entry.subject_id, customer)
        if entry.client_id:
            await context.remember("customer", entry.client_id, customer)
        return {**self._common(entry, f"payment {entry.subject_id}"),
                "CustomerRef": {"value": customer},
                "TotalAmt": to_decimal(entry.details["amount_minor"], entry.currency),
                "DepositToAccountRef": {"value": mapping.clearing_account_id},
                "PaymentRefNum": entry.subject_id[-21:],
                "Line": lines}

    async def _deposit(self, entry: JournalEntry, mapping: AccountMapping, context: PostingContext) -> dict[str, Any]:
        lines: list[dict[str, Any]] = []
        for item in entry.details["items"]:
            gross = to_decimal(item["gross_minor"], entry.currency)
            if item["type"] == "charge" and item.get("payment_id"):
                payment = await context.posted_payment(item["payment_id"])
                if payment is None:
                    raise WaitingForPayment(f"payment {item['payment_id']} of this payout is not posted yet")
                # QuickBooks deposits a linked payment in full and no more: Stripe's gross also holds
                # the convenience fee, which its own journal entry put in clearing.
                surcharge = await context.surcharge(item["payment_id"])
                lines.append({"Amount": to_decimal(item["gross_minor"] - surcharge, entry.currency),
                              "LinkedTxn": [{"TxnId": payment, "TxnType": "Payment"}]})
                if surcharge:
                    lines.append({"Amount": to_decimal(surcharge, entry.currency), "DetailType": "DepositLineDetail",
                                  "Description": f"convenience fee {item['payment_id']}",
                                  "DepositLineDetail": {"AccountRef": {"value": mapping.clearing_account_id}}})
            elif item["gross_minor"]:
                # Refunds and disputes left clearing already; processor adjustments belong with the fees.
                account = mapping.fee_account_id if item["type"] in PROCESSOR_ITEMS else mapping.clearing_account_id
                lines.append({"Amount": gross, "DetailType": "DepositLineDetail",
                              "Description": f"{item['type']} {item.get('payment_id') or ''}".strip(),
                              "DepositLineDetail": {"AccountRef": {"value": account}}})
        if entry.details["fee_minor"]:
            lines.append({"Amount": -to_decimal(entry.details["fee_minor"], entry.currency),
                          "DetailType": "DepositLineDetail", "Description": "Processing fees",
                          "DepositLineDetail": {"AccountRef": {"value": mapping.fee_account_id}}})
        return {**self._common(entry, f"payout {entry.subject_id}"),
                "DepositToAccountRef": {"value": mapping.bank_account_id},
                "TotalAmt": to_decimal(entry.details["amount_minor"], entry.currency),
                "Line": lines}

    def _journal_entry(self, entry: JournalEntry, mapping: AccountMapping, what: str,
                       customer: str | None = None) -> dict[str, Any]:
        """The entry's own lines as a JournalEntry (a debit for each positive line, a credit for each
        negative one); the customer, when named, on the lines that are not clearing."""
        # posting.require_mapped refused the entry before this if its fee account is not mapped.
        accounts = {"clearing": mapping.clearing_account_id, "refunds": mapping.refunds_account_id,
                    "convenience_fee": mapping.convenience_fee_account_id}
        lines = []
        for line in entry.lines:
            detail: dict[str, Any] = {"PostingType": "Debit" if line.amount_minor > 0 else "Credit",
                                      "AccountRef": {"value": accounts[line.account]}}
            if customer and line.account != "clearing":
                detail["Entity"] = {"Type": "Customer", "EntityRef": {"value": customer}}
            lines.append({"Amount": to_decimal(abs(line.amount_minor), entry.currency),
                          "DetailType": "JournalEntryLineDetail", "Description": what,
                          "JournalEntryLineDetail": detail})
        return {**self._common(entry, what), "Line": lines}

    async def _disputed_fee(self, entry: JournalEntry, mapping: AccountMapping,
                            context: PostingContext) -> dict[str, Any]:
        """A dispute that took a convenience fee's share with the payment, or its return: refunds and the
        fee's income against clearing, for the payment's customer."""
        if await context.posted_payment(entry.subject_id) is None:
            raise WaitingForPayment(f"payment {entry.subject_id} is not posted yet")
        customer = await context.remembered("payment_customer", entry.subject_id)
        what = f"{entry.purpose.replace('_', ' ')} {entry.details['reversal_id']} of payment {entry.subject_id}"
        return self._journal_entry(entry, mapping, what, customer)

    async def _receipt(self, entry: JournalEntry, mapping: AccountMapping, context: PostingContext) -> dict[str, Any]:
        """A refund or dispute (RefundReceipt: out of clearing) or a won dispute (SalesReceipt: back in);
        the two are mirror images with the same fields, the refund item carrying the income account."""
        if await context.posted_payment(entry.subject_id) is None:
            raise WaitingForPayment(f"payment {entry.subject_id} is not posted yet")
        customer = await context.remembered("payment_customer", entry.subject_id)
        if not mapping.refund_item_id:
            raise Rejected("the account mapping names no refund item for QuickBooks refund receipts")
        amount = to_decimal(entry.details["amount_minor"], entry.currency)
        what = f"{entry.purpose.replace('_', ' ')} {entry.details['reversal_id']}"
        return {**self._common(entry, f"{what} of payment {entry.subject_id}"),
                "CustomerRef": {"value": customer},
                "DepositToAccountRef": {"value": mapping.clearing_account_id},
                "Line": [{"Amount": amount, "DetailType": "SalesItemLineDetail",
                          "Description": what,
                          "SalesItemLineDetail": {"ItemRef": {"value": mapping.refund_item_id},
                                                  "Qty": 1, "UnitPrice": amount}}]}


def entity(entry: JournalEntry) -> str:
    """The QuickBooks record of an entry: by its purpose, but a JournalEntry for a dispute (or its return)
    that carries a convenience fee's share."""
    return "JournalEntry" if entry.purpose.startswith("dispute") and entry.amount("convenience_fee") \
        else ENTITY[entry.purpose]


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace("'", "\\'")


def _listed(values: list[str]) -> str:
    return ", ".join(f"'{_quote(value)}'" for value in values)
