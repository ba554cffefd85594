"""The MSP book every PSA simulator serves: one realistic year of a mid-size MSP's billing, kept in
ConnectWise's shapes (the ConnectWise simulator serves it as is; Autotask, HaloPSA and SuperOps render it
into their own records), so the four PSAs hold the same clients, agreements and invoices.

`seed` builds 40 companies, a year of monthly managed-services invoices with per-device, per-user and tiered
additions, a seat change with a pro-rated line, time-and-materials and product invoices, a credit memo, a
void, an edited invoice and a billing-dispute ticket; `seed_generated` a large plain book for benchmarks.

Without `today` the year is 2025 (what the tests read). With it (what `payloop dev` passes: the demo's first
day) the book is dated around that day: each company's history paid a steady few days either side of the due
date, its current invoice due today or within three weeks (see `current_due_in`), a few manual payers a month
behind, time-and-materials and product invoices a little overdue, and one drifting late payer
(`DRIFTING_COMPANY`) whose last four payments came later and later.
"""
from __future__ import annotations

import calendar
import random
import re
import zlib
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def money(value: Decimal) -> float:
    # The vendor's wire format is a JSON number; two-decimal values print back exactly.
    return float(value.quantize(Decimal("0.01")))


@dataclass
class Book:
    companies: dict[int, dict] = field(default_factory=dict)
    agreements: dict[int, dict] = field(default_factory=dict)
    additions: dict[int, dict] = field(default_factory=dict)
    invoices: dict[int, dict] = field(default_factory=dict)
    products: dict[int, dict] = field(default_factory=dict)
    time_entries: dict[int, dict] = field(default_factory=dict)
    tickets: dict[int, dict] = field(default_factory=dict)
    payments: dict[int, dict] = field(default_factory=dict)
    next_id: int = 1000
    clock: datetime = field(default_factory=lambda: datetime(2026, 1, 1, tzinfo=UTC))

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def tick(self) -> str:
        """Each change gets a strictly later `lastUpdated`, like the vendor's per-save timestamps."""
        self.clock = max(self.clock + timedelta(seconds=1), datetime.now(UTC).replace(microsecond=0))
        return iso(self.clock)


def info(updated: str) -> dict:
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


# The demo's roles by company index, in the PSA's order (`payloop dev` enrols them in that order): the first six
# pay by card on auto-pay (the sixth card declines), the seventh by installments, the eighth and ninth by ACH.
# Their current invoices fall due today or in the next days, so auto-pay charges some at once and the rest
# on their due dates as the simulated calendar runs.
EARLY_DUE_IN = (0, 1, 0, 2, 4, 0, 0, 0, 3)
DRIFTING_COMPANY = 10
DRIFT_DAYS_LATE = (3, 8, 15, 25)  # the drifting payer's last four paid invoices, oldest first


def current_due_in(n: int) -> int:
    """Days from the book's today to the due date of company `n`'s current invoice."""
    if n < len(EARLY_DUE_IN):
        return EARLY_DUE_IN[n]
    if n == DRIFTING_COMPANY:
        return 2  # its last payment, 25 days late, is then already in the past
    return 1 + (n * 5) % 21  # manual payers: spread over three weeks, some within the -3 day reminder


def months_before(day: date, months: int) -> date:
    index = day.year * 12 + day.month - 1 - months
    year, month = divmod(index, 12)
    return date(year, month + 1, min(day.day, calendar.monthrange(year, month + 1)[1]))


@dataclass(frozen=True)
class Calendar:
    """When company `n`'s `m`-th monthly invoice is issued and paid (None: still open)."""

    months: int
    today: date | None

    def issued(self, n: int, m: int) -> date:
        if self.today is None:
            return months_before(date(2025, 1, 1), -m)
        latest = self.today + timedelta(days=current_due_in(n) - 30)
        return months_before(latest, self.months - 1 - m)

    def paid_on(self, n: int, m: int, rng: random.Random) -> date | None:
        if self.today is None:
            return issued_plus_random(self.issued(n, m), rng) if m < self.months - 2 else None
        behind = n >= len(EARLY_DUE_IN) and n != DRIFTING_COMPANY and n % 6 == 5  # a month behind
        if m >= self.months - (2 if behind else 1):
            return None
        due = self.issued(n, m) + timedelta(days=30)
        if n == DRIFTING_COMPANY:
            late = self.months - 1 - len(DRIFT_DAYS_LATE)
            return due + timedelta(days=DRIFT_DAYS_LATE[m - late] if m >= late else 0)
        return due + timedelta(days=n % 5 - 2)  # each client's steady habit, so only the drifter drifts

    def day(self, fixed: date, days_before_today: int) -> date:
        """A one-off invoice's date: as in 2025, or that many days before today."""
        return fixed if self.today is None else self.today - timedelta(days=days_before_today)


def issued_plus_random(issued: date, rng: random.Random) -> date:
    return issued + timedelta(days=rng.randint(5, 40))


def seed(state: Book, *, companies: int = 40, months: int = 12, rng_seed: int = 7, today: date | None = None) -> None:
    """A year of a mid-size MSP's billing, deterministic for a given seed (and `today`)."""
    rng = random.Random(rng_seed)
    dates = Calendar(months, today)
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
            "deletedFlag": False, "_info": info(stamp),
        }
        agreement_id = state.new_id()
        start = f"{dates.issued(n, 0).replace(day=1).isoformat()}T00:00:00Z"
        state.agreements[agreement_id] = {
            "id": agreement_id, "name": f"{name} - Managed Services",
            "type": {"id": 1, "name": "Managed Services"}, "company": {"id": cid, "identifier": slug, "name": name},
            "contact": {"id": 1, "name": "Billing Contact"}, "startDate": start,
            "endDate": None, "noEndingDateFlag": True, "billingCycle": {"id": 1, "name": "Monthly"},
            "billingTerms": {"id": 1, "name": "Net 30"}, "billAmount": 0, "prorateFlag": True,
            "currency": {"id": 1, "currencyCode": "USD", "numberOfDecimals": 2},
            "agreementStatus": "Active", "_info": info(stamp),
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
                "description": desc, "quantity": float(qty), "unitPrice": money(price), "uom": uom,
                "billCustomer": "Billable", "effectiveDate": start, "cancelledDate": None,
                "extPrice": money(price * qty), "_info": info(stamp),
            }
        for m in range(months):
            issued = dates.issued(n, m)
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
            paid_on = dates.paid_on(n, m, rng)
            add_invoice(state, cid, issued, lines, agreement_id=agreement_id, rng=rng,
                         paid=paid_on is not None, paid_on=paid_on, stamp=stamp)
        if n % 4 == 1:
            add_invoice(state, cid, dates.day(date(2025, 9, 12), 40), [], time=[(Decimal("3.5"), Decimal("165.00"),
                         "Onsite: firewall replacement"), (Decimal("1.25"), Decimal("165.00"), "Remote: VPN fix")],
                         rng=rng, paid=False, stamp=stamp)
        if n % 5 == 2:
            add_invoice(state, cid, dates.day(date(2025, 10, 3), 50), [("HW-LAPTOP-14", Decimal(2), Decimal("1249.00"),
                         "Business laptop 14in", None), ("ADJ-SHIPPING", Decimal(1), Decimal("35.00"),
                         "Shipping adjustment", None)], rng=rng, paid=False, stamp=stamp)
    first = next(iter(state.companies))
    firsts = [i for i in state.invoices.values() if i["company"]["id"] == first and i["type"] == "Agreement"]
    # A credit memo applied to one invoice; a void; an edited invoice; a billing-dispute ticket.
    credit_id = add_invoice(state, first, dates.day(date(2025, 11, 20), 10), [("CREDIT-SLA", Decimal(1), Decimal("-150.00"),
                             "SLA credit: October outage", None)], rng=rng, paid=False, stamp=stamp,
                             kind="Credit", apply_to=firsts[-1]["id"])
    del credit_id
    open_agreement_invoices = [i for i in state.invoices.values() if i["type"] == "Agreement" and i["balance"]]
    if today is not None:
        # Dated around today, the three fall on manual payers other than the drifter: the auto-pay clients
        # keep their invoices to charge.
        order = list(state.companies)
        kept = set(order[:len(EARLY_DUE_IN)]) | set(order[DRIFTING_COMPANY:DRIFTING_COMPANY + 1])
        open_agreement_invoices = [i for i in open_agreement_invoices if i["company"]["id"] not in kept]
    edited, disputed, void = open_agreement_invoices[:3]
    void["status"] = {"id": 9, "name": "Void", "isClosed": True}
    void["balance"] = 0
    add_line(state, edited, "ADJ-DISCOUNT", Decimal(1), Decimal("-25.00"), "Loyalty discount", None)
    recompute(state, edited)
    add_ticket(state, disputed, "Client disputes the server count on this invoice", stamp=stamp)


def seed_generated(state: Book, *, companies: int, invoices: int, rng_seed: int = 7) -> None:
    """A large book for benchmarks: `companies` companies with a managed-services agreement each and
    `invoices` invoices spread evenly over them across the past two years (one agreement line, plus a
    product line on every fourth), due in 30 days, all but the last few months' paid. Totals are
    computed here, not by `recompute` (which scans every line of the book per invoice)."""
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
            "deletedFlag": False, "_info": info(stamp)}
        aid = agreement_of[cid] = state.new_id()
        state.agreements[aid] = {
            "id": aid, "name": f"{slug} - Managed Services", "type": {"id": 1, "name": "Managed Services"},
            "company": {"id": cid, "identifier": slug, "name": state.companies[cid]["name"]},
            "startDate": "2024-01-01T00:00:00Z", "endDate": None, "noEndingDateFlag": True,
            "billingCycle": {"id": 1, "name": "Monthly"}, "billingTerms": {"id": 1, "name": "Net 30"},
            "currency": {"id": 1, "currencyCode": "USD", "numberOfDecimals": 2}, "agreementStatus": "Active",
            "_info": info(stamp)}
        addition = state.new_id()
        state.additions[addition] = {
            "id": addition, "agreementId": aid, "product": {"id": addition, "identifier": "MS-BASE"},
            "description": base_desc, "quantity": 1.0, "unitPrice": money(base_price), "uom": base_uom,
            "billCustomer": "Billable", "effectiveDate": "2024-01-01T00:00:00Z", "cancelledDate": None,
            "extPrice": money(base_price), "_info": info(stamp)}
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
            "subtotal": money(total), "total": money(total), "payments": money(total) if paid else 0,
            "credits": 0, "balance": 0 if paid else money(total), "_info": info(stamp)}
        state.invoices[iid] = invoice
        for identifier, qty, price, desc, agreement in lines:
            add_line(state, invoice, identifier, qty, price, desc, agreement)
        if paid:
            pid = state.new_id()
            paid_on = issued + timedelta(days=rng.randint(5, 40))
            state.payments[pid] = {"id": pid, "type": "Payment", "invoice": {"id": iid}, "amount": money(total),
                                   "paymentDate": f"{paid_on.isoformat()}T00:00:00Z", "appliedBy": "ach-import",
                                   "source": "bank", "_info": info(stamp)}


def add_invoice(state: Book, company_id: int, issued: date, lines: list, *, rng: random.Random,
                 paid: bool, stamp: str, agreement_id: int | None = None, time: list | None = None,
                 kind: str | None = None, apply_to: int | None = None, paid_on: date | None = None) -> int:
    """Add an invoice; `paid` pays its balance in one payment dated `paid_on` (or 5 to 40 days after issue)."""
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
        "_info": info(stamp),
    }
    state.invoices[iid] = invoice
    for identifier, qty, price, desc, agreement in lines:
        add_line(state, invoice, identifier, qty, price, desc, agreement)
    for hours, rate, notes in time or []:
        tid = state.new_id()
        state.time_entries[tid] = {
            "id": tid, "company": invoice["company"], "chargeToType": "ServiceTicket", "chargeToId": 500 + tid,
            "member": {"id": 7, "identifier": "jtech", "name": "Jordan Tech"},
            "timeStart": f"{issued.isoformat()}T14:00:00Z", "actualHours": float(hours), "hoursBilled": float(hours),
            "hourlyRate": money(rate), "notes": notes, "billableOption": "Billable",
            "invoice": {"id": iid, "identifier": invoice["invoiceNumber"]}, "_info": info(stamp),
        }
    recompute(state, invoice)
    if kind == "Credit" and apply_to:
        target = state.invoices[apply_to]
        target["credits"] = money(Decimal(str(target["credits"])) - Decimal(str(invoice["total"])))
        recompute(state, target)
        invoice["balance"] = 0
    if paid and invoice["balance"]:
        pid = state.new_id()
        state.payments[pid] = {"id": pid, "type": "Payment", "invoice": {"id": iid}, "amount": invoice["balance"],
                               "paymentDate": f"{(paid_on or issued_plus_random(issued, rng)).isoformat()}T00:00:00Z",
                               "appliedBy": "ach-import", "source": "bank", "_info": info(stamp)}
        invoice["payments"] = invoice["balance"]
        recompute(state, invoice)
    return iid


def paid_dates(state: Book) -> dict[int, str]:
    """Each paid invoice's latest payment day (YYYY-MM-DD), for the PSAs that keep one paid date on the invoice."""
    days: dict[int, str] = {}
    for payment in state.payments.values():
        if payment["amount"] > 0:
            invoice_id, day = payment["invoice"]["id"], payment["paymentDate"][:10]
            days[invoice_id] = max(days.get(invoice_id, day), day)
    return days


def add_line(state: Book, invoice: dict, identifier: str, qty: Decimal, price: Decimal, desc: str,
              agreement_id: int | None) -> None:
    pid = state.new_id()
    state.products[pid] = {
        "id": pid, "catalogItem": {"id": zlib.crc32(identifier.encode()) % 10000, "identifier": identifier},
        "description": desc, "quantity": float(qty), "price": money(price), "cost": money(price * Decimal("0.6")),
        "productClass": "Agreement" if agreement_id else "NonInventory",
        "agreement": {"id": agreement_id} if agreement_id else None,
        "invoice": {"id": invoice["id"], "identifier": invoice["invoiceNumber"]},
        "company": invoice["company"], "_info": info(invoice["_info"]["lastUpdated"]),
    }


def invoice_lines(state: Book, invoice_id: int) -> list[tuple[Decimal, Decimal]]:
    """(quantity, unit price) of every line of an invoice: products and billed time."""
    out = [(Decimal(str(p["quantity"])), Decimal(str(p["price"]))) for p in state.products.values()
           if p["invoice"]["id"] == invoice_id]
    out += [(Decimal(str(t["hoursBilled"])), Decimal(str(t["hourlyRate"]))) for t in state.time_entries.values()
            if t["invoice"] and t["invoice"]["id"] == invoice_id]
    return out


def recompute(state: Book, invoice: dict) -> None:
    subtotal = sum((q * p).quantize(Decimal("0.01")) for q, p in invoice_lines(state, invoice["id"]))
    tax = Decimal(str(invoice.get("salesTax") or 0))
    total = subtotal + tax
    paid = Decimal(str(invoice["payments"] or 0))
    credits = Decimal(str(invoice["credits"] or 0))
    invoice["subtotal"], invoice["total"] = money(subtotal), money(total)
    if invoice["status"]["name"] != "Void":
        balance = total - paid - credits if invoice["type"] != "Credit" else Decimal(0)
        invoice["balance"] = money(balance)
        if invoice["type"] != "Credit" and balance <= 0 < total:
            invoice["status"] = {"id": 5, "name": "Paid", "isClosed": True}


def add_ticket(state: Book, invoice: dict, summary: str, *, stamp: str | None = None) -> dict:
    tid = state.new_id()
    ticket = {
        "id": tid, "summary": summary, "recordType": "ServiceTicket", "board": {"id": 3, "name": "Accounting"},
        "status": {"id": 1, "name": "New"}, "type": {"id": 12, "name": "Billing Dispute"},
        "company": invoice["company"], "closedFlag": False,
        "customFields": [{"id": 4, "caption": "Invoice Number", "type": "Text", "entryMethod": "EntryField",
                          "numberOfDecimals": 0, "value": invoice["invoiceNumber"]}],
        "_info": info(stamp or state.tick()),
    }
    state.tickets[tid] = ticket
    return ticket
