"""A stateful QuickBooks Online simulator (Accounting API v3, JSON) for `payloop dev` and tests.

Follows Intuit's documented formats: OAuth 2.0 authorization code and refresh-token grants with
refresh-token rotation (`/oauth2/v1/tokens/bearer`), `/v3/company/{realmId}/{entity}` writes with the
`requestid` query parameter (a repeated requestid of an applied write answers the first response and
changes nothing),
`minorversion`, the SQL-like `query` endpoint with STARTPOSITION/MAXRESULTS paging, `Fault` error
bodies, 401 for bad tokens, 429 throttling (500 requests/minute per realm) and closed books.
Entity field names are those of Intuit's XSD (`../shared/specs/quickbooks/Finance.xsd`).

Writes: Payment, Deposit, RefundReceipt, SalesReceipt and JournalEntry (a convenience fee's income).
Accounts keep balances (debits positive for assets and expenses, credits positive for the rest),
so a test can check that clearing returns to zero and that the bank holds the payouts.
Control endpoints for tests and demos live under `/_sim` (create companies and invoices, close the
books, revoke tokens, inject throttling or a response lost after the write was applied, and a
JournalEntry as someone typing into QuickBooks itself would add, which a reconciliation should notice).

Run: `python -m payloop.simulators.quickbooks --port 8210`.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

DEFAULT_CLIENT_ID = "payloop-dev"
DEFAULT_CLIENT_SECRET = "payloop-dev-secret"
ACCESS_TTL_S = 3600
REFRESH_TTL_S = 8_726_400  # 101 days, as Intuit documents
RATE_LIMIT_PER_MINUTE = 500

# Top-level fields the simulator accepts per entity: a subset of Intuit's XSD, enough for AR work.
_COMMON = {"Id", "SyncToken", "MetaData", "DocNumber", "TxnDate", "PrivateNote", "CurrencyRef",
           "ExchangeRate", "Line", "TotalAmt", "domain", "sparse", "TxnSource"}
ACCEPTED_FIELDS = {
    "Payment": _COMMON | {"CustomerRef", "ARAccountRef", "DepositToAccountRef", "PaymentMethodRef",
                          "PaymentRefNum", "UnappliedAmt", "ProcessPayment"},
    "Deposit": _COMMON | {"DepositToAccountRef", "CashBack"},
    "RefundReceipt": _COMMON | {"CustomerRef", "DepositToAccountRef", "PaymentMethodRef", "PaymentRefNum",
                                "CustomerMemo", "BillEmail"},
    "SalesReceipt": _COMMON | {"CustomerRef", "DepositToAccountRef", "PaymentMethodRef", "PaymentRefNum",
                               "CustomerMemo", "BillEmail"},
    "JournalEntry": _COMMON | {"Adjustment"},
}
DEBIT_NORMAL = {"Bank", "Other Current Asset", "Accounts Receivable", "Expense", "Other Expense",
                "Cost of Goods Sold", "Fixed Asset", "Other Asset"}


class Fault(Exception):
    def __init__(self, status: int, code: str, message: str, detail: str, kind: str = "ValidationFault",
                 element: str = ""):
        super().__init__(message)
        self.status, self.code, self.message, self.detail, self.kind, self.element = (
            status, code, message, detail, kind, element)

    def body(self) -> dict[str, Any]:
        return {"Fault": {"Error": [{"Message": self.message, "Detail": self.detail, "code": self.code,
                                     "element": self.element}], "type": self.kind},
                "time": _now_iso()}


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _money(value: Any) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))


@dataclass
class Company:
    realm_id: str
    name: str
    entities: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    ids: itertools.count = field(default_factory=lambda: itertools.count(1))
    closing_date: date | None = None
    responses: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    calls: list[float] = field(default_factory=list)
    throttle_next: int = 0
    lose_next_response: int = 0  # apply the write, then answer too late for the caller
    lose_delay_s: float = 5.0

    def add(self, entity: str, record: dict[str, Any]) -> dict[str, Any]:
        record = {**record, "Id": str(next(self.ids)), "SyncToken": "0", "domain": "QBO", "sparse": False,
                  "MetaData": {"CreateTime": _now_iso(), "LastUpdatedTime": _now_iso()}}
        self.entities.setdefault(entity, {})[record["Id"]] = record
        return record

    def get(self, entity: str, id_: str | None) -> dict[str, Any] | None:
        return self.entities.get(entity, {}).get(str(id_)) if id_ is not None else None

    def account(self, ref: dict[str, Any] | None, element: str) -> dict[str, Any]:
        account = self.get("Account", (ref or {}).get("value"))
        if account is None or not account.get("Active", True):
            raise Fault(400, "2500", "Invalid Reference Id",
                        f"Invalid Reference Id : Accounts element id {(ref or {}).get('value')} not found",
                        element=element)
        return account

    def post(self, account: dict[str, Any], debit: Decimal) -> None:
        sign = 1 if account["AccountType"] in DEBIT_NORMAL else -1
        account["CurrentBalance"] = _money(account["CurrentBalance"]) + sign * debit


@dataclass
class Simulator:
    client_id: str = DEFAULT_CLIENT_ID
    client_secret: str = DEFAULT_CLIENT_SECRET
    companies: dict[str, Company] = field(default_factory=dict)
    codes: dict[str, tuple[str, str]] = field(default_factory=dict)  # code -> (realm, redirect_uri)
    access_tokens: dict[str, tuple[str, float]] = field(default_factory=dict)  # token -> (realm, expiry)
    refresh_tokens: dict[str, str] = field(default_factory=dict)  # live refresh token -> realm
    realm_ids: itertools.count = field(default_factory=lambda: itertools.count(9130350000000101))

    def create_company(self, name: str = "Demo MSP LLC", realm_id: str | None = None) -> Company:
        company = Company(realm_id=realm_id or str(next(self.realm_ids)), name=name)
        for acct_name, acct_type, sub_type in (
            ("Undeposited Funds", "Other Current Asset", "UndepositedFunds"),
            ("Checking", "Bank", "Checking"),
            ("Accounts Receivable (A/R)", "Accounts Receivable", "AccountsReceivable"),
            ("Merchant Processing Fees", "Expense", "BankCharges"),
            ("Sales of Product Income", "Income", "SalesOfProductIncome"),
            ("Refunds and Chargebacks", "Income", "DiscountsRefundsGiven"),
            ("Card Convenience Fees", "Income", "ServiceFeeIncome"),
        ):
            company.add("Account", {"Name": acct_name, "FullyQualifiedName": acct_name, "AccountType": acct_type,
                                    "AccountSubType": sub_type, "Classification": _classification(acct_type),
                                    "Active": True, "CurrentBalance": Decimal("0"),
                                    "CurrencyRef": {"value": "USD", "name": "United States Dollar"}})
        refunds = self.account_named(company, "Refunds and Chargebacks")
        company.add("Item", {"Name": "Refund", "Type": "Service", "Active": True,
                             "IncomeAccountRef": {"value": refunds["Id"], "name": refunds["Name"]}})
        self.companies[company.realm_id] = company
        return company

    @staticmethod
    def account_named(company: Company, name: str) -> dict[str, Any]:
        return next(a for a in company.entities["Account"].values() if a["Name"] == name)

    def company(self, realm_id: str) -> Company:
        if realm_id not in self.companies:
            raise Fault(403, "3100", "ApplicationAuthorizationFailed",
                        f"message=ApplicationAuthorizationFailed; errorCode=003100; statusCode=403", "AUTHENTICATION")
        return self.companies[realm_id]

    def issue_tokens(self, realm_id: str) -> dict[str, Any]:
        access = "qbo-at-" + secrets.token_urlsafe(24)
        refresh = "qbo-rt-" + secrets.token_urlsafe(24)
        self.access_tokens[access] = (realm_id, time.time() + ACCESS_TTL_S)
        self.refresh_tokens[refresh] = realm_id
        return {"token_type": "bearer", "access_token": access, "refresh_token": refresh,
                "expires_in": ACCESS_TTL_S, "x_refresh_token_expires_in": REFRESH_TTL_S}

    def revoke(self, realm_id: str) -> None:
        """What disconnecting the app in QuickBooks does: every token of the realm stops working."""
        self.access_tokens = {t: v for t, v in self.access_tokens.items() if v[0] != realm_id}
        self.refresh_tokens = {t: r for t, r in self.refresh_tokens.items() if r != realm_id}

    def expire_access_tokens(self, realm_id: str) -> None:
        self.access_tokens = {t: (r, 0.0 if r == realm_id else e) for t, (r, e) in self.access_tokens.items()}


def _classification(account_type: str) -> str:
    if account_type in ("Bank", "Other Current Asset", "Accounts Receivable", "Fixed Asset", "Other Asset"):
        return "Asset"
    if account_type in ("Expense", "Other Expense", "Cost of Goods Sold"):
        return "Expense"
    return "Revenue" if account_type == "Income" else "Liability"


# --- writes ---------------------------------------------------------------------------------------

def _check_fields(entity: str, body: dict[str, Any]) -> None:
    unknown = sorted(set(body) - ACCEPTED_FIELDS[entity])
    if unknown:
        raise Fault(400, "2010", "Request has invalid or unsupported property",
                    f"Property Name:{unknown[0]} specified is unsupported or invalid", element=unknown[0])


def _check_period(company: Company, body: dict[str, Any]) -> date:
    txn_date = date.fromisoformat(body.get("TxnDate") or date.today().isoformat())
    if company.closing_date and txn_date <= company.closing_date:
        raise Fault(400, "6200", "Account Period Closed, Cannot Update Through Services API",
                    "The account period has closed and the account books cannot be updated through the "
                    "QBO Services API. Please use the QBO website to make these changes.")
    return txn_date


def create_payment(company: Company, body: dict[str, Any]) -> dict[str, Any]:
    _check_fields("Payment", body)
    _check_period(company, body)
    customer = company.get("Customer", (body.get("CustomerRef") or {}).get("value"))
    if customer is None:
        raise Fault(400, "2500", "Invalid Reference Id", "Invalid Reference Id : Customer not found", element="CustomerRef")
    total = _money(body["TotalAmt"])
    deposit_to = company.account(body.get("DepositToAccountRef"), "DepositToAccountRef")
    applied = Decimal("0")
    invoices = []
    for line in body.get("Line", []):
        for linked in line.get("LinkedTxn", []):
            invoice = company.get("Invoice", linked.get("TxnId"))
            if linked.get("TxnType") != "Invoice" or invoice is None:
                raise Fault(400, "610", "Object Not Found",
                            f"Object Not Found : Something you're trying to use has been made inactive or deleted: "
                            f"Invoice {linked.get('TxnId')}")
            amount = _money(line["Amount"])
            if invoice["CustomerRef"]["value"] != customer["Id"]:
                raise Fault(400, "6000", "A business validation error has occurred while processing your request",
                            "Business Validation Error: the invoice belongs to another customer")
            if amount > _money(invoice["Balance"]):
                raise Fault(400, "6000", "A business validation error has occurred while processing your request",
                            f"Business Validation Error: payment of {amount} exceeds the balance of invoice "
                            f"{invoice['DocNumber']}")
            invoices.append((invoice, amount))
            applied += amount
    if applied > total:
        raise Fault(400, "6000", "A business validation error has occurred while processing your request",
                    "Business Validation Error: the amount applied exceeds the payment total")
    for invoice, amount in invoices:
        invoice["Balance"] = _money(invoice["Balance"]) - amount
    ar = next(a for a in company.entities["Account"].values() if a["AccountType"] == "Accounts Receivable")
    company.post(deposit_to, total)
    company.post(ar, -total)
    return company.add("Payment", {**body, "TotalAmt": total, "UnappliedAmt": total - applied,
                                   "ProcessPayment": False})


def create_deposit(company: Company, body: dict[str, Any]) -> dict[str, Any]:
    _check_fields("Deposit", body)
    _check_period(company, body)
    bank = company.account(body.get("DepositToAccountRef"), "DepositToAccountRef")
    total = Decimal("0")
    postings: list[tuple[dict[str, Any], Decimal]] = []
    deposited: list[dict[str, Any]] = []
    for line in body.get("Line", []):
        amount = _money(line["Amount"])
        total += amount
        linked = line.get("LinkedTxn") or []
        if linked:
            payment = company.get("Payment", linked[0].get("TxnId")) if linked[0].get("TxnType") == "Payment" else None
            if payment is None:
                raise Fault(400, "610", "Object Not Found", f"Object Not Found : Payment {linked[0].get('TxnId')}")
            if payment.get("_deposit_id"):
                raise Fault(400, "6540", "Deposited Transaction cannot be changed",
                            "This transaction has been deposited. If you want to change or delete it, you must "
                            "first edit the deposit it appears on and remove it.")
            if amount != _money(payment["TotalAmt"]):
                raise Fault(400, "6000", "A business validation error has occurred while processing your request",
                            "Business Validation Error: a linked payment must be deposited in full")
            postings.append((company.account(payment["DepositToAccountRef"], "LinkedTxn"), -amount))
            deposited.append(payment)
        else:
            detail = line.get("DepositLineDetail") or {}
            postings.append((company.account(detail.get("AccountRef"), "DepositLineDetail.AccountRef"), -amount))
    if "TotalAmt" in body and _money(body["TotalAmt"]) != total:
        raise Fault(400, "6000", "A business validation error has occurred while processing your request",
                    "Business Validation Error: TotalAmt does not equal the sum of the lines")
    company.post(bank, total)
    for account, debit in postings:
        company.post(account, debit)
    deposit = company.add("Deposit", {**body, "TotalAmt": total})
    for payment in deposited:
        payment["_deposit_id"] = deposit["Id"]
    return deposit


def _receipt(company: Company, entity: str, body: dict[str, Any], direction: int) -> dict[str, Any]:
    """A SalesReceipt (direction +1: money into DepositToAccount, the items' income credited) or a
    RefundReceipt (-1: money out of it, the income debited): the same fields, mirror-image postings."""
    _check_fields(entity, body)
    _check_period(company, body)
    account = company.account(body.get("DepositToAccountRef"), "DepositToAccountRef")
    total = Decimal("0")
    for line in body.get("Line", []):
        item = company.get("Item", ((line.get("SalesItemLineDetail") or {}).get("ItemRef") or {}).get("value"))
        if item is None:
            raise Fault(400, "2500", "Invalid Reference Id", "Invalid Reference Id : Item not found", element="ItemRef")
        amount = _money(line["Amount"])
        company.post(company.account(item["IncomeAccountRef"], "IncomeAccountRef"), -direction * amount)
        total += amount
    company.post(account, direction * total)
    return company.add(entity, {**body, "TotalAmt": total, "Balance": Decimal("0")})


def create_refund_receipt(company: Company, body: dict[str, Any]) -> dict[str, Any]:
    return _receipt(company, "RefundReceipt", body, -1)


def create_sales_receipt(company: Company, body: dict[str, Any]) -> dict[str, Any]:
    return _receipt(company, "SalesReceipt", body, +1)


def create_journal_entry(company: Company, body: dict[str, Any]) -> dict[str, Any]:
    """A manual JournalEntry (Intuit's shape: lines with `JournalEntryLineDetail.PostingType` Debit or
    Credit and an `AccountRef`); debits must equal credits, as QuickBooks insists."""
    _check_fields("JournalEntry", body)
    _check_period(company, body)
    postings, balance = [], Decimal("0")
    for line in body.get("Line", []):
        detail = line.get("JournalEntryLineDetail") or {}
        sign = {"Debit": 1, "Credit": -1}.get(detail.get("PostingType"))
        if sign is None:
            raise Fault(400, "2020", "Required param missing, need to supply the required value for the API",
                        "Required parameter Line.JournalEntryLineDetail.PostingType is missing in the request")
        amount = sign * _money(line["Amount"])
        postings.append((company.account(detail.get("AccountRef"), "JournalEntryLineDetail.AccountRef"), amount))
        balance += amount
    if balance != 0 or not postings:
        raise Fault(400, "6000", "A business validation error has occurred while processing your request",
                    "Business Validation Error: Your Journal Entry is not in balance.")
    for account, debit in postings:
        company.post(account, debit)
    return company.add("JournalEntry", {**body, "TotalAmt": sum(a for _, a in postings if a > 0)})


WRITERS = {"payment": ("Payment", create_payment), "deposit": ("Deposit", create_deposit),
           "refundreceipt": ("RefundReceipt", create_refund_receipt),
           "salesreceipt": ("SalesReceipt", create_sales_receipt),
           "journalentry": ("JournalEntry", create_journal_entry)}


# --- queries --------------------------------------------------------------------------------------

_QUERY = re.compile(r"^\s*select\s+(?P<what>\*|count\(\*\))\s+from\s+(?P<entity>\w+)"
                    r"(?:\s+where\s+(?P<where>.*?))?"
                    r"(?:\s+orderby\s+\w+(?:\s+(?:asc|desc))?)?"
                    r"(?:\s+startposition\s+(?P<start>\d+))?(?:\s+maxresults\s+(?P<max>\d+))?\s*$", re.I | re.S)
_CONDITION = re.compile(r"^\s*(\w+)\s*(=|in)\s*(.+?)\s*$", re.I)


def run_query(company: Company, query: str) -> dict[str, Any]:
    match = _QUERY.match(query)
    if not match:
        raise Fault(400, "4000", "Error parsing query", f"QueryParserError: Encountered an error parsing: {query}")
    entity = next((e for e in ("Invoice", "Payment", "Deposit", "RefundReceipt", "SalesReceipt", "JournalEntry",
                               "Account", "Customer", "Item")
                   if e.lower() == match["entity"].lower()), None)
    if entity is None:
        raise Fault(400, "4001", "Invalid query", f"QueryValidationError: invalid entity {match['entity']}")
    rows = list(company.entities.get(entity, {}).values())
    for condition in re.split(r"\s+and\s+", match["where"] or "", flags=re.I) if match["where"] else []:
        parsed = _CONDITION.match(condition)
        if not parsed:
            raise Fault(400, "4000", "Error parsing query", f"QueryParserError: {condition}")
        name, op, raw = parsed.groups()
        values = [v.strip().strip("'") for v in raw.strip("()").split(",")] if op.lower() == "in" else [raw.strip("'")]
        rows = [r for r in rows if str(r.get(name, "")) in values]
    if match["what"].lower().startswith("count"):
        return {"QueryResponse": {"totalCount": len(rows)}, "time": _now_iso()}
    start, limit = int(match["start"] or 1), min(int(match["max"] or 100), 1000)
    page = [_public(r) for r in rows[start - 1:start - 1 + limit]]
    response: dict[str, Any] = {"startPosition": start, "maxResults": len(page)}
    if page:
        response[entity] = page
    return {"QueryResponse": response, "time": _now_iso()}


def _public(record: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in record.items() if not k.startswith("_")}


# --- the app --------------------------------------------------------------------------------------

_DECIMAL_MARK = re.compile(r'"__decimal__(-?[0-9.]+)"')


def dumps(body: Any) -> str:
    """JSON with Decimals as exact JSON numbers (as Intuit answers amounts), never through float."""
    def encode(value: Any) -> Any:
        if isinstance(value, Decimal):
            return f"__decimal__{value:f}"
        raise TypeError(type(value))
    return _DECIMAL_MARK.sub(r"\1", json.dumps(body, default=encode))


def _json(status: int, body: dict[str, Any]) -> Response:
    return Response(dumps(body), status_code=status, media_type="application/json")


def create_app(sim: Simulator | None = None) -> FastAPI:
    sim = sim or Simulator()
    app = FastAPI(title="QuickBooks Online simulator")
    app.state.sim = sim

    @app.exception_handler(Fault)
    async def _fault(_request: Request, exc: Fault) -> Response:
        return _json(exc.status, exc.body())

    def _client_ok(request: Request) -> bool:
        expected = base64.b64encode(f"{sim.client_id}:{sim.client_secret}".encode()).decode()
        return request.headers.get("authorization", "") == f"Basic {expected}"

    @app.get("/connect/oauth2")
    async def authorize(client_id: str, redirect_uri: str, response_type: str, scope: str, state: str,
                        realmId: str | None = None) -> Response:  # noqa: N803 (Intuit's name)
        # The consent screen, answered "Connect" at once for the company named by realmId (or the first).
        if client_id != sim.client_id or response_type != "code" or "com.intuit.quickbooks.accounting" not in scope:
            return JSONResponse({"error": "invalid_request"}, status_code=400)
        realm = realmId or next(iter(sim.companies), None) or sim.create_company().realm_id
        code = "qbo-code-" + secrets.token_urlsafe(16)
        sim.codes[code] = (realm, redirect_uri)
        return RedirectResponse(f"{redirect_uri}?{urlencode({'code': code, 'state': state, 'realmId': realm})}", 302)

    @app.post("/oauth2/v1/tokens/bearer")
    async def token(request: Request) -> Response:
        if not _client_ok(request):
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        form = await request.form()
        grant = form.get("grant_type")
        if grant == "authorization_code":
            realm, redirect_uri = sim.codes.pop(str(form.get("code")), (None, None))
            if realm is None or redirect_uri != form.get("redirect_uri"):
                return JSONResponse({"error": "invalid_grant"}, status_code=400)
            return JSONResponse(sim.issue_tokens(realm))
        if grant == "refresh_token":
            # Rotation: the presented refresh token is spent; the answer carries its successor.
            realm = sim.refresh_tokens.pop(str(form.get("refresh_token")), None)
            if realm is None:
                return JSONResponse({"error": "invalid_grant"}, status_code=400)
            return JSONResponse(sim.issue_tokens(realm))
        return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)

    @app.post("/oauth2/v1/tokens/revoke")
    async def revoke(request: Request) -> Response:
        if not _client_ok(request):
            return JSONResponse({"error": "invalid_client"}, status_code=401)
        body = await request.json()
        realm = sim.refresh_tokens.get(body.get("token", "")) or sim.access_tokens.get(body.get("token", ""), (None,))[0]
        if realm:
            sim.revoke(realm)
        return Response(status_code=200)

    def _authorize(request: Request, realm_id: str) -> Company:
        company = sim.company(realm_id)
        company.calls = [t for t in company.calls if t > time.time() - 60]
        if company.throttle_next > 0 or len(company.calls) >= RATE_LIMIT_PER_MINUTE:
            company.throttle_next = max(company.throttle_next - 1, 0)
            raise Fault(429, "3001", "message=ThrottleExceeded; errorCode=003001; statusCode=429",
                        "The request exceeded the maximum number of requests allowed.", "SERVICE")
        company.calls.append(time.time())
        header = request.headers.get("authorization", "")
        realm, expiry = sim.access_tokens.get(header.removeprefix("Bearer "), (None, 0.0))
        if realm != realm_id or expiry < time.time():
            raise Fault(401, "3200", "message=AuthenticationFailed; errorCode=003200; statusCode=401",
                        "Token expired or invalid", "AUTHENTICATION")
        return company

    @app.get("/v3/company/{realm_id}/query")
    async def query(request: Request, realm_id: str, query: str, minorversion: int | None = None) -> Response:
        company = _authorize(request, realm_id)
        return _json(200, run_query(company, query))

    @app.get("/v3/company/{realm_id}/{entity}/{entity_id}")
    async def read(request: Request, realm_id: str, entity: str, entity_id: str,
                   minorversion: int | None = None) -> Response:
        company = _authorize(request, realm_id)
        name = {"invoice": "Invoice", "account": "Account", **{k: v[0] for k, v in WRITERS.items()}}.get(entity.lower())
        record = company.get(name, entity_id) if name else None
        if record is None:
            raise Fault(400, "610", "Object Not Found", f"Object Not Found : {entity} {entity_id}")
        return _json(200, {name: _public(record), "time": _now_iso()})

    @app.post("/v3/company/{realm_id}/{entity}")
    async def write(request: Request, realm_id: str, entity: str, requestid: str | None = None,
                    minorversion: int | None = None) -> Response:
        company = _authorize(request, realm_id)
        if entity.lower() not in WRITERS:
            raise Fault(400, "4001", "Unsupported Operation", f"Operation {entity} is not supported")
        key = f"{entity.lower()}:{requestid}" if requestid else None
        if key and key in company.responses:
            status, body = company.responses[key]
        else:
            raw = await request.body()
            payload = json.loads(raw, parse_float=Decimal)
            company.requests.append({"entity": WRITERS[entity.lower()][0], "requestid": requestid,
                                     "minorversion": minorversion, "body": json.loads(raw)})
            name, writer = WRITERS[entity.lower()]
            try:
                status, body = 200, {name: _public(writer(company, payload)), "time": _now_iso()}
            except Fault as fault:
                status, body = fault.status, fault.body()
            if key and status < 400:
                # Only an applied write is remembered: a refused one changed nothing and may be retried.
                company.responses[key] = (status, body)
        if company.lose_next_response > 0:
            company.lose_next_response -= 1
            await asyncio.sleep(company.lose_delay_s)
        return _json(status, body)

    # --- control plane for tests and the demo (not part of Intuit's API) -------------------------

    @app.post("/_sim/companies")
    async def sim_company(request: Request) -> Response:
        body = await request.json() if await request.body() else {}
        company = sim.create_company(body.get("name", "Demo MSP LLC"), body.get("realm_id"))
        return _json(200, _company_view(company))

    @app.get("/_sim/companies/{realm_id}")
    async def sim_state(realm_id: str) -> Response:
        return _json(200, _company_view(sim.company(realm_id)))

    @app.post("/_sim/companies/{realm_id}/invoices")
    async def sim_invoice(realm_id: str, request: Request) -> Response:
        company = sim.company(realm_id)
        body = json.loads(await request.body(), parse_float=Decimal)
        customer = next((c for c in company.entities.get("Customer", {}).values()
                         if c["DisplayName"] == body["customer"]), None)
        customer = customer or company.add("Customer", {"DisplayName": body["customer"], "Active": True})
        amount = _money(body["amount"])
        invoice = company.add("Invoice", {
            "DocNumber": body["doc_number"], "TxnDate": body.get("txn_date", date.today().isoformat()),
            "CustomerRef": {"value": customer["Id"], "name": customer["DisplayName"]},
            "TotalAmt": amount, "Balance": amount,
            "Line": [{"Amount": amount, "DetailType": "SalesItemLineDetail",
                      "SalesItemLineDetail": {"ItemRef": {"value": "1"}}}]})
        company.post(next(a for a in company.entities["Account"].values() if a["AccountType"] == "Accounts Receivable"), amount)
        company.post(sim.account_named(company, "Sales of Product Income"), -amount)
        return _json(200, {"Invoice": invoice})

    @app.post("/_sim/companies/{realm_id}/journal-entries")
    async def sim_journal_entry(realm_id: str, request: Request) -> Response:
        company = sim.company(realm_id)
        entry = create_journal_entry(company, json.loads(await request.body(), parse_float=Decimal))
        return _json(200, {"JournalEntry": _public(entry)})

    @app.post("/_sim/companies/{realm_id}/faults")
    async def sim_faults(realm_id: str, request: Request) -> Response:
        company = sim.company(realm_id)
        body = await request.json()
        company.throttle_next += int(body.get("throttle", 0))
        company.lose_next_response += int(body.get("lose_responses", 0))
        company.lose_delay_s = float(body.get("lose_delay_s", company.lose_delay_s))
        if "closing_date" in body:
            company.closing_date = date.fromisoformat(body["closing_date"]) if body["closing_date"] else None
        if body.get("revoke"):
            sim.revoke(realm_id)
        if body.get("expire_access_tokens"):
            sim.expire_access_tokens(realm_id)
        return _json(200, {"ok": True})

    @app.get("/_sim/companies/{realm_id}/requests")
    async def sim_requests(realm_id: str) -> Response:
        return _json(200, {"requests": sim.company(realm_id).requests})

    return app


def _company_view(company: Company) -> dict[str, Any]:
    return {"realm_id": company.realm_id, "name": company.name,
            "closing_date": company.closing_date.isoformat() if company.closing_date else None,
            "entities": {name: [_public(r) for r in rows.values()] for name, rows in company.entities.items()}}


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8210)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    sim = Simulator()
    sim.create_company("Demo MSP LLC", realm_id="9130350000000001")
    uvicorn.run(create_app(sim), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
