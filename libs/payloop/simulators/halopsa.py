"""A local HaloPSA for `payloop dev` and the psa_ingest tests.

Follows the vendor's formats (docs/vendors/halopsa.md, records shaped like ../shared/specs/halopsa/*.json):
OAuth2 client credentials at `POST /auth/token`, bearer tokens on `/api/...`, lists paged with
`pageinate=true&page_size=&page_no=` and answered as `{record_count, <plural>: [...]}`, `order` /
`orderdesc`, updates as a POSTed array of objects with their `id`, and webhooks that call out with
HTTP Basic authentication.

The book is the same MSP year as the ConnectWise simulator's, rendered as Halo clients, contracts,
recurring invoices (a contract's recurring lines), invoices with lines, and billing-dispute tickets.
`python -m payloop.simulators.halopsa --port N` serves it alone.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import secrets
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from payloop.simulators.psa_book import Book, paid_dates
from payloop.simulators.serving import SimulatorServer

CLIENT_ID = "payloop-demo-halo-client"
CLIENT_SECRET = "demo-halo-secret"
MAX_PAGE_SIZE = 100
# Invoice paymentstatus values (**assumption**, Halo's lookup is configurable): 0 unpaid, 1 part paid, 2 paid, 3 void.
UNPAID, PART_PAID, PAID, VOID = 0, 1, 2, 3
DISPUTE_TYPE_ID = 21
PRIVATE = {"_credited", "_total"}  # the simulator's own bookkeeping, not Halo fields
LISTS = {"Client": "clients", "ClientContract": "contracts", "RecurringInvoice": "invoices", "Invoice": "invoices",
         "Tickets": "tickets", "TicketType": "tickettypes"}


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _num(value: Any) -> float:
    return float(Decimal(str(value)).quantize(Decimal("0.01")))


@dataclass
class Fault:
    status: int
    path_contains: str = ""
    retry_after: int | None = None
    method: str | None = None
    delay_s: float = 0.0
    apply_first: bool = False


@dataclass
class HaloState:
    tables: dict[str, dict[int, dict]] = field(default_factory=lambda: {name: {} for name in LISTS})
    webhooks: dict[int, dict] = field(default_factory=dict)
    tokens: set[str] = field(default_factory=set)
    next_id: int = 5000
    clock: datetime = field(default_factory=lambda: datetime(2026, 1, 1, tzinfo=UTC))

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def tick(self) -> str:
        self.clock = max(self.clock + timedelta(milliseconds=10), datetime.now(UTC))
        return _iso(self.clock)

    def __getitem__(self, name: str) -> dict[int, dict]:
        return self.tables[name]


def _line(state: HaloState, *, code: str, description: str, qty: Any, price: Any, item_id: int,
          ticket_id: int = 0, action: int = 0) -> dict:
    net = (Decimal(str(qty)) * Decimal(str(price))).quantize(Decimal("0.01"))
    return {"id": state.new_id(), "item_code": code, "item_shortdescription": description,
            "item_longdescription": description, "qty_order": qty, "unit_price": price, "net_amount": _num(net),
            "tax_amount": 0, "tax_rate": 0, "_itemid": item_id, "faultid": ticket_id, "actioncode": action,
            "nominal_code": "4000", "tax_code": "T0"}


def recompute(invoice: dict) -> None:
    """Totals from the lines; what is due after payments and credits (Halo's amountpaid / amountdue)."""
    total = sum(Decimal(str(line["net_amount"])) + Decimal(str(line["tax_amount"])) for line in invoice["lines"])
    invoice["_total"] = _num(total)
    if invoice["paymentstatus"] == VOID:
        invoice["amountdue"] = 0
        return
    due = total - Decimal(str(invoice["amountpaid"])) - Decimal(str(invoice["_credited"]))
    invoice["amountdue"] = _num(max(due, Decimal(0))) if total > 0 else 0
    if total > 0:
        invoice["paymentstatus"] = PAID if due <= 0 else PART_PAID if invoice["amountpaid"] else UNPAID


def render(book: Book, state: HaloState) -> None:
    stamp = state.tick()
    items: dict[str, int] = {}
    paid = paid_dates(book)

    def item_id(code: str) -> int:
        return items.setdefault(code, 100 + len(items))

    clients: dict[int, int] = {}
    for cw in book.companies.values():
        cid = clients[cw["id"]] = state.new_id()
        state["Client"][cid] = {
            "id": cid, "name": cw["name"], "toplevel_id": 1, "toplevel_name": "Customers", "inactive": False,
            "datecreated": stamp, "accountsemailaddress": cw["invoiceToEmailAddress"],
            "accountsccemailaddress": cw.get("invoiceCCEmailAddress") or "", "paymentterms": 30,
            "ref": cw["identifier"], "main_site_id": cid, "main_site_name": "Main", "customfields": [
                {"id": 140, "name": "CFTimeZone", "value": cw["timeZoneSetup"]["name"]}],
        }
    contracts: dict[int, int] = {}
    for agreement in book.agreements.values():
        kid = contracts[agreement["id"]] = state.new_id()
        client_id = clients[agreement["company"]["id"]]
        state["ClientContract"][kid] = {
            "id": kid, "client_id": client_id, "client_name": state["Client"][client_id]["name"],
            "ref": agreement["name"], "start_date": agreement["startDate"][:10] + "T00:00:00", "end_date": None,
            "started": True, "expired": False, "billingperiod": 1, "status": 1, "invoicedescription": agreement["name"],
            "chargeperdevice": True, "customfields": [{"id": 150, "name": "CFContractType",
                                                       "value": agreement["type"]["name"]}],
        }
        rid = state.new_id()
        state["RecurringInvoice"][rid] = {
            "id": rid, "client_id": client_id, "chid": kid, "invoice_date": agreement["startDate"][:10] + "T00:00:00",
            "lines": [_line(state, code=a["product"]["identifier"], description=a["description"], qty=a["quantity"],
                            price=a["unitPrice"], item_id=item_id(a["product"]["identifier"]))
                      for a in book.additions.values() if a["agreementId"] == agreement["id"]],
        }
    for cw in book.invoices.values():
        iid = state.new_id()
        lines = [_line(state, code=p["catalogItem"]["identifier"], description=p["description"], qty=p["quantity"],
                       price=p["price"], item_id=item_id(p["catalogItem"]["identifier"].removeprefix("PRORATE-")))
                 for p in book.products.values() if p["invoice"]["id"] == cw["id"]]
        lines += [_line(state, code="LABOUR", description=t["notes"], qty=t["hoursBilled"], price=t["hourlyRate"],
                        item_id=item_id("LABOUR"), ticket_id=t["chargeToId"], action=1)
                  for t in book.time_entries.values() if t["invoice"]["id"] == cw["id"]]
        agreement_id = (cw.get("agreement") or {}).get("id")
        invoice = state["Invoice"][iid] = {
            "id": iid, "client_id": clients[cw["company"]["id"]], "invoicenumber": cw["invoiceNumber"],
            "posted": True, "invoice_date": cw["date"][:10] + "T00:00:00", "dateposted": cw["date"][:10] + "T00:00:00",
            "last_modified": stamp, "currency": "USD", "paymentterms": 30, "chid": contracts.get(agreement_id, 0),
            "paymentstatus": VOID if cw["status"]["name"] == "Void" else UNPAID, "amountpaid": cw["payments"],
            "amountdue": 0, "datepaid": f"{paid[cw['id']]}T00:00:00" if cw["id"] in paid else None, "payment_ref": "", "notes_1": "", "_credited": cw["credits"],
            "lines": lines,
        }
        recompute(invoice)
    for ticket in book.tickets.values():
        tid = state.new_id()
        number = next(f["value"] for f in ticket["customFields"] if f["caption"] == "Invoice Number")
        state["Tickets"][tid] = {
            "id": tid, "summary": ticket["summary"], "client_id": clients[ticket["company"]["id"]],
            "tickettype_id": DISPUTE_TYPE_ID, "status_id": 1, "dateoccurred": stamp, "lastactiondate": stamp,
            "hasbeenclosed": False, "customfields": [{"id": 160, "name": "CFInvoiceNumber", "value": number}],
        }
    for type_id, name in ((1, "Incident"), (3, "Service Request"), (DISPUTE_TYPE_ID, "Billing Dispute")):
        state["TicketType"][type_id] = {"id": type_id, "name": name, "use": "ticket"}


def basic_auth(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "error_description": message} if status == 401 else {"message": message},
                        status_code=status, headers=headers)


class HaloSimulator(SimulatorServer):
    """The simulator's state and its HTTP app; `start()` serves it on a port of this event loop."""

    source = "halopsa"

    def __init__(self, *, seeded: bool = True, today: date | None = None):
        super().__init__(HaloState(), render, seeded=seeded, today=today)
        self.app = self._build_app()

    # --- test controls ---
    def fail_next(self, status: int, *, path_contains: str = "", retry_after: int | None = None,
                  method: str | None = None, delay_s: float = 0.0, apply_first: bool = False) -> None:
        self.faults.append(Fault(status, path_contains, retry_after, method, delay_s, apply_first))

    def _changed(self, invoice: dict, action: str) -> dict:
        recompute(invoice)
        invoice["last_modified"] = self.state.tick()
        self.notify("Invoice", invoice["id"], action)
        return invoice

    def add_invoice_line(self, invoice_id: int, code: str, qty: str, price: str, description: str) -> dict:
        invoice = self.state["Invoice"][invoice_id]
        invoice["lines"].append(_line(self.state, code=code, description=description, qty=float(qty),
                                      price=float(price), item_id=999))
        return self._changed(invoice, "Invoice Updated")

    def void_invoice(self, invoice_id: int) -> dict:
        invoice = self.state["Invoice"][invoice_id]
        invoice["paymentstatus"] = VOID
        return self._changed(invoice, "Invoice Updated")

    def new_invoice(self, client_id: int, lines: list[tuple[str, str, str, str]]) -> dict:
        iid = self.state.new_id()
        today = self.state.clock.strftime("%Y-%m-%dT00:00:00")
        invoice = self.state["Invoice"][iid] = {
            "id": iid, "client_id": client_id, "invoicenumber": f"INV-{iid}", "posted": True, "invoice_date": today,
            "dateposted": today, "last_modified": "", "currency": "USD", "paymentterms": 30, "chid": 0,
            "paymentstatus": UNPAID, "amountpaid": 0, "amountdue": 0, "datepaid": None, "payment_ref": "",
            "notes_1": "", "_credited": 0,
            "lines": [_line(self.state, code=c, description=d, qty=float(q), price=float(p), item_id=998)
                      for c, q, p, d in lines]}
        return self._changed(invoice, "Invoice Created")

    # --- webhooks ---
    def notify(self, entity: str, record_id: int, event: str) -> None:
        for hook in list(self.state.webhooks.values()):
            if not hook.get("enabled", True) or entity not in hook.get("entities", [entity]):
                continue
            body = json.dumps({"id": secrets.token_hex(8), "webhook_id": hook["id"], "event": event,
                               "object_type": entity, "object_id": record_id,
                               "timestamp": _iso(datetime.now(UTC))}).encode()
            auth = basic_auth(hook["username"], hook["password"])
            self.deliver(hook["url"], body, {"authorization": auth})

    def _listing(self, request: Request, name: str, records: list[dict]) -> JSONResponse:
        params = request.query_params
        order = params.get("order") or "id"
        records = sorted(records, key=lambda r: (str(r.get(order) or ""), r["id"]) if order != "id" else r["id"],
                         reverse=params.get("orderdesc", "false").lower() == "true")
        body: dict[str, Any] = {"record_count": len(records)}
        if params.get("pageinate", "false").lower() == "true":
            try:
                size = min(int(params.get("page_size", "50")), MAX_PAGE_SIZE)
                page = int(params.get("page_no", "1"))
            except ValueError:
                return _error(400, "page_size and page_no must be integers")
            if size < 1 or page < 1:
                return _error(400, "page_size and page_no must be positive")
            records = records[(page - 1) * size: page * size]
            body.update(page_no=page, page_size=size)
        include_lines = params.get("includelines", "false").lower() == "true"
        body[LISTS[name]] = [{k: v for k, v in r.items() if k not in PRIVATE and (include_lines or k != "lines")}
                             for r in records]
        return JSONResponse(body)

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="HaloPSA simulator", openapi_url=None, docs_url=None, redoc_url=None)
        sim = self

        @app.middleware("http")
        async def gate(request: Request, call_next):
            sim.requests.append({"method": request.method, "path": request.url.path,
                                 "query": dict(request.query_params), "headers": dict(request.headers),
                                 "body": await request.body()})
            if request.url.path.startswith("/api/"):
                token = request.headers.get("authorization", "").removeprefix("Bearer ")
                if token not in sim.state.tokens:
                    return _error(401, "invalid_token")
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
            return _error(fault.status, f"simulated {fault.status}", headers)

        @app.post("/auth/token")
        async def token(request: Request):
            form = dict(await request.form())
            if form.get("grant_type") != "client_credentials":
                return JSONResponse({"error": "unsupported_grant_type"}, status_code=400)
            if form.get("client_id") != CLIENT_ID or form.get("client_secret") != CLIENT_SECRET:
                return JSONResponse({"error": "invalid_client", "error_description": "Invalid client credentials"},
                                    status_code=401)
            issued = secrets.token_urlsafe(24)
            sim.state.tokens.add(issued)
            return {"access_token": issued, "token_type": "Bearer", "expires_in": 3600,
                    "scope": form.get("scope", "all")}

        @app.get("/api/{name}")
        async def listing(name: str, request: Request):
            if name not in LISTS:
                return _error(404, f"unknown resource {name}")
            records = list(sim.state[name].values())
            params = request.query_params
            for key in ("client_id", "tickettype_id"):
                if params.get(key):
                    records = [r for r in records if str(r.get(key)) == params[key]]
            return sim._listing(request, name, records)

        @app.get("/api/{name}/{record_id}")
        async def one(name: str, record_id: int):
            record = sim.state.tables.get(name, {}).get(record_id)
            if record is None:
                return _error(404, f"{name} {record_id} not found")
            return {k: v for k, v in record.items() if k not in PRIVATE}

        @app.post("/api/Invoice")
        async def update_invoices(request: Request):
            body = json.loads(await request.body(), parse_float=Decimal)
            if not isinstance(body, list):
                return _error(400, "the body must be an array of invoices")
            out = []
            for change in body:
                invoice = sim.state["Invoice"].get(change.get("id"))
                if invoice is None:
                    return _error(400, f"invoice {change.get('id')} not found")
                if invoice["paymentstatus"] == VOID:
                    return _error(400, "a void invoice cannot take payments")
                allowed = {"id", "amountpaid", "datepaid", "payment_ref", "notes_1"}
                if set(change) - allowed:
                    return _error(400, f"cannot update {', '.join(sorted(set(change) - allowed))}")
                invoice.update({k: (float(v) if isinstance(v, Decimal) else v) for k, v in change.items() if k != "id"})
                sim._changed(invoice, "Invoice Updated")
                out.append({k: v for k, v in invoice.items() if k not in PRIVATE})
            return JSONResponse(out[0] if len(out) == 1 else out, status_code=201)

        @app.post("/api/Webhook")
        async def add_webhook(request: Request):
            body = await request.json()
            hooks = body if isinstance(body, list) else [body]
            out = []
            for hook in hooks:
                missing = [k for k in ("name", "url", "username", "password") if not hook.get(k)]
                if missing:
                    return _error(400, f"missing {', '.join(missing)}")
                wid = sim.state.new_id()
                sim.state.webhooks[wid] = {**hook, "id": wid}
                out.append({k: v for k, v in sim.state.webhooks[wid].items() if k != "password"})
            return JSONResponse(out[0] if len(out) == 1 else out, status_code=201)

        return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8202)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--today", type=date.fromisoformat, help="date the book around this day (payloop dev)")
    args = parser.parse_args()

    async def serve() -> None:
        sim = HaloSimulator(today=args.today)
        await sim.start(args.port, args.host)
        print(f"HaloPSA simulator at {sim.base_url} (client_id {CLIENT_ID}, client_secret {CLIENT_SECRET})", flush=True)
        await sim.serve_until_stopped()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
