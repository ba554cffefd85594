"""A local ConnectWise PSA (Manage REST API 3.0) for `payloop dev` and the psa_ingest tests.

Follows the vendor's formats (docs/vendors/connectwise.md): the API root is
`/v4_6_release/apis/3.0`; Basic auth of `company+publicKey:privateKey` plus a `clientId` header;
`page`/`pageSize` pagination with an RFC 8288 `Link` header; `conditions` filters
(`lastUpdated>[2026-01-01T00:00:00Z] and invoice/id in (1,2)`); errors as `{code, message}`;
callbacks registered at `/system/callbacks` and signed with `x-content-signature`
(base64 HMAC-SHA256 of the body keyed by SHA-256 of the signing key published at `Metadata.key_url`).

It is stateful and seeded with a realistic MSP book (40 companies, a year of monthly
managed-services invoices with per-device, per-user and tiered additions, seat changes with
pro-rated lines, time-and-materials and product invoices, credits, a void, an edited invoice and a
billing-dispute ticket). Tests drive it in-process (`ConnectWiseSimulator`), edit its state and
inject faults (`fail_next`); `python -m payloop.simulators.connectwise --port N` serves it alone.
`ConnectWiseSimulator(invoices=N)` (`--invoices N`) seeds a generated book of N plain invoices
instead, built in linear time, for benchmarks.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import random
import re
import secrets
import uuid
import zlib
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

API_ROOT = "/v4_6_release/apis/3.0"
COMPANY_ID = "payloopdemo"
PUBLIC_KEY = "demo-public-key"
PRIVATE_KEY = "demo-private-key"
CLIENT_ID = "00000000-demo-4000-8000-clientid0001"
MAX_PAGE_SIZE = 1000


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _money(value: Decimal) -> float:
    # The vendor's wire format is a JSON number; two-decimal values print back exactly.
    return float(value.quantize(Decimal("0.01")))


# --- conditions ------------------------------------------------------------------------------------

_CONDITION = re.compile(
    r"\s*(?P<field>[A-Za-z_][\w/]*)\s*(?P<op>>=|<=|!=|=|<|>|\s+in\s+|\s+like\s+)\s*"
    r"(?P<value>\[[^\]]*\]|\"[^\"]*\"|'[^']*'|\([^)]*\)|[\w.\-]+)\s*",
    re.IGNORECASE,
)


class BadConditions(ValueError):
    pass


def _literal(raw: str) -> Any:
    raw = raw.strip()
    if raw.startswith("["):
        return datetime.fromisoformat(raw[1:-1].replace("Z", "+00:00"))
    if raw[:1] in "\"'":
        return raw[1:-1]
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    if raw.lower() == "null":
        return None
    try:
        return Decimal(raw)
    except ArithmeticError:
        return raw


def parse_conditions(text: str | None) -> list[tuple[str, str, Any]]:
    """`a/b = 1 and lastUpdated > [..]` -> [(path, op, value)]; only `and` is supported."""
    if not text:
        return []
    clauses = []
    for part in re.split(r"\s+and\s+", text.strip(), flags=re.IGNORECASE):
        match = _CONDITION.fullmatch(part)
        if not match:
            raise BadConditions(f"cannot parse condition {part!r}")
        op = match["op"].strip().lower()
        raw = match["value"]
        # A set: `invoice/id in (...)` with a page of ids is tested against every product of the book.
        value = frozenset(_literal(v) for v in raw.strip("()").split(",") if v.strip()) if op == "in" \
            else _literal(raw)
        clauses.append((match["field"], op, value))
    return clauses


def _lookup(record: dict, path: str) -> Any:
    if path == "lastUpdated":
        return datetime.fromisoformat(record["_info"]["lastUpdated"].replace("Z", "+00:00"))
    value: Any = record
    for key in path.split("/"):
        value = value.get(key) if isinstance(value, dict) else None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return Decimal(str(value))
    return value


def matches(record: dict, clauses: list[tuple[str, str, Any]]) -> bool:
    for path, op, expected in clauses:
        actual = _lookup(record, path)
        if op == "in":
            if actual not in expected:
                return False
            continue
        if op == "like":
            pattern = re.escape(str(expected)).replace("%", ".*").replace("\\%", ".*")
            if actual is None or not re.fullmatch(pattern, str(actual), re.IGNORECASE):
                return False
            continue
        if actual is None and op not in ("=", "!="):
            return False
        try:
            ok = {"=": actual == expected, "!=": actual != expected, "<": actual < expected,
                  ">": actual > expected, "<=": actual <= expected, ">=": actual >= expected}[op]
        except TypeError:
            ok = False
        if not ok:
            return False
    return True


# --- state -----------------------------------------------------------------------------------------

@dataclass
class Fault:
    status: int
    path_contains: str = ""
    retry_after: int | None = None
    delay_s: float = 0.0
    apply_first: bool = False  # for writes: apply the change, then fail/delay (a timeout after success)
    method: str | None = None


@dataclass
class ConnectWiseState:
    companies: dict[int, dict] = field(default_factory=dict)
    agreements: dict[int, dict] = field(default_factory=dict)
    additions: dict[int, dict] = field(default_factory=dict)
    invoices: dict[int, dict] = field(default_factory=dict)
    products: dict[int, dict] = field(default_factory=dict)
    time_entries: dict[int, dict] = field(default_factory=dict)
    tickets: dict[int, dict] = field(default_factory=dict)
    payments: dict[int, dict] = field(default_factory=dict)
    callbacks: dict[int, dict] = field(default_factory=dict)
    signing_keys: dict[str, str] = field(default_factory=dict)
    next_id: int = 1000
    clock: datetime = field(default_factory=lambda: datetime(2026, 1, 1, tzinfo=UTC))

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def tick(self) -> str:
        """Each change gets a strictly later `lastUpdated`, like the vendor's per-save timestamps."""
        self.clock = max(self.clock + timedelta(seconds=1), datetime.now(UTC).replace(microsecond=0))
        return _iso(self.clock)


def _info(updated: str) -> dict:
    return {"lastUpdated": updated, "updatedBy": "payloop-sim"}


CATALOG = {
    # identifier: (description, uom, unit price)
    "MS-BASE": ("Managed Services - Base Platform", "Each", Decimal("499.00")),
    "DEV-WS": ("Managed Workstation", "Device", Decimal("45.00")),
    "DEV-SRV": ("Managed Server", "Device", Decimal("150.00")),
    "USR-M365": ("Microsoft 365 Business Premium Support", "User", Decimal("22.00")),
    "TIER-BACKUP-1TB": ("Cloud Backup - Tier 1 (up to 1 TB)", "Each", Decimal("120.00")),
    "TIER-BACKUP-5TB": ("Cloud Backup - Tier 2 (up to 5 TB)", "Each", Decimal("380.00")),
}


def seed(state: ConnectWiseState, *, companies: int = 40, months: int = 12, rng_seed: int = 7) -> None:
    """A year of a mid-size MSP's billing, deterministic for a given seed."""
    rng = random.Random(rng_seed)
    first_month = date(2025, 1, 1)
    stamp = state.tick()
    names = ["Acme", "Birch", "Cobalt", "Delta", "Evergreen", "Falcon", "Granite", "Harbor", "Ironwood",
             "Juniper", "Keystone", "Lakeside", "Maple", "Northstar", "Oakridge", "Pinnacle", "Quarry",
             "Redwood", "Summit", "Tidewater"]
    kinds = ["Dental", "Law", "Logistics", "Clinic", "Builders", "Realty", "Accounting", "Foods"]
    for n in range(companies):
        cid = state.new_id()
        name = f"{names[n % len(names)]} {kinds[n % len(kinds)]} {'LLC' if n % 3 else 'Inc.'}"
        slug = re.sub(r"[^A-Za-z]", "", name)[:20]
        state.companies[cid] = {
            "id": cid, "identifier": slug, "name": name, "status": {"id": 1, "name": "Active"},
            "addressLine1": f"{100 + n} Main Street", "city": "Springfield", "state": "IL", "zip": "62701",
            "phoneNumber": f"217555{1000 + n}", "billingTerms": {"id": 1, "name": "Net 30"},
            "timeZoneSetup": {"id": 1, "name": "America/Chicago" if n % 2 else "America/New_York"},
            "currency": {"id": 1, "currencyCode": "USD", "numberOfDecimals": 2},
            "invoiceToEmailAddress": f"ap@{slug.lower()}.example",
            "invoiceCCEmailAddress": f"controller@{slug.lower()}.example" if n % 4 == 0 else None,
            "deletedFlag": False, "_info": _info(stamp),
        }
        agreement_id = state.new_id()
        state.agreements[agreement_id] = {
            "id": agreement_id, "name": f"{name} - Managed Services",
            "type": {"id": 1, "name": "Managed Services"}, "company": {"id": cid, "identifier": slug, "name": name},
            "contact": {"id": 1, "name": "Billing Contact"}, "startDate": "2025-01-01T00:00:00Z",
            "endDate": None, "noEndingDateFlag": True, "billingCycle": {"id": 1, "name": "Monthly"},
            "billingTerms": {"id": 1, "name": "Net 30"}, "billAmount": 0, "prorateFlag": True,
            "currency": {"id": 1, "currencyCode": "USD", "numberOfDecimals": 2},
            "agreementStatus": "Active", "_info": _info(stamp),
        }
        devices = rng.randint(10, 60)
        users = rng.randint(5, 50)
        plan = [("MS-BASE", Decimal(1)), ("DEV-WS", Decimal(devices)), ("USR-M365", Decimal(users))]
        if n % 3 == 0:
            plan.append(("DEV-SRV", Decimal(rng.randint(1, 4))))
        plan.append(("TIER-BACKUP-5TB" if n % 5 == 0 else "TIER-BACKUP-1TB", Decimal(1)))
        additions = {}
        for identifier, qty in plan:
            aid = state.new_id()
            desc, uom, price = CATALOG[identifier]
            additions[identifier] = state.additions[aid] = {
                "id": aid, "agreementId": agreement_id, "product": {"id": aid, "identifier": identifier},
                "description": desc, "quantity": float(qty), "unitPrice": _money(price), "uom": uom,
                "billCustomer": "Billable", "effectiveDate": "2025-01-01T00:00:00Z", "cancelledDate": None,
                "extPrice": _money(price * qty), "_info": _info(stamp),
            }
        for m in range(months):
            issued = date(first_month.year + (first_month.month - 1 + m) // 12, (first_month.month - 1 + m) % 12 + 1, 1)
            lines = [(identifier, Decimal(str(additions[identifier]["quantity"])),
                      Decimal(str(additions[identifier]["unitPrice"])), additions[identifier]["description"],
                      agreement_id) for identifier in additions]
            if m == 6 and n % 2 == 0:
                # Seat change mid-cycle: 3 more users from the 16th, pro-rated for half a month.
                added = Decimal(3)
                additions["USR-M365"]["quantity"] = float(Decimal(str(additions["USR-M365"]["quantity"])) + added)
                price = Decimal(str(additions["USR-M365"]["unitPrice"]))
                lines.append(("PRORATE-USR-M365", added, (price / 2).quantize(Decimal("0.01")),
                              "Prorated: 3 additional users from the 16th", agreement_id))
            _add_invoice(state, cid, issued, lines, agreement_id=agreement_id, rng=rng,
                         paid=m < months - 2, stamp=stamp)
        if n % 4 == 1:
            _add_invoice(state, cid, date(2025, 9, 12), [], time=[(Decimal("3.5"), Decimal("165.00"),
                         "Onsite: firewall replacement"), (Decimal("1.25"), Decimal("165.00"), "Remote: VPN fix")],
                         rng=rng, paid=False, stamp=stamp)
        if n % 5 == 2:
            _add_invoice(state, cid, date(2025, 10, 3), [("HW-LAPTOP-14", Decimal(2), Decimal("1249.00"),
                         "Business laptop 14in", None), ("ADJ-SHIPPING", Decimal(1), Decimal("35.00"),
                         "Shipping adjustment", None)], rng=rng, paid=False, stamp=stamp)
    first = next(iter(state.companies))
    firsts = [i for i in state.invoices.values() if i["company"]["id"] == first and i["type"] == "Agreement"]
    # A credit memo applied to one invoice; a void; an edited invoice; a billing-dispute ticket.
    credit_id = _add_invoice(state, first, date(2025, 11, 20), [("CREDIT-SLA", Decimal(1), Decimal("-150.00"),
                             "SLA credit: October outage", None)], rng=rng, paid=False, stamp=stamp,
                             kind="Credit", apply_to=firsts[-1]["id"])
    del credit_id
    open_agreement_invoices = [i for i in state.invoices.values() if i["type"] == "Agreement" and i["balance"]]
    edited, disputed, void = open_agreement_invoices[:3]
    void["status"] = {"id": 9, "name": "Void", "isClosed": True}
    void["balance"] = 0
    _add_line(state, edited, "ADJ-DISCOUNT", Decimal(1), Decimal("-25.00"), "Loyalty discount", None)
    _recompute(state, edited)
    add_ticket(state, disputed, "Client disputes the server count on this invoice", stamp=stamp)


def seed_generated(state: ConnectWiseState, *, companies: int, invoices: int, rng_seed: int = 7) -> None:
    """A large book for benchmarks: `companies` companies with a managed-services agreement each and
    `invoices` invoices spread evenly over them across the past two years (one agreement line, plus a
    product line on every fourth), due in 30 days, all but the last few months' paid. Totals are
    computed here, not by `_recompute` (which scans every line of the book per invoice)."""
    rng = random.Random(rng_seed)
    stamp = state.tick()
    today = datetime.now(UTC).date()
    base_desc, base_uom, base_price = CATALOG["MS-BASE"]
    agreement_of: dict[int, int] = {}
    for n in range(companies):
        cid = state.new_id()
        slug = f"Bench{n:05d}"
        state.companies[cid] = {
            "id": cid, "identifier": slug, "name": f"Bench Client {n:05d} LLC",
            "status": {"id": 1, "name": "Active"}, "billingTerms": {"id": 1, "name": "Net 30"},
            "timeZoneSetup": {"id": 1, "name": "America/New_York"},
            "currency": {"id": 1, "currencyCode": "USD", "numberOfDecimals": 2},
            "invoiceToEmailAddress": f"ap@{slug.lower()}.example", "invoiceCCEmailAddress": None,
            "deletedFlag": False, "_info": _info(stamp)}
        aid = agreement_of[cid] = state.new_id()
        state.agreements[aid] = {
            "id": aid, "name": f"{slug} - Managed Services", "type": {"id": 1, "name": "Managed Services"},
            "company": {"id": cid, "identifier": slug, "name": state.companies[cid]["name"]},
            "startDate": "2024-01-01T00:00:00Z", "endDate": None, "noEndingDateFlag": True,
            "billingCycle": {"id": 1, "name": "Monthly"}, "billingTerms": {"id": 1, "name": "Net 30"},
            "currency": {"id": 1, "currencyCode": "USD", "numberOfDecimals": 2}, "agreementStatus": "Active",
            "_info": _info(stamp)}
        addition = state.new_id()
        state.additions[addition] = {
            "id": addition, "agreementId": aid, "product": {"id": addition, "identifier": "MS-BASE"},
            "description": base_desc, "quantity": 1.0, "unitPrice": _money(base_price), "uom": base_uom,
            "billCustomer": "Billable", "effectiveDate": "2024-01-01T00:00:00Z", "cancelledDate": None,
            "extPrice": _money(base_price), "_info": _info(stamp)}
    company_ids = list(agreement_of)
    for k in range(invoices):
        cid = company_ids[k % companies]
        company, aid = state.companies[cid], agreement_of[cid]
        issued = today - timedelta(days=rng.randrange(730))
        iid = state.new_id()
        lines = [("MS-BASE", Decimal(1), Decimal(rng.randrange(20_000, 500_000)) / 100, base_desc, aid)]
        if k % 4 == 0:
            lines.append(("HW-DOCK", Decimal(rng.randint(1, 3)), Decimal("189.00"), "Docking station", None))
        total = sum((qty * price).quantize(Decimal("0.01")) for _, qty, price, _, _ in lines)
        paid = issued < today - timedelta(days=75) or rng.random() < 0.3
        invoice = {
            "id": iid, "invoiceNumber": f"{24000 + iid}", "type": "Agreement",
            "status": ({"id": 5, "name": "Paid", "isClosed": True} if paid
                       else {"id": 1, "name": "Sent", "isClosed": False}),
            "company": {"id": cid, "identifier": company["identifier"], "name": company["name"]},
            "billingTerms": {"id": 1, "name": "Net 30"}, "date": f"{issued.isoformat()}T00:00:00Z",
            "dueDate": f"{(issued + timedelta(days=30)).isoformat()}T00:00:00Z",
            "currency": {"id": 1, "currencyCode": "USD", "numberOfDecimals": 2},
            "agreement": {"id": aid, "name": state.agreements[aid]["name"], "type": "Managed Services"},
            "applyToType": "All", "applyToId": None, "taxableFlag": True, "salesTax": 0,
            "subtotal": _money(total), "total": _money(total), "payments": _money(total) if paid else 0,
            "credits": 0, "balance": 0 if paid else _money(total), "_info": _info(stamp)}
        state.invoices[iid] = invoice
        for identifier, qty, price, desc, agreement in lines:
            _add_line(state, invoice, identifier, qty, price, desc, agreement)
        if paid:
            pid = state.new_id()
            paid_on = issued + timedelta(days=rng.randint(5, 40))
            state.payments[pid] = {"id": pid, "type": "Payment", "invoice": {"id": iid}, "amount": _money(total),
                                   "paymentDate": f"{paid_on.isoformat()}T00:00:00Z", "appliedBy": "ach-import",
                                   "source": "bank", "_info": _info(stamp)}


def _add_invoice(state: ConnectWiseState, company_id: int, issued: date, lines: list, *, rng: random.Random,
                 paid: bool, stamp: str, agreement_id: int | None = None, time: list | None = None,
                 kind: str | None = None, apply_to: int | None = None) -> int:
    company = state.companies[company_id]
    iid = state.new_id()
    invoice = {
        "id": iid, "invoiceNumber": f"{24000 + iid}", "type": kind or ("Agreement" if agreement_id else "Standard"),
        "status": {"id": 1, "name": "Sent", "isClosed": False},
        "company": {"id": company_id, "identifier": company["identifier"], "name": company["name"]},
        "billingTerms": {"id": 1, "name": "Net 30"}, "date": f"{issued.isoformat()}T00:00:00Z",
        "dueDate": f"{(issued + timedelta(days=30)).isoformat()}T00:00:00Z",
        "currency": {"id": 1, "currencyCode": "USD", "numberOfDecimals": 2},
        "agreement": ({"id": agreement_id, "name": state.agreements[agreement_id]["name"], "type": "Managed Services"}
                      if agreement_id else None),
        "applyToType": "Invoice" if apply_to else "All", "applyToId": apply_to,
        "taxableFlag": True, "salesTax": 0, "subtotal": 0, "total": 0, "payments": 0, "credits": 0, "balance": 0,
        "_info": _info(stamp),
    }
    state.invoices[iid] = invoice
    for identifier, qty, price, desc, agreement in lines:
        _add_line(state, invoice, identifier, qty, price, desc, agreement)
    for hours, rate, notes in time or []:
        tid = state.new_id()
        state.time_entries[tid] = {
            "id": tid, "company": invoice["company"], "chargeToType": "ServiceTicket", "chargeToId": 500 + tid,
            "member": {"id": 7, "identifier": "jtech", "name": "Jordan Tech"},
            "timeStart": f"{issued.isoformat()}T14:00:00Z", "actualHours": float(hours), "hoursBilled": float(hours),
            "hourlyRate": _money(rate), "notes": notes, "billableOption": "Billable",
            "invoice": {"id": iid, "identifier": invoice["invoiceNumber"]}, "_info": _info(stamp),
        }
    _recompute(state, invoice)
    if kind == "Credit" and apply_to:
        target = state.invoices[apply_to]
        target["credits"] = _money(Decimal(str(target["credits"])) - Decimal(str(invoice["total"])))
        _recompute(state, target)
        invoice["balance"] = 0
    if paid and invoice["balance"]:
        pid = state.new_id()
        state.payments[pid] = {"id": pid, "type": "Payment", "invoice": {"id": iid}, "amount": invoice["balance"],
                               "paymentDate": f"{(issued + timedelta(days=rng.randint(5, 40))).isoformat()}T00:00:00Z",
                               "appliedBy": "ach-import", "source": "bank", "_info": _info(stamp)}
        invoice["payments"] = invoice["balance"]
        _recompute(state, invoice)
    return iid


def _add_line(state: ConnectWiseState, invoice: dict, identifier: str, qty: Decimal, price: Decimal, desc: str,
              agreement_id: int | None) -> None:
    pid = state.new_id()
    state.products[pid] = {
        "id": pid, "catalogItem": {"id": zlib.crc32(identifier.encode()) % 10000, "identifier": identifier},
        "description": desc, "quantity": float(qty), "price": _money(price), "cost": _money(price * Decimal("0.6")),
        "productClass": "Agreement" if agreement_id else "NonInventory",
        "agreement": {"id": agreement_id} if agreement_id else None,
        "invoice": {"id": invoice["id"], "identifier": invoice["invoiceNumber"]},
        "company": invoice["company"], "_info": _info(invoice["_info"]["lastUpdated"]),
    }


def invoice_lines(state: ConnectWiseState, invoice_id: int) -> list[tuple[Decimal, Decimal]]:
    """(quantity, unit price) of every line of an invoice: products and billed time."""
    out = [(Decimal(str(p["quantity"])), Decimal(str(p["price"]))) for p in state.products.values()
           if p["invoice"]["id"] == invoice_id]
    out += [(Decimal(str(t["hoursBilled"])), Decimal(str(t["hourlyRate"]))) for t in state.time_entries.values()
            if t["invoice"] and t["invoice"]["id"] == invoice_id]
    return out


def _recompute(state: ConnectWiseState, invoice: dict) -> None:
    subtotal = sum((q * p).quantize(Decimal("0.01")) for q, p in invoice_lines(state, invoice["id"]))
    tax = Decimal(str(invoice.get("salesTax") or 0))
    total = subtotal + tax
    paid = Decimal(str(invoice["payments"] or 0))
    credits = Decimal(str(invoice["credits"] or 0))
    invoice["subtotal"], invoice["total"] = _money(subtotal), _money(total)
    if invoice["status"]["name"] != "Void":
        balance = total - paid - credits if invoice["type"] != "Credit" else Decimal(0)
        invoice["balance"] = _money(balance)
        if invoice["type"] != "Credit" and balance <= 0 < total:
            invoice["status"] = {"id": 5, "name": "Paid", "isClosed": True}


def add_ticket(state: ConnectWiseState, invoice: dict, summary: str, *, stamp: str | None = None) -> dict:
    tid = state.new_id()
    ticket = {
        "id": tid, "summary": summary, "recordType": "ServiceTicket", "board": {"id": 3, "name": "Accounting"},
        "status": {"id": 1, "name": "New"}, "type": {"id": 12, "name": "Billing Dispute"},
        "company": invoice["company"], "closedFlag": False,
        "customFields": [{"id": 4, "caption": "Invoice Number", "type": "Text", "entryMethod": "EntryField",
                          "numberOfDecimals": 0, "value": invoice["invoiceNumber"]}],
        "_info": _info(stamp or state.tick()),
    }
    state.tickets[tid] = ticket
    return ticket


# --- the HTTP server -------------------------------------------------------------------------------

def _error(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"code": code, "message": message, "errors": None}, status_code=status, headers=headers)


class ConnectWiseSimulator:
    """The simulator's state and its HTTP app; `start()` serves it on a port of this event loop."""

    def __init__(self, *, seeded: bool = True, companies: int = 40, months: int = 12, invoices: int | None = None):
        self.state = ConnectWiseState()
        if seeded and invoices is not None:
            seed_generated(self.state, companies=companies, invoices=invoices)
        elif seeded:
            seed(self.state, companies=companies, months=months)
        self.faults: list[Fault] = []
        self.requests: list[dict] = []
        self.deliveries: list[asyncio.Task] = []
        self.base_url = ""
        self.app = self._build_app()
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task | None = None

    # --- test controls ---
    @property
    def api_url(self) -> str:
        return self.base_url + API_ROOT

    def fail_next(self, status: int, *, path_contains: str = "", retry_after: int | None = None,
                  delay_s: float = 0.0, apply_first: bool = False, method: str | None = None) -> None:
        self.faults.append(Fault(status, path_contains, retry_after, delay_s, apply_first, method))

    def update_invoice(self, invoice_id: int, **changes: Any) -> dict:
        invoice = self.state.invoices[invoice_id]
        invoice.update(changes)
        _recompute(self.state, invoice)
        invoice["_info"] = _info(self.state.tick())
        self.notify("invoice", invoice_id, "updated")
        return invoice

    def add_invoice_line(self, invoice_id: int, identifier: str, qty: str, price: str, desc: str) -> dict:
        invoice = self.state.invoices[invoice_id]
        _add_line(self.state, invoice, identifier, Decimal(qty), Decimal(price), desc,
                  (invoice.get("agreement") or {}).get("id"))
        return self.update_invoice(invoice_id)

    def void_invoice(self, invoice_id: int) -> dict:
        return self.update_invoice(invoice_id, status={"id": 9, "name": "Void", "isClosed": True}, balance=0)

    def new_invoice(self, company_id: int, lines: list[tuple[str, str, str, str]]) -> dict:
        iid = _add_invoice(self.state, company_id, datetime.now(UTC).date(),
                           [(i, Decimal(q), Decimal(p), d, None) for i, q, p, d in lines],
                           rng=random.Random(1), paid=False, stamp=self.state.tick())
        self.notify("invoice", iid, "added")
        return self.state.invoices[iid]

    def payments_of(self, invoice_id: int) -> list[dict]:
        return [p for p in self.state.payments.values() if p["invoice"]["id"] == invoice_id]

    async def settle_deliveries(self) -> None:
        while self.deliveries:
            await self.deliveries.pop(0)

    # --- callbacks ---
    def notify(self, type_: str, record_id: int, action: str) -> None:
        """Send the callbacks registered for `type_`, as the PSA does when a record is saved."""
        entity = {"invoice": self.state.invoices, "company": self.state.companies,
                  "agreement": self.state.agreements, "ticket": self.state.tickets}[type_].get(record_id, {})
        for callback in list(self.state.callbacks.values()):
            if callback["type"].lower() != type_ or callback.get("inactiveFlag"):
                continue
            key_id = callback["_signingKeyId"]
            body = json.dumps({
                "MessageId": str(uuid.uuid4()), "FromUrl": self.base_url, "CompanyId": COMPANY_ID,
                "MemberId": "payloop-sim", "Action": action, "Type": type_, "ID": record_id,
                "ProductInstanceId": None, "PartnerId": None, "Entity": json.dumps(entity),
                "Metadata": {"key_url": f"{self.api_url}/system/callbackEntry/key/{key_id}"},
                "CallbackObjectRecId": callback["objectId"],
            }).encode()
            signature = sign_callback(self.state.signing_keys[key_id], body)
            self.deliveries.append(asyncio.ensure_future(self._deliver(callback["url"], body, signature)))

    async def _deliver(self, url: str, body: bytes, signature: str) -> None:
        try:
            async with httpx.AsyncClient(timeout=10) as client:
                await client.post(url, content=body, headers={"content-type": "application/json",
                                                               "x-content-signature": signature})
        except httpx.HTTPError:
            pass  # the vendor does not retry callbacks: pollers catch up

    # --- serving ---
    async def start(self, port: int, host: str = "127.0.0.1") -> None:
        self.base_url = f"http://{host}:{port}"
        config = uvicorn.Config(self.app, host=host, port=port, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve())
        while not self._server.started:
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        await self.settle_deliveries()
        if self._server:
            self._server.should_exit = True
            await self._task

    def _check_auth(self, request: Request) -> JSONResponse | None:
        expected = base64.b64encode(f"{COMPANY_ID}+{PUBLIC_KEY}:{PRIVATE_KEY}".encode()).decode()
        if request.headers.get("authorization") != f"Basic {expected}":
            return _error(401, "Unauthorized", "The credentials are not valid for this company.")
        if not request.headers.get("clientid"):
            return _error(401, "Unauthorized", "A clientId header is required (developer.connectwise.com/ClientID).")
        return None

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="ConnectWise PSA simulator", openapi_url=None, docs_url=None, redoc_url=None)
        sim = self

        @app.middleware("http")
        async def gate(request: Request, call_next):
            sim.requests.append({"method": request.method, "path": request.url.path,
                                 "query": dict(request.query_params), "headers": dict(request.headers)})
            if not request.url.path.startswith(API_ROOT):
                return _error(404, "NotFound", "Unknown path")
            denied = sim._check_auth(request)
            if denied:
                return denied
            fault = next((f for f in sim.faults if f.path_contains in request.url.path
                          and f.method in (None, request.method)), None)
            if fault is None:
                return await call_next(request)
            sim.faults.remove(fault)
            if fault.apply_first:
                await call_next(request)
            if fault.delay_s:
                await asyncio.sleep(fault.delay_s)
            headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else None
            code = {429: "TooManyRequests", 401: "Unauthorized", 500: "InternalServerError",
                    503: "ServiceUnavailable"}.get(fault.status, "Error")
            return _error(fault.status, code, f"simulated {fault.status}", headers)

        def listing(request: Request, records: list[dict], *, extra: list | None = None) -> Response:
            params = request.query_params
            try:
                clauses = parse_conditions(params.get("conditions")) + (extra or [])
            except BadConditions as exc:
                return _error(400, "InvalidObject", str(exc))
            try:
                page = int(params.get("page", "1"))
                size = min(int(params.get("pageSize", "25")), MAX_PAGE_SIZE)
            except ValueError:
                return _error(400, "InvalidObject", "page and pageSize must be integers")
            if page < 1 or size < 1:
                return _error(400, "InvalidObject", "page and pageSize must be positive")
            selected = sorted((r for r in records if matches(r, clauses)), key=lambda r: r["id"])
            body = [{k: v for k, v in r.items() if not k.startswith("_") or k == "_info"}
                    for r in selected[(page - 1) * size: page * size]]
            last = max(1, -(-len(selected) // size))
            links = []
            base = str(request.url).split("?")[0]
            query = {k: v for k, v in params.items() if k not in ("page", "pageSize")}
            if page < last:
                links.append(f'<{base}?{urlencode({**query, "pageSize": size, "page": page + 1})}>; rel="next"')
                links.append(f'<{base}?{urlencode({**query, "pageSize": size, "page": last})}>; rel="last"')
            if page > 1:
                links.append(f'<{base}?{urlencode({**query, "pageSize": size, "page": page - 1})}>; rel="prev"')
                links.append(f'<{base}?{urlencode({**query, "pageSize": size, "page": 1})}>; rel="first"')
            headers = {"Link": ", ".join(links)} if links else {}
            return JSONResponse(body, headers=headers)

        @app.get(API_ROOT + "/system/info")
        async def system_info():
            return {"version": "v2025.1.99999", "isCloud": True, "serverTimeZone": "Eastern Standard Time",
                    "cloudRegion": "NA"}

        @app.get(API_ROOT + "/company/companies")
        async def companies(request: Request):
            return listing(request, list(sim.state.companies.values()))

        @app.get(API_ROOT + "/finance/agreements")
        async def agreements(request: Request):
            return listing(request, list(sim.state.agreements.values()))

        @app.get(API_ROOT + "/finance/agreements/{parent_id}/additions")
        async def additions(request: Request, parent_id: int):
            if parent_id not in sim.state.agreements:
                return _error(404, "NotFound", f"Agreement {parent_id} not found")
            return listing(request, [a for a in sim.state.additions.values() if a["agreementId"] == parent_id])

        @app.get(API_ROOT + "/finance/invoices")
        async def invoices(request: Request):
            return listing(request, list(sim.state.invoices.values()))

        @app.get(API_ROOT + "/finance/invoices/{invoice_id}")
        async def invoice(invoice_id: int):
            if invoice_id not in sim.state.invoices:
                return _error(404, "NotFound", f"Invoice {invoice_id} not found")
            return sim.state.invoices[invoice_id]

        @app.get(API_ROOT + "/procurement/products")
        async def products(request: Request):
            return listing(request, list(sim.state.products.values()))

        @app.get(API_ROOT + "/time/entries")
        async def time_entries(request: Request):
            return listing(request, list(sim.state.time_entries.values()))

        @app.get(API_ROOT + "/service/tickets")
        async def tickets(request: Request):
            return listing(request, list(sim.state.tickets.values()))

        @app.get(API_ROOT + "/finance/invoices/{invoice_id}/payments")
        async def list_payments(request: Request, invoice_id: int):
            if invoice_id not in sim.state.invoices:
                return _error(404, "NotFound", f"Invoice {invoice_id} not found")
            return listing(request, sim.payments_of(invoice_id))

        @app.post(API_ROOT + "/finance/invoices/{invoice_id}/payments")
        async def add_payment(request: Request, invoice_id: int):
            invoice = sim.state.invoices.get(invoice_id)
            if invoice is None:
                return _error(404, "NotFound", f"Invoice {invoice_id} not found")
            try:
                body = json.loads(await request.body(), parse_float=Decimal)
                amount = Decimal(str(body["amount"]))
                paid_on = body.get("paymentDate") or _iso(datetime.now(UTC))
            except (ValueError, KeyError, ArithmeticError):
                return _error(400, "InvalidObject", "amount is required")
            if body.get("type", "Payment") not in ("Payment", "Credit", "Refund"):
                return _error(400, "InvalidObject", "type must be Payment, Credit or Refund")
            if invoice["status"]["name"] == "Void":
                return _error(400, "InvalidObject", "Cannot apply a payment to a void invoice")
            pid = sim.state.new_id()
            stamp = sim.state.tick()
            payment = {"id": pid, "type": body.get("type", "Payment"), "invoice": {"id": invoice_id},
                       "amount": _money(amount), "paymentDate": paid_on, "source": body.get("source"),
                       "appliedBy": "api", "_info": _info(stamp)}
            sim.state.payments[pid] = payment
            invoice["payments"] = _money(Decimal(str(invoice["payments"])) + amount)
            if invoice["status"]["name"] == "Paid" and amount < 0:
                invoice["status"] = {"id": 1, "name": "Sent", "isClosed": False}
            _recompute(sim.state, invoice)
            invoice["_info"] = _info(stamp)
            return JSONResponse(payment, status_code=201)

        @app.post(API_ROOT + "/system/callbacks")
        async def add_callback(request: Request):
            body = await request.json()
            missing = [k for k in ("url", "objectId", "type", "level") if k not in body]
            if missing:
                return _error(400, "InvalidObject", f"missing {', '.join(missing)}")
            cid = sim.state.new_id()
            key_id = str(uuid.uuid4())
            sim.state.signing_keys[key_id] = secrets.token_urlsafe(32)
            callback = {**body, "id": cid, "inactiveFlag": False, "_signingKeyId": key_id,
                        "_info": _info(sim.state.tick())}
            sim.state.callbacks[cid] = callback
            return JSONResponse({k: v for k, v in callback.items() if k != "_signingKeyId"}, status_code=201)

        @app.get(API_ROOT + "/system/callbacks")
        async def list_callbacks(request: Request):
            return listing(request, list(sim.state.callbacks.values()))

        @app.get(API_ROOT + "/system/callbackEntry/key/{key_id}")
        async def signing_key(key_id: str):
            if key_id not in sim.state.signing_keys:
                return _error(404, "NotFound", "Unknown key")
            return {"signing_key": sim.state.signing_keys[key_id]}

        return app


def sign_callback(signing_key: str, body: bytes) -> str:
    """The vendor's callback signature: base64 HMAC-SHA256 of the raw body, keyed by SHA-256 of the key."""
    key = hashlib.sha256(signing_key.encode()).digest()
    return base64.b64encode(hmac.new(key, body, hashlib.sha256).digest()).decode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8200)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--invoices", type=int, help="serve a generated book of this many invoices (benchmarks)")
    parser.add_argument("--companies", type=int, default=40, help="companies of the book")
    args = parser.parse_args()

    async def serve() -> None:
        sim = ConnectWiseSimulator(companies=args.companies, invoices=args.invoices)
        await sim.start(args.port, args.host)
        print(f"ConnectWise simulator at {sim.api_url} (company {COMPANY_ID}, public key {PUBLIC_KEY}, "
              f"private key {PRIVATE_KEY}, clientId {CLIENT_ID})", flush=True)
        await sim._task

    asyncio.run(serve())


if __name__ == "__main__":
    main()
