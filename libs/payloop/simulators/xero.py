"""A stateful Xero simulator (Accounting API 2.0 and the OAuth 2.0 identity service) for `payloop dev` and tests.

Follows Xero's documented formats (`../shared/specs/xero/`): the authorization code and refresh-token
grants at `/connect/token` with refresh-token rotation, `/connections` listing the organisations a
grant reaches, every accounting call naming its organisation in the `xero-tenant-id` header, writes
honouring `Idempotency-Key` (a repeated key of an applied write answers the first response and
changes nothing), `where` filters and `page` paging, `ValidationException` bodies, lock dates,
and the per-organisation limit of 60 calls a minute (429 with `Retry-After`).

Write bodies are held to the request schemas of Xero's OpenAPI document, strictly: a property the
schema does not declare is refused like a malformed value, so what we send is what Xero documents.
The document is read from `PAYLOOP_XERO_SPEC` or `specs/xero/xero_accounting.yaml` of the repository above this
checkout; without it writes are checked by the simulator's own rules only.

Accounts keep balances (debits positive for asset and expense accounts), dated, so a test can check that
the clearing account returns to zero and `GET /Reports/BankSummary` answers each bank account's opening and
closing balance for a date range (needs the `accounting.reports.read` scope, as Xero's does). Control
endpoints for tests and demos live under `/_sim` (among them a manual journal, what an accountant
typing into Xero's UI would add).

Run: `python -m payloop.simulators.xero --port 8211`.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import copy
import functools
import json
import os
import re
import secrets
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

DEFAULT_CLIENT_ID = "payloop-dev"
DEFAULT_CLIENT_SECRET = "payloop-dev-secret"
ACCESS_TTL_S = 1800  # Xero access tokens live 30 minutes
RATE_LIMIT_PER_MINUTE = 60  # per organisation (Xero's "minute limit")
DAILY_LIMIT = 5000
PAGE_SIZE = 100
DEMO_TENANT_ID = "5b3c2e7a-0d8f-4c1e-9a6b-3f2d1c0b9a87"
DEBIT_NORMAL = {"BANK", "CURRENT", "FIXED", "INVENTORY", "NONCURRENT", "PREPAYMENT", "EXPENSE", "OVERHEADS",
                "DIRECTCOSTS", "DEPRECIATN"}
# The request schema of each write, as the OpenAPI document names them.
REQUEST_SCHEMAS = {("PUT", "Payments"): "Payments", ("POST", "Payments"): "Payment",
                   ("PUT", "BankTransactions"): "BankTransactions", ("POST", "BankTransactions"): "BankTransactions",
                   ("PUT", "BankTransfers"): "BankTransfers"}


class XeroError(Exception):
    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None):
        super().__init__(str(body))
        self.status, self.body, self.headers = status, body, headers or {}


def validation_error(message: str, element: dict[str, Any] | None = None) -> XeroError:
    return XeroError(400, {"ErrorNumber": 10, "Type": "ValidationException",
                           "Message": "A validation exception occurred",
                           "Elements": [{**(element or {}), "ValidationErrors": [{"Message": message}]}]})


def _problem(status: int, title: str, detail: str) -> XeroError:
    # Xero's identity layer answers 401/403 as RFC 7807 problem documents.
    return XeroError(status, {"Type": None, "Title": title, "Status": status, "Detail": detail,
                              "Instance": str(uuid.uuid4()), "Extensions": {}})


def _ms_date(day: date) -> str:
    """Xero's JSON dates: `/Date(<ms since epoch>+0000)/`."""
    return f"/Date({int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp() * 1000)}+0000)/"


def _now_ms() -> str:
    return f"/Date({int(time.time() * 1000)}+0000)/"


def _money(value: Any) -> Decimal:
    return value if isinstance(value, Decimal) else Decimal(str(value))


# --- the OpenAPI document as a request validator -----------------------------------------------------

def find_spec() -> Path | None:
    configured = os.environ.get("PAYLOOP_XERO_SPEC")
    if configured:
        return Path(configured) if Path(configured).exists() else None
    for parent in Path(__file__).resolve().parents:
        for candidate in (parent / "specs" / "xero" / "xero_accounting.yaml",
                          parent / "shared" / "specs" / "xero" / "xero_accounting.yaml"):
            if candidate.exists():
                return candidate
    return None


def _strict(node: Any) -> Any:
    """The schema with every declared object closed: Xero ignores unknown properties, we want to know."""
    if isinstance(node, dict):
        closed = {key: _strict(value) for key, value in node.items()}
        if "properties" in node and "additionalProperties" not in node:
            closed["additionalProperties"] = False
        return closed
    if isinstance(node, list):
        return [_strict(value) for value in node]
    return node


@functools.lru_cache(maxsize=4)
def spec_validator(path: Path) -> SpecValidator:
    return SpecValidator(path)


class SpecValidator:
    """Request bodies checked against `components.schemas` of Xero's accounting OpenAPI document."""

    def __init__(self, path: Path):
        import jsonschema
        import yaml

        with path.open() as handle:
            document = yaml.load(handle, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        self.path = path
        self._components = _strict(document["components"])
        self._jsonschema = jsonschema
        self._validators: dict[str, Any] = {}

    def errors(self, schema: str, body: Any) -> list[str]:
        if schema not in self._validators:
            self._validators[schema] = self._jsonschema.Draft4Validator(
                {"$ref": f"#/components/schemas/{schema}", "components": self._components},
                format_checker=self._jsonschema.FormatChecker(formats=["uuid"]))
        found = self._validators[schema].iter_errors(body)
        return [f"{'/'.join(str(p) for p in error.absolute_path) or '(body)'}: {error.message}" for error in found]


# --- state ---------------------------------------------------------------------------------------

@dataclass
class Organisation:
    tenant_id: str
    name: str
    base_currency: str = "USD"
    accounts: dict[str, dict[str, Any]] = field(default_factory=dict)
    contacts: dict[str, dict[str, Any]] = field(default_factory=dict)
    invoices: dict[str, dict[str, Any]] = field(default_factory=dict)
    payments: dict[str, dict[str, Any]] = field(default_factory=dict)
    bank_transactions: dict[str, dict[str, Any]] = field(default_factory=dict)
    bank_transfers: dict[str, dict[str, Any]] = field(default_factory=dict)
    balances: dict[str, Decimal] = field(default_factory=dict)  # AccountID -> balance (debit positive)
    postings: list[tuple[date, str, Decimal]] = field(default_factory=list)  # (day, AccountID, debit)
    manual_journals: dict[str, dict[str, Any]] = field(default_factory=dict)
    lock_date: date | None = None
    responses: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)  # Idempotency-Key -> answer
    requests: list[dict[str, Any]] = field(default_factory=list)
    calls: list[float] = field(default_factory=list)
    day_calls: int = 0
    rate_limit_per_minute: int = RATE_LIMIT_PER_MINUTE
    throttle_next: int = 0
    throttle_retry_after_s: int = 1
    lose_next_response: int = 0  # apply the write, then answer too late for the caller
    lose_delay_s: float = 5.0

    def add_account(self, code: str, name: str, type_: str, **extra: Any) -> dict[str, Any]:
        account = {"AccountID": str(uuid.uuid4()), "Code": code, "Name": name, "Type": type_, "Status": "ACTIVE",
                   "Class": _class(type_), "CurrencyCode": self.base_currency, "UpdatedDateUTC": _now_ms(), **extra}
        self.accounts[account["AccountID"]] = account
        self.balances[account["AccountID"]] = Decimal("0")
        return account

    def account(self, ref: dict[str, Any] | None, element: str) -> dict[str, Any]:
        ref = ref or {}
        found = self.accounts.get(str(ref.get("AccountID"))) or next(
            (a for a in self.accounts.values() if ref.get("Code") and a.get("Code") == ref.get("Code")), None)
        if found is None or found["Status"] != "ACTIVE":
            raise validation_error(f"{element}: Account could not be found")
        return found

    def account_named(self, name: str) -> dict[str, Any]:
        return next(a for a in self.accounts.values() if a["Name"] == name)

    def receivable(self) -> dict[str, Any]:
        return next(a for a in self.accounts.values() if a.get("SystemAccount") == "DEBTORS")

    def post(self, account: dict[str, Any], debit: Decimal, day: date) -> None:
        sign = 1 if account["Type"] in DEBIT_NORMAL else -1
        self.balances[account["AccountID"]] += sign * debit
        self.postings.append((day, account["AccountID"], debit))

    def debits(self, account_id: str, start: date, end: date) -> tuple[Decimal, Decimal]:
        """Debits and credits (both positive) of one account from start to end, inclusive."""
        moves = [debit for day, account, debit in self.postings if account == account_id and start <= day <= end]
        return sum((m for m in moves if m > 0), Decimal("0")), -sum((m for m in moves if m < 0), Decimal("0"))

    def contact(self, ref: dict[str, Any] | None) -> dict[str, Any]:
        """A contact by ContactID, or by Name (created when new, as Xero does for transactions)."""
        ref = ref or {}
        if ref.get("ContactID"):
            found = self.contacts.get(str(ref["ContactID"]))
            if found is None:
                raise validation_error("The contact could not be found")
            return found
        if not ref.get("Name"):
            raise validation_error("A Contact must be specified for this type of transaction")
        found = next((c for c in self.contacts.values() if c["Name"] == ref["Name"]), None)
        if found is None:
            found = {"ContactID": str(uuid.uuid4()), "Name": ref["Name"], "ContactStatus": "ACTIVE",
                     "IsCustomer": False, "IsSupplier": False, "UpdatedDateUTC": _now_ms()}
            self.contacts[found["ContactID"]] = found
        return found

    def check_lock(self, day: date) -> None:
        if self.lock_date and day <= self.lock_date:
            raise validation_error("The document date cannot be before the period lock date, currently set at "
                                   f"{self.lock_date.strftime('%d-%b-%Y')}")


def _class(account_type: str) -> str:
    if account_type in ("EXPENSE", "OVERHEADS", "DIRECTCOSTS", "DEPRECIATN"):
        return "EXPENSE"
    if account_type in ("REVENUE", "SALES", "OTHERINCOME"):
        return "REVENUE"
    if account_type in ("CURRLIAB", "LIABILITY", "TERMLIAB"):
        return "LIABILITY"
    return "EQUITY" if account_type == "EQUITY" else "ASSET"


@dataclass
class Grant:
    """One consent: the organisations it reaches and its live tokens."""

    id: str
    tenant_ids: list[str]
    scope: str
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat())


@dataclass
class Simulator:
    client_id: str = DEFAULT_CLIENT_ID
    client_secret: str = DEFAULT_CLIENT_SECRET
    organisations: dict[str, Organisation] = field(default_factory=dict)
    grants: dict[str, Grant] = field(default_factory=dict)
    codes: dict[str, tuple[str, str]] = field(default_factory=dict)  # code -> (grant id, redirect_uri)
    access_tokens: dict[str, tuple[str, float]] = field(default_factory=dict)  # token -> (grant id, expiry)
    refresh_tokens: dict[str, str] = field(default_factory=dict)  # live refresh token -> grant id
    validator: SpecValidator | None = None

    def create_organisation(self, name: str = "Demo MSP Ltd", tenant_id: str | None = None) -> Organisation:
        org = Organisation(tenant_id=tenant_id or str(uuid.uuid4()), name=name)
        org.add_account("090", "Business Bank Account", "BANK", BankAccountType="BANK", BankAccountNumber="12-3456-7890")
        org.add_account("091", "Stripe Clearing", "BANK", BankAccountType="BANK", BankAccountNumber="STRIPE")
        org.add_account("610", "Accounts Receivable", "CURRENT", SystemAccount="DEBTORS")
        org.add_account("200", "Sales", "REVENUE")
        org.add_account("260", "Refunds and Chargebacks", "REVENUE")
        org.add_account("270", "Card Convenience Fees", "OTHERINCOME")
        org.add_account("404", "Bank Fees", "OVERHEADS")
        org.add_account("405", "Merchant Processing Fees", "EXPENSE")
        self.organisations[org.tenant_id] = org
        return org

    def organisation(self, tenant_id: str) -> Organisation:
        if tenant_id not in self.organisations:
            raise XeroError(404, {"Title": "Not Found", "Status": 404, "Detail": f"no organisation {tenant_id}"})
        return self.organisations[tenant_id]

    def issue_tokens(self, grant: Grant) -> dict[str, Any]:
        access = "xero-at-" + secrets.token_urlsafe(24)
        refresh = "xero-rt-" + secrets.token_urlsafe(24)
        self.access_tokens[access] = (grant.id, time.time() + ACCESS_TTL_S)
        self.refresh_tokens[refresh] = grant.id
        return {"id_token": "xero-id-" + secrets.token_urlsafe(12), "access_token": access, "expires_in": ACCESS_TTL_S,
                "token_type": "Bearer", "refresh_token": refresh, "scope": grant.scope}

    def revoke(self, tenant_id: str) -> None:
        """What disconnecting the app in Xero does: every token reaching the organisation stops working."""
        grants = {g.id for g in self.grants.values() if tenant_id in g.tenant_ids}
        self.access_tokens = {t: v for t, v in self.access_tokens.items() if v[0] not in grants}
        self.refresh_tokens = {t: g for t, g in self.refresh_tokens.items() if g not in grants}

    def expire_access_tokens(self, tenant_id: str) -> None:
        grants = {g.id for g in self.grants.values() if tenant_id in g.tenant_ids}
        self.access_tokens = {t: (g, 0.0 if g in grants else e) for t, (g, e) in self.access_tokens.items()}


# --- writes ---------------------------------------------------------------------------------------

def _day(record: dict[str, Any]) -> date:
    raw = record.get("Date")
    try:
        return date.fromisoformat(str(raw)[:10]) if raw else date.today()
    except ValueError:
        raise validation_error(f"The date {raw!r} is not valid") from None


def create_payment(org: Organisation, record: dict[str, Any]) -> dict[str, Any]:
    invoice_ref = record.get("Invoice") or {}
    invoice = org.invoices.get(str(invoice_ref.get("InvoiceID"))) or next(
        (i for i in org.invoices.values() if invoice_ref.get("InvoiceNumber")
         and i["InvoiceNumber"] == invoice_ref.get("InvoiceNumber")), None)
    if invoice is None:
        raise validation_error("Invoice could not be found", {"Invoice": invoice_ref})
    if invoice["Status"] != "AUTHORISED":
        raise validation_error("Payments can only be made against Authorised documents")
    account = org.account(record.get("Account"), "Account")
    if account["Type"] != "BANK" and not account.get("EnablePaymentsToAccount"):
        raise validation_error("Account type is invalid for making a payment to/from")
    amount = _money(record.get("Amount", 0))
    if amount <= 0:
        raise validation_error("Payment amount must be greater than zero")
    if amount > invoice["AmountDue"]:
        raise validation_error("Payment amount exceeds the amount outstanding on this document")
    day = _day(record)
    org.check_lock(day)
    invoice["AmountDue"] -= amount
    invoice["AmountPaid"] += amount
    if invoice["AmountDue"] == 0:
        invoice["Status"], invoice["FullyPaidOnDate"] = "PAID", _ms_date(day)
    org.post(account, amount, day)
    org.post(org.receivable(), -amount, day)
    payment = {"PaymentID": str(uuid.uuid4()), "Date": _ms_date(day), "Amount": amount, "BankAmount": amount,
               "CurrencyRate": Decimal("1"), "Reference": record.get("Reference", ""), "Status": "AUTHORISED",
               "PaymentType": "ACCRECPAYMENT", "IsReconciled": False, "HasAccount": True, "UpdatedDateUTC": _now_ms(),
               "Account": {"AccountID": account["AccountID"], "Code": account["Code"], "Name": account["Name"]},
               "Invoice": {"InvoiceID": invoice["InvoiceID"], "InvoiceNumber": invoice["InvoiceNumber"],
                           "Type": invoice["Type"], "Contact": invoice["Contact"]}}
    invoice["Payments"].append({"PaymentID": payment["PaymentID"], "Amount": amount, "Date": payment["Date"]})
    org.payments[payment["PaymentID"]] = payment
    return payment


def create_bank_transaction(org: Organisation, record: dict[str, Any]) -> dict[str, Any]:
    kind = record.get("Type")
    if kind not in ("RECEIVE", "SPEND", "RECEIVE-OVERPAYMENT", "SPEND-OVERPAYMENT"):
        raise validation_error(f"Bank transactions of type {kind} are not supported here")
    bank = org.account(record.get("BankAccount"), "BankAccount")
    if bank["Type"] != "BANK":
        raise validation_error("The BankAccount must be an account of type BANK")
    if record.get("LineAmountTypes", "Exclusive") not in ("NoTax", "Exclusive", "Inclusive"):
        raise validation_error("LineAmountTypes is not valid")
    contact = org.contact(record.get("Contact"))
    day = _day(record)
    overpayment = kind.endswith("OVERPAYMENT")
    lines, total = [], Decimal("0")
    for line in record.get("LineItems") or []:
        amount = _money(line["LineAmount"]) if "LineAmount" in line else \
            _money(line.get("Quantity", 1)) * _money(line.get("UnitAmount", 0))
        if overpayment:
            if line.get("AccountCode") or line.get("AccountID"):
                raise validation_error("Overpayment line items must not specify an account")
            account = org.receivable()
        else:
            account = org.account({"Code": line.get("AccountCode"), "AccountID": line.get("AccountID")},
                                  "LineItems.AccountCode")
            if account["Type"] == "BANK":
                raise validation_error("A bank account cannot be used on a line item; use a bank transfer")
        lines.append((account, amount, line))
        total += amount
    if not lines or total <= 0:
        raise validation_error("The total of a bank transaction must be greater than zero")
    org.check_lock(day)
    receive = kind.startswith("RECEIVE")
    org.post(bank, total if receive else -total, day)
    for account, amount, _ in lines:
        org.post(account, -amount if receive else amount, day)
    transaction = {
        "BankTransactionID": str(uuid.uuid4()), "Type": kind, "Status": "AUTHORISED", "Date": _ms_date(day),
        "Reference": record.get("Reference", ""), "CurrencyCode": record.get("CurrencyCode", org.base_currency),
        "LineAmountTypes": record.get("LineAmountTypes", "Exclusive"), "IsReconciled": False,
        "Contact": {"ContactID": contact["ContactID"], "Name": contact["Name"]},
        "BankAccount": {"AccountID": bank["AccountID"], "Code": bank["Code"], "Name": bank["Name"]},
        "LineItems": [{**line, "LineItemID": str(uuid.uuid4()), "LineAmount": amount,
                       **({"AccountCode": account["Code"]} if not overpayment else {})}
                      for account, amount, line in lines],
        "SubTotal": total, "TotalTax": Decimal("0"), "Total": total, "UpdatedDateUTC": _now_ms()}
    if overpayment:
        transaction["OverpaymentID"] = str(uuid.uuid4())
    org.bank_transactions[transaction["BankTransactionID"]] = transaction
    return transaction


def create_bank_transfer(org: Organisation, record: dict[str, Any]) -> dict[str, Any]:
    source = org.account(record.get("FromBankAccount"), "FromBankAccount")
    target = org.account(record.get("ToBankAccount"), "ToBankAccount")
    if source["Type"] != "BANK" or target["Type"] != "BANK":
        raise validation_error("Bank transfers can only be made between accounts of type BANK")
    if source["AccountID"] == target["AccountID"]:
        raise validation_error("The From and To bank accounts must be different")
    amount = _money(record.get("Amount", 0))
    if amount <= 0:
        raise validation_error("The amount of a bank transfer must be greater than zero")
    day = _day(record)
    org.check_lock(day)
    org.post(source, -amount, day)
    org.post(target, amount, day)
    transfer = {"BankTransferID": str(uuid.uuid4()), "Date": _ms_date(day), "Amount": amount,
                "CurrencyRate": Decimal("1"), "Reference": record.get("Reference", ""), "Status": "AUTHORISED",
                "FromBankTransactionID": str(uuid.uuid4()), "ToBankTransactionID": str(uuid.uuid4()),
                "FromIsReconciled": False, "ToIsReconciled": False, "HasAttachments": False,
                "CreatedDateUTC": _now_ms(),
                "FromBankAccount": {"AccountID": source["AccountID"], "Code": source["Code"], "Name": source["Name"]},
                "ToBankAccount": {"AccountID": target["AccountID"], "Code": target["Code"], "Name": target["Name"]}}
    org.bank_transfers[transfer["BankTransferID"]] = transfer
    return transfer


# Collection -> (record writer, id field, where the records live).
WRITERS = {"Payments": (create_payment, "PaymentID", "payments"),
           "BankTransactions": (create_bank_transaction, "BankTransactionID", "bank_transactions"),
           "BankTransfers": (create_bank_transfer, "BankTransferID", "bank_transfers")}
READABLE = {"Accounts": ("AccountID", "accounts"), "Contacts": ("ContactID", "contacts"),
            "Invoices": ("InvoiceID", "invoices"), "ManualJournals": ("ManualJournalID", "manual_journals"),
            **{k: (v[1], v[2]) for k, v in WRITERS.items()}}
PAGED = {"Invoices", "Payments", "BankTransactions", "Contacts"}


# --- reads ----------------------------------------------------------------------------------------

def _amount_cell(value: Decimal, account_id: str | None = None) -> dict[str, Any]:
    cell: dict[str, Any] = {"Value": f"{value:.2f}"}
    if account_id:
        cell["Attributes"] = [{"Value": account_id, "Id": "account"}]
    return cell


def bank_summary(org: Organisation, start: date, end: date) -> dict[str, Any]:
    """The Bank Summary report (`ReportWithRows`): per bank account, the opening balance on `start`,
    cash received and spent up to `end`, the closing balance; a summary row of totals."""
    rows, totals = [], [Decimal("0")] * 4
    for account in (a for a in org.accounts.values() if a["Type"] == "BANK"):
        before_in, before_out = org.debits(account["AccountID"], date.min, start - timedelta(days=1))
        received, spent = org.debits(account["AccountID"], start, end)
        figures = [before_in - before_out, received, spent, before_in - before_out + received - spent]
        totals = [t + f for t, f in zip(totals, figures)]
        rows.append({"RowType": "Row", "Cells": [
            {"Value": account["Name"], "Attributes": [{"Value": account["AccountID"], "Id": "accountID"}]},
            *(_amount_cell(f, account["AccountID"] if n in (1, 2) else None) for n, f in enumerate(figures))]})
    rows.append({"RowType": "SummaryRow", "Cells": [{"Value": "Total"}, *(_amount_cell(t) for t in totals)]})
    return {"ReportID": "BankSummary", "ReportName": "Bank Summary", "ReportType": "BankSummary",
            "ReportTitles": ["Bank Summary", org.name, f"From {start:%d %B %Y} to {end:%d %B %Y}"],
            "ReportDate": f"{date.today():%d %B %Y}", "UpdatedDateUTC": _now_ms(), "Fields": [],
            "Rows": [{"RowType": "Header", "Cells": [{"Value": "Bank Accounts"}, {"Value": "Opening Balance"},
                                                      {"Value": "Cash Received"}, {"Value": "Cash Spent"},
                                                      {"Value": "Closing Balance"}]},
                     {"RowType": "Section", "Title": "", "Rows": rows}]}


_CONDITION = re.compile(r'^\s*(?P<field>[A-Za-z]+(?:\.[A-Za-z]+)*)\s*(?P<op>==|!=)\s*'
                        r'(?:"(?P<text>[^"]*)"|Guid\("(?P<guid>[^"]*)"\)|(?P<bare>[A-Za-z0-9.]+))\s*$')


def _where(rows: list[dict[str, Any]], where: str | None) -> list[dict[str, Any]]:
    """Xero's `where` filter, the subset we need: `Field=="text"`, `Field.Sub==Guid("...")`, AND."""
    if not where:
        return rows
    for condition in re.split(r"\s+(?:AND|&&)\s+", where.strip()):
        parsed = _CONDITION.match(condition)
        if not parsed:
            raise validation_error(f"The where filter {where!r} could not be parsed")
        wanted = parsed["text"] if parsed["text"] is not None else (parsed["guid"] or parsed["bare"])
        path = parsed["field"].split(".")

        def value(row: dict[str, Any], path=path) -> str:
            node: Any = row
            for part in path:
                node = node.get(part) if isinstance(node, dict) else None
            return "" if node is None else str(node)
        rows = [r for r in rows if (value(r) == wanted) == (parsed["op"] == "==")]
    return rows


# --- the app --------------------------------------------------------------------------------------

_DECIMAL_MARK = re.compile(r'"__decimal__(-?[0-9.]+)"')


def dumps(body: Any) -> str:
    """JSON with Decimals as exact JSON numbers (as Xero answers amounts), never through float."""
    def encode(value: Any) -> Any:
        if isinstance(value, Decimal):
            return f"__decimal__{value:f}"
        raise TypeError(type(value))
    return _DECIMAL_MARK.sub(r"\1", json.dumps(body, default=encode))


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(dumps(body), status_code=status, media_type="application/json", headers=headers)


def create_app(sim: Simulator | None = None) -> FastAPI:
    sim = sim or Simulator()
    if sim.validator is None and (spec := find_spec()) is not None:
        sim.validator = spec_validator(spec)
    app = FastAPI(title="Xero simulator")
    app.state.sim = sim

    @app.exception_handler(XeroError)
    async def _error(_request: Request, exc: XeroError) -> Response:
        return _json(exc.status, exc.body, exc.headers)

    def _client_ok(request: Request) -> bool:
        expected = base64.b64encode(f"{sim.client_id}:{sim.client_secret}".encode()).decode()
        return request.headers.get("authorization", "") == f"Basic {expected}"

    # --- identity ---------------------------------------------------------------------------------

    @app.get("/identity/connect/authorize")
    async def authorize(response_type: str, client_id: str, redirect_uri: str, scope: str, state: str,
                        tenantId: str | None = None) -> Response:  # noqa: N803 (sim only: which organisation)
        # The consent screen, answered "Allow access" at once for the organisation named (or every one).
        scopes = scope.split()
        if client_id != sim.client_id or response_type != "code" or not any(s.startswith("accounting.") for s in scopes):
            return JSONResponse({"error": "invalid_request"}, status_code=400)
        tenants = [tenantId] if tenantId else list(sim.organisations) or [sim.create_organisation().tenant_id]
        grant = Grant(id=str(uuid.uuid4()), tenant_ids=tenants, scope=scope)
        sim.grants[grant.id] = grant
        code = "xero-code-" + secrets.token_urlsafe(16)
        sim.codes[code] = (grant.id, redirect_uri)
        return RedirectResponse(f"{redirect_uri}?{urlencode({'code': code, 'scope': scope, 'state': state})}", 302)

    @app.post("/connect/token")
    async def token(request: Request) -> Response:
        if not _client_ok(request):
            return JSONResponse({"error": "invalid_client"}, status_code=400)
        form = await request.form()
        grant_type = form.get("grant_type")
        if grant_type == "authorization_code":
            grant_id, redirect_uri = sim.codes.pop(str(form.get("code")), (None, None))
            if grant_id is None or redirect_uri != form.get("redirect_uri"):
                return JSONResponse({"error": "invalid_grant"}, status_code=400)
            return JSONResponse(sim.issue_tokens(sim.grants[grant_id]))
        if grant_type == "refresh_token":
            # Rotation: the presented refresh token is spent; the answer carries its successor.
            grant_id = sim.refresh_tokens.pop(str(form.get("refresh_token")), None)
            if grant_id is None:
                return JSONResponse({"error": "invalid_grant"}, status_code=400)
            grant = sim.grants[grant_id]
            if "offline_access" not in grant.scope.split():
                return JSONResponse({"error": "invalid_grant"}, status_code=400)
            return JSONResponse(sim.issue_tokens(grant))
        return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)

    @app.post("/connect/revocation")
    async def revocation(request: Request) -> Response:
        if not _client_ok(request):
            return JSONResponse({"error": "invalid_client"}, status_code=400)
        grant_id = sim.refresh_tokens.get(str((await request.form()).get("token")))
        if grant_id:
            for tenant_id in sim.grants[grant_id].tenant_ids:
                sim.revoke(tenant_id)
        return Response(status_code=200)

    def _grant(request: Request) -> Grant:
        grant_id, expiry = sim.access_tokens.get(request.headers.get("authorization", "").removeprefix("Bearer "),
                                                 (None, 0.0))
        if grant_id is None:
            raise _problem(401, "Unauthorized", "AuthenticationUnsuccessful")
        if expiry < time.time():
            raise _problem(401, "Unauthorized", f"TokenExpired: token expired at {datetime.now(UTC):%m/%d/%Y %H:%M:%S}")
        return sim.grants[grant_id]

    @app.get("/connections")
    async def connections(request: Request) -> Response:
        grant = _grant(request)
        return _json(200, [{"id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{grant.id}:{t}")), "authEventId": grant.id,
                            "tenantId": t, "tenantType": "ORGANISATION", "tenantName": sim.organisations[t].name,
                            "createdDateUtc": grant.created, "updatedDateUtc": grant.created}
                           for t in grant.tenant_ids if t in sim.organisations])

    @app.delete("/connections/{connection_id}")
    async def disconnect(request: Request, connection_id: str) -> Response:
        grant = _grant(request)
        kept = [t for t in grant.tenant_ids if str(uuid.uuid5(uuid.NAMESPACE_URL, f"{grant.id}:{t}")) != connection_id]
        if len(kept) == len(grant.tenant_ids):
            return Response(status_code=404)
        grant.tenant_ids = kept
        return Response(status_code=204)

    # --- accounting -------------------------------------------------------------------------------

    def _organisation(request: Request) -> tuple[Organisation, dict[str, str]]:
        """Token, then organisation, then the minute limit, as Xero checks them; returns limit headers."""
        grant = _grant(request)
        tenant_id = request.headers.get("xero-tenant-id", "")
        if tenant_id not in grant.tenant_ids or tenant_id not in sim.organisations:
            raise _problem(403, "Forbidden", "AuthenticationUnsuccessful")
        org = sim.organisations[tenant_id]
        now = time.time()
        org.calls = [t for t in org.calls if t > now - 60]
        if org.throttle_next > 0:
            org.throttle_next -= 1
            raise XeroError(429, {"Title": "Too Many Requests", "Status": 429, "Detail": "Rate limit exceeded"},
                            {"Retry-After": str(org.throttle_retry_after_s), "X-Rate-Limit-Problem": "minute"})
        if len(org.calls) >= org.rate_limit_per_minute:
            retry_after = max(1, int(org.calls[0] + 60 - now) + 1)
            raise XeroError(429, {"Title": "Too Many Requests", "Status": 429, "Detail": "Rate limit exceeded"},
                            {"Retry-After": str(retry_after), "X-Rate-Limit-Problem": "minute"})
        org.calls.append(now)
        org.day_calls += 1
        return org, {"X-MinLimit-Remaining": str(org.rate_limit_per_minute - len(org.calls)),
                     "X-DayLimit-Remaining": str(max(DAILY_LIMIT - org.day_calls, 0))}

    @app.get("/api.xro/2.0/Reports/BankSummary")
    async def report_bank_summary(request: Request, fromDate: date | None = None,  # noqa: N803 (Xero's names)
                                  toDate: date | None = None) -> Response:  # noqa: N803
        if "accounting.reports.read" not in _grant(request).scope.split():
            raise _problem(403, "Forbidden", "The access token does not carry the accounting.reports.read scope")
        org, headers = _organisation(request)
        end = toDate or date.today()
        start = fromDate or end.replace(day=1)
        if start > end:
            raise validation_error("fromDate must not be after toDate")
        return _json(200, {"Id": str(uuid.uuid4()), "Status": "OK", "ProviderName": "Payloop",
                           "DateTimeUTC": _now_ms(), "Reports": [bank_summary(org, start, end)]}, headers)

    @app.get("/api.xro/2.0/{collection}")
    async def read_many(request: Request, collection: str, where: str | None = None, page: int | None = None,
                        pageSize: int | None = None, InvoiceNumbers: str | None = None) -> Response:  # noqa: N803
        org, headers = _organisation(request)
        if collection not in READABLE:
            return _json(404, {"Title": "Not Found", "Status": 404, "Detail": f"no endpoint {collection}"}, headers)
        rows = list(getattr(org, READABLE[collection][1]).values())
        if InvoiceNumbers and collection == "Invoices":
            numbers = set(InvoiceNumbers.split(","))
            rows = [r for r in rows if r["InvoiceNumber"] in numbers]
        rows = _where(rows, where)
        body: dict[str, Any] = {"Id": str(uuid.uuid4()), "Status": "OK", "ProviderName": "Payloop",
                                "DateTimeUTC": _now_ms()}
        if collection in PAGED and page is not None:
            size = min(pageSize or PAGE_SIZE, 1000)
            body["pagination"] = {"page": page, "pageSize": size, "pageCount": -(-len(rows) // size),
                                  "itemCount": len(rows)}
            rows = rows[(page - 1) * size:page * size]
        body[collection] = rows
        return _json(200, body, headers)

    @app.get("/api.xro/2.0/{collection}/{record_id}")
    async def read_one(request: Request, collection: str, record_id: str) -> Response:
        org, headers = _organisation(request)
        record = getattr(org, READABLE[collection][1]).get(record_id) if collection in READABLE else None
        if record is None:
            return Response("The resource you're looking for cannot be found", status_code=404, headers=headers)
        return _json(200, {"Id": str(uuid.uuid4()), "Status": "OK", collection: [record]}, headers)

    async def _write(request: Request, method: str, collection: str) -> Response:
        org, headers = _organisation(request)
        key = request.headers.get("idempotency-key")
        raw = await request.body()
        entry = {"method": method, "collection": collection, "idempotency_key": key,
                 "xero_tenant_id": request.headers.get("xero-tenant-id"), "replayed": False,
                 "body": json.loads(raw) if raw else None}
        org.requests.append(entry)
        if key and key in org.responses:
            entry["replayed"] = True
            status, body = org.responses[key]
        else:
            try:
                status, body = 200, _apply(org, method, collection, raw)
            except XeroError as error:
                status, body = error.status, error.body
            if key and status < 400:
                # Only an applied write is remembered: a refused one changed nothing and may be retried.
                org.responses[key] = (status, body)
        if org.lose_next_response > 0:
            org.lose_next_response -= 1
            await asyncio.sleep(org.lose_delay_s)
        return _json(status, body, headers)

    def _apply(org: Organisation, method: str, collection: str, raw: bytes) -> dict[str, Any]:
        try:
            payload = json.loads(raw or b"null", parse_float=Decimal)
        except ValueError:
            raise validation_error("The request body is not valid JSON") from None
        schema = REQUEST_SCHEMAS.get((method, collection))
        if schema is None:
            raise XeroError(405, {"Title": "Method Not Allowed", "Status": 405, "Detail": f"{method} {collection}"})
        if sim.validator is not None:
            problems = sim.validator.errors(schema, json.loads(raw or b"null"))
            if problems:
                raise validation_error(f"The request does not match the {schema} schema: {problems[0]}")
        writer = WRITERS[collection][0]
        records = payload.get(collection, []) if schema != "Payment" else [payload]
        # All or nothing, as with summarizeErrors=true: a refused record undoes the ones before it.
        saved = copy.deepcopy((org.balances, org.postings, org.contacts, org.invoices, org.payments,
                               org.bank_transactions, org.bank_transfers))
        try:
            created = [writer(org, record) for record in records]
        except XeroError:
            (org.balances, org.postings, org.contacts, org.invoices, org.payments, org.bank_transactions,
             org.bank_transfers) = saved
            raise
        return {"Id": str(uuid.uuid4()), "Status": "OK", "ProviderName": "Payloop", "DateTimeUTC": _now_ms(),
                collection: created}

    @app.put("/api.xro/2.0/{collection}")
    async def put(request: Request, collection: str) -> Response:
        return await _write(request, "PUT", collection)

    @app.post("/api.xro/2.0/{collection}")
    async def post(request: Request, collection: str) -> Response:
        return await _write(request, "POST", collection)

    # --- control plane for tests and the demo (not part of Xero's API) ---------------------------

    @app.post("/_sim/organisations")
    async def sim_organisation(request: Request) -> Response:
        body = await request.json() if await request.body() else {}
        org = sim.create_organisation(body.get("name", "Demo MSP Ltd"), body.get("tenant_id"))
        return _json(200, _organisation_view(org))

    @app.get("/_sim/organisations/{tenant_id}")
    async def sim_state(tenant_id: str) -> Response:
        return _json(200, _organisation_view(sim.organisation(tenant_id)))

    @app.post("/_sim/organisations/{tenant_id}/invoices")
    async def sim_invoice(tenant_id: str, request: Request) -> Response:
        org = sim.organisation(tenant_id)
        body = json.loads(await request.body(), parse_float=Decimal)
        contact = org.contact({"Name": body["contact"]})
        contact["IsCustomer"] = True
        amount = _money(body["amount"])
        invoice = {"InvoiceID": str(uuid.uuid4()), "Type": "ACCREC", "InvoiceNumber": body["invoice_number"],
                   "Reference": body.get("reference", ""), "Status": "AUTHORISED",
                   "Contact": {"ContactID": contact["ContactID"], "Name": contact["Name"]},
                   "Date": _ms_date(date.today()), "DueDate": _ms_date(date.today()), "LineAmountTypes": "NoTax",
                   "CurrencyCode": org.base_currency, "SubTotal": amount, "TotalTax": Decimal("0"), "Total": amount,
                   "AmountDue": amount, "AmountPaid": Decimal("0"), "AmountCredited": Decimal("0"), "Payments": [],
                   "LineItems": [{"Description": "Managed services", "Quantity": Decimal("1"), "UnitAmount": amount,
                                  "AccountCode": "200", "LineAmount": amount}],
                   "UpdatedDateUTC": _now_ms()}
        org.invoices[invoice["InvoiceID"]] = invoice
        org.post(org.receivable(), amount, date.today())
        org.post(org.account_named("Sales"), -amount, date.today())
        return _json(200, {"Invoices": [invoice]})

    @app.post("/_sim/organisations/{tenant_id}/manual-journals")
    async def sim_manual_journal(tenant_id: str, request: Request) -> Response:
        """A manual journal as an accountant would type it into Xero (not through our app): Xero's
        ManualJournal shape, `JournalLines[{AccountCode, LineAmount}]` with debits positive, balanced."""
        org = sim.organisation(tenant_id)
        body = json.loads(await request.body(), parse_float=Decimal)
        day = date.fromisoformat(body.get("Date") or date.today().isoformat())
        lines = [(org.account({"Code": line["AccountCode"]}, "JournalLines.AccountCode"), _money(line["LineAmount"]))
                 for line in body.get("JournalLines") or []]
        if len(lines) < 2 or sum(amount for _, amount in lines) != 0:
            raise validation_error("The manual journal must have at least two lines and balance")
        org.check_lock(day)
        for account, amount in lines:
            org.post(account, amount, day)
        journal = {"ManualJournalID": str(uuid.uuid4()), "Date": _ms_date(day), "Status": "POSTED",
                   "Narration": body.get("Narration", ""), "LineAmountTypes": "NoTax", "UpdatedDateUTC": _now_ms(),
                   "JournalLines": [{"AccountCode": a["Code"], "AccountID": a["AccountID"], "LineAmount": amount}
                                    for a, amount in lines]}
        org.manual_journals[journal["ManualJournalID"]] = journal
        return _json(200, {"ManualJournals": [journal]})

    @app.post("/_sim/organisations/{tenant_id}/faults")
    async def sim_faults(tenant_id: str, request: Request) -> Response:
        org = sim.organisation(tenant_id)
        body = await request.json()
        org.throttle_next += int(body.get("throttle", 0))
        org.throttle_retry_after_s = int(body.get("retry_after_s", org.throttle_retry_after_s))
        org.rate_limit_per_minute = int(body.get("rate_limit_per_minute", org.rate_limit_per_minute))
        org.lose_next_response += int(body.get("lose_responses", 0))
        org.lose_delay_s = float(body.get("lose_delay_s", org.lose_delay_s))
        if "lock_date" in body:
            org.lock_date = date.fromisoformat(body["lock_date"]) if body["lock_date"] else None
        if body.get("revoke"):
            sim.revoke(tenant_id)
        if body.get("expire_access_tokens"):
            sim.expire_access_tokens(tenant_id)
        return _json(200, {"ok": True})

    @app.get("/_sim/organisations/{tenant_id}/requests")
    async def sim_requests(tenant_id: str) -> Response:
        return _json(200, {"requests": sim.organisation(tenant_id).requests})

    return app


def _organisation_view(org: Organisation) -> dict[str, Any]:
    return {"tenant_id": org.tenant_id, "name": org.name,
            "lock_date": org.lock_date.isoformat() if org.lock_date else None,
            "balances": {org.accounts[a]["Name"]: balance for a, balance in org.balances.items()},
            "Accounts": list(org.accounts.values()), "Contacts": list(org.contacts.values()),
            "Invoices": list(org.invoices.values()), "Payments": list(org.payments.values()),
            "BankTransactions": list(org.bank_transactions.values()),
            "BankTransfers": list(org.bank_transfers.values()),
            "ManualJournals": list(org.manual_journals.values())}


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8211)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    sim = Simulator()
    sim.create_organisation("Demo MSP Ltd", tenant_id=DEMO_TENANT_ID)
    uvicorn.run(create_app(sim), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
