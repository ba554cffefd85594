"""A local ConnectWise PSA (Manage REST API 3.0) for `payloop dev` and the psa_ingest tests.

Follows the vendor's formats (docs/vendors/connectwise.md): the API root is
`/v4_6_release/apis/3.0`; Basic auth of `company+publicKey:privateKey` plus a `clientId` header;
`page`/`pageSize` pagination with an RFC 8288 `Link` header; `conditions` filters
(`lastUpdated>[2026-01-01T00:00:00Z] and invoice/id in (1,2)`); errors as `{code, message}`;
callbacks registered at `/system/callbacks` and signed with `x-content-signature`
(base64 HMAC-SHA256 of the body keyed by SHA-256 of the signing key published at `Metadata.key_url`).

It is stateful and serves the MSP book of `psa_book.py` as is (40 companies, a year of monthly
managed-services invoices with per-device, per-user and tiered additions, seat changes with
pro-rated lines, time-and-materials and product invoices, credits, a void, an edited invoice and a
billing-dispute ticket; each payment with its `paymentDate` at `/finance/invoices/{id}/payments`),
dated 2025, or around `--today` (what `payloop dev` passes). Tests drive it in-process (`ConnectWiseSimulator`), edit its state and
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
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from payloop.simulators.psa_book import (
    Book, add_invoice, add_line, info, iso, money, recompute, seed, seed_generated,
)

API_ROOT = "/v4_6_release/apis/3.0"
COMPANY_ID = "payloopdemo"
PUBLIC_KEY = "demo-public-key"
PRIVATE_KEY = "demo-private-key"
CLIENT_ID = "00000000-demo-4000-8000-clientid0001"
MAX_PAGE_SIZE = 1000


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
class ConnectWiseState(Book):
    """The book as the ConnectWise simulator serves it, with the callbacks registered on it."""

    callbacks: dict[int, dict] = field(default_factory=dict)
    signing_keys: dict[str, str] = field(default_factory=dict)


# --- the HTTP server -------------------------------------------------------------------------------

def _error(status: int, code: str, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"code": code, "message": message, "errors": None}, status_code=status, headers=headers)


class ConnectWiseSimulator:
    """The simulator's state and its HTTP app; `start()` serves it on a port of this event loop."""

    def __init__(self, *, seeded: bool = True, companies: int = 40, months: int = 12, invoices: int | None = None,
                 today: date | None = None):
        self.state = ConnectWiseState()
        if seeded and invoices is not None:
            seed_generated(self.state, companies=companies, invoices=invoices)
        elif seeded:
            seed(self.state, companies=companies, months=months, today=today)
        self.faults: list[Fault] = []
        self._payments_index: tuple[int, dict[int, list[dict]]] = (-1, {})
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
        recompute(self.state, invoice)
        invoice["_info"] = info(self.state.tick())
        self.notify("invoice", invoice_id, "updated")
        return invoice

    def add_invoice_line(self, invoice_id: int, identifier: str, qty: str, price: str, desc: str) -> dict:
        invoice = self.state.invoices[invoice_id]
        add_line(self.state, invoice, identifier, Decimal(qty), Decimal(price), desc,
                  (invoice.get("agreement") or {}).get("id"))
        return self.update_invoice(invoice_id)

    def void_invoice(self, invoice_id: int) -> dict:
        return self.update_invoice(invoice_id, status={"id": 9, "name": "Void", "isClosed": True}, balance=0)

    def new_invoice(self, company_id: int, lines: list[tuple[str, str, str, str]]) -> dict:
        iid = add_invoice(self.state, company_id, datetime.now(UTC).date(),
                           [(i, Decimal(q), Decimal(p), d, None) for i, q, p, d in lines],
                           rng=random.Random(1), paid=False, stamp=self.state.tick())
        self.notify("invoice", iid, "added")
        return self.state.invoices[iid]

    def payments_of(self, invoice_id: int) -> list[dict]:
        # Indexed, and rebuilt when a payment comes or goes: a sync reads the payments of every paid invoice,
        # and a generated book holds tens of thousands.
        if self._payments_index[0] != len(self.state.payments):
            index: dict[int, list[dict]] = {}
            for payment in self.state.payments.values():
                index.setdefault(payment["invoice"]["id"], []).append(payment)
            self._payments_index = (len(self.state.payments), index)
        return list(self._payments_index[1].get(invoice_id, []))

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
                paid_on = body.get("paymentDate") or iso(datetime.now(UTC))
            except (ValueError, KeyError, ArithmeticError):
                return _error(400, "InvalidObject", "amount is required")
            if body.get("type", "Payment") not in ("Payment", "Credit", "Refund"):
                return _error(400, "InvalidObject", "type must be Payment, Credit or Refund")
            if invoice["status"]["name"] == "Void":
                return _error(400, "InvalidObject", "Cannot apply a payment to a void invoice")
            pid = sim.state.new_id()
            stamp = sim.state.tick()
            payment = {"id": pid, "type": body.get("type", "Payment"), "invoice": {"id": invoice_id},
                       "amount": money(amount), "paymentDate": paid_on, "source": body.get("source"),
                       "appliedBy": "api", "_info": info(stamp)}
            sim.state.payments[pid] = payment
            invoice["payments"] = money(Decimal(str(invoice["payments"])) + amount)
            if invoice["status"]["name"] == "Paid" and amount < 0:
                invoice["status"] = {"id": 1, "name": "Sent", "isClosed": False}
            recompute(sim.state, invoice)
            invoice["_info"] = info(stamp)
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
                        "_info": info(sim.state.tick())}
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
    parser.add_argument("--today", type=date.fromisoformat, help="date the book around this day (payloop dev)")
    args = parser.parse_args()

    async def serve() -> None:
        sim = ConnectWiseSimulator(companies=args.companies, invoices=args.invoices, today=args.today)
        await sim.start(args.port, args.host)
        print(f"ConnectWise simulator at {sim.api_url} (company {COMPANY_ID}, public key {PUBLIC_KEY}, "
              f"private key {PRIVATE_KEY}, clientId {CLIENT_ID})", flush=True)
        await sim._task

    asyncio.run(serve())


if __name__ == "__main__":
    main()
