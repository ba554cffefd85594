"""A local Autotask PSA (REST API v1.0) for `payloop dev` and the psa_ingest tests.

Follows the vendor's formats (docs/vendors/autotask.md): API root `/ATServicesRest/V1.0`, zone
discovery at `zoneInformation?user=`, the `ApiIntegrationCode` / `UserName` / `Secret` headers, entity
queries as JSON filters (`GET {Entity}/query?search=...` or `POST {Entity}/query`) answered with
`{items, pageDetails}` and followed through `pageDetails.nextPageUrl`, errors as `{"errors": [...]}`,
picklists under `{Entity}/entityInformation/fields`, and Company/Ticket webhooks signed with
`X-Hook-Signature: sha1=<base64 HMAC-SHA1 of the body with the webhook's secret key>`.

The book is the same realistic MSP year as the ConnectWise simulator's (one seed, rendered in
Autotask's shapes): companies, recurring-service contracts with services and units, invoices with
billing items, a negative invoice as a credit, a voided invoice and a billing-dispute ticket.
`python -m payloop.simulators.autotask --port N` serves it alone.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import hmac
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from payloop.simulators.psa_book import Book, paid_dates
from payloop.simulators.serving import SimulatorServer

API_ROOT = "/ATServicesRest/V1.0"
INTEGRATION_CODE = "PAYLOOPDEMOINTEGRATION"
USERNAME = "api-user@payloopdemo.example"
SECRET = "demo-autotask-secret"
MAX_RECORDS = 500

# Picklists (served at {Entity}/entityInformation/fields; real values differ per instance).
PAYMENT_TERMS = {1: "Due on Receipt", 2: "Net 15", 3: "Net 30", 4: "Net 45", 5: "Net 60"}
ISSUE_TYPES = {3: "Hardware", 7: "Software", 12: "Billing Dispute"}
CONTRACT_TYPES = {1: "Time & Materials", 3: "Fixed Price", 4: "Block Hours", 6: "Retainer", 7: "Recurring Service"}
BILLING_ITEM_TYPES = {1: "Labor", 2: "Labor Adjustment", 3: "Project Cost", 4: "Ticket Cost", 5: "Contract Cost",
                      6: "Operational Cost", 7: "Recurring Contract Service",
                      8: "Recurring Contract Service Adjustment", 9: "Milestone"}
PICKLISTS = {
    "Invoices": {"paymentTerm": PAYMENT_TERMS},
    "Tickets": {"issueType": ISSUE_TYPES},
    "Contracts": {"contractType": CONTRACT_TYPES},
    "BillingItems": {"billingItemType": BILLING_ITEM_TYPES},
    "CompanyWebhookFields": {"fieldID": {5: "companyName", 12: "isActive", 31: "phone"}},
    "TicketWebhookFields": {"fieldID": {4: "status", 8: "issueType", 9: "title"}},
}
ENTITIES = ("Companies", "Contracts", "Services", "ContractServices", "ContractServiceUnits", "Invoices",
            "BillingItems", "Tickets", "CompanyWebhooks", "TicketWebhooks")


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _day(value: str) -> str:
    return f"{value[:10]}T00:00:00.000Z"


def _num(value: Any) -> float:
    # The wire format is a JSON number (double); two-decimal values print back exactly.
    return float(Decimal(str(value)).quantize(Decimal("0.01")))


# --- filters ---------------------------------------------------------------------------------------

class BadQuery(ValueError):
    pass


def _value(record: dict, name: str) -> Any:
    for key, value in record.items():
        if key.lower() == name.lower():
            return value
    for udf in record.get("userDefinedFields") or []:
        if udf["name"].lower() == name.lower():
            return udf["value"]
    return None


def _comparable(actual: Any, expected: Any) -> tuple[Any, Any]:
    if isinstance(actual, str) and isinstance(expected, str) and actual[:4].isdigit() and "T" in actual:
        parse = lambda v: datetime.fromisoformat(v.replace("Z", "+00:00"))  # noqa: E731
        try:
            return parse(actual), parse(expected)
        except ValueError:
            pass
    if isinstance(actual, (int, float)) and not isinstance(actual, bool) and isinstance(expected, (int, float, str)):
        try:
            return Decimal(str(actual)), Decimal(str(expected))
        except ArithmeticError:
            pass
    return actual, expected


def matches(record: dict, expression: dict) -> bool:
    op = str(expression.get("op", "")).lower()
    if op in ("and", "or"):
        items = expression.get("items") or []
        results = (matches(record, item) for item in items)
        return all(results) if op == "and" else any(results)
    name = expression.get("field")
    if not name:
        raise BadQuery(f"filter item without a field: {expression}")
    actual = _value(record, name)
    expected = expression.get("value")
    if op == "exist":
        return actual is not None
    if op == "notexist":
        return actual is None
    if op in ("in", "notin"):
        if not isinstance(expected, list):
            raise BadQuery(f"'{op}' needs a list value")
        inside = str(actual) in {str(v) for v in expected}  # ids and picklist values: compare as text
        return inside if op == "in" else not inside
    if actual is None:
        return op == "noteq"
    a, e = _comparable(actual, expected)
    text_a, text_e = str(actual).lower(), str(expected).lower()
    try:
        return {"eq": lambda: a == e, "noteq": lambda: a != e, "gt": lambda: a > e, "gte": lambda: a >= e,
                "lt": lambda: a < e, "lte": lambda: a <= e, "beginswith": lambda: text_a.startswith(text_e),
                "endswith": lambda: text_a.endswith(text_e), "contains": lambda: text_e in text_a}[op]()
    except KeyError:
        raise BadQuery(f"unknown operator {op!r}") from None
    except TypeError:
        return False


# --- state -----------------------------------------------------------------------------------------

@dataclass
class Fault:
    status: int
    path_contains: str = ""
    retry_after: int | None = None
    method: str | None = None
    delay_s: float = 0.0
    apply_first: bool = False  # apply the request, then fail or stall: a timeout after the change landed


@dataclass
class AutotaskState:
    tables: dict[str, dict[int, dict]] = field(default_factory=lambda: {name: {} for name in ENTITIES})
    webhook_fields: dict[int, list[dict]] = field(default_factory=dict)
    next_id: int = 29_680_000
    clock: datetime = field(default_factory=lambda: datetime(2026, 1, 1, tzinfo=UTC))

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def tick(self) -> str:
        self.clock = max(self.clock + timedelta(seconds=1), datetime.now(UTC).replace(microsecond=0))
        return _iso(self.clock)

    def __getitem__(self, entity: str) -> dict[int, dict]:
        return self.tables[entity]


def render(book: Book, state: AutotaskState) -> None:
    """The MSP book in Autotask's shapes: services are catalogue items, additions contract services."""
    stamp = state.tick()
    companies: dict[int, int] = {}
    for cw in book.companies.values():
        cid = companies[cw["id"]] = state.new_id()
        emails = ";".join(e for e in (cw["invoiceToEmailAddress"], cw.get("invoiceCCEmailAddress")) if e)
        state["Companies"][cid] = {
            "id": cid, "companyName": cw["name"], "companyNumber": cw["identifier"], "companyType": 1,
            "isActive": True, "address1": cw["addressLine1"], "city": cw["city"], "state": cw["state"],
            "postalCode": cw["zip"], "phone": cw["phoneNumber"], "createDate": stamp,
            "lastActivityDate": stamp, "lastTrackedModifiedDateTime": stamp,
            "userDefinedFields": [{"name": "Billing Email", "value": emails},
                                  {"name": "Payment Terms", "value": cw["billingTerms"]["name"]},
                                  {"name": "Time Zone", "value": cw["timeZoneSetup"]["name"]}],
        }
    services: dict[str, int] = {}
    for addition in book.additions.values():
        code = addition["product"]["identifier"]
        if code not in services:
            sid = services[code] = state.new_id()
            state["Services"][sid] = {"id": sid, "name": code, "description": addition["description"],
                                      "unitPrice": addition["unitPrice"], "periodType": 3, "isActive": True,
                                      "invoiceDescription": addition["description"]}
    contracts: dict[int, int] = {}
    contract_services: dict[tuple[int, str], int] = {}
    for agreement in book.agreements.values():
        kid = contracts[agreement["id"]] = state.new_id()
        state["Contracts"][kid] = {
            "id": kid, "companyID": companies[agreement["company"]["id"]], "contractName": agreement["name"],
            "contractType": 7, "contractPeriodType": "m", "status": 1, "isDefaultContract": False,
            "startDate": _day(agreement["startDate"]), "endDate": "2027-12-31T00:00:00.000Z",
            "lastModifiedDateTime": stamp,
        }
    for addition in book.additions.values():
        kid = contracts[addition["agreementId"]]
        code = addition["product"]["identifier"]
        csid = contract_services[(kid, code)] = state.new_id()
        state["ContractServices"][csid] = {
            "id": csid, "contractID": kid, "serviceID": services[code], "unitPrice": addition["unitPrice"],
            "adjustedPrice": addition["unitPrice"], "invoiceDescription": addition["description"],
            "internalDescription": addition["uom"],
        }
        uid = state.new_id()
        state["ContractServiceUnits"][uid] = {
            "id": uid, "contractID": kid, "contractServiceID": csid, "serviceID": services[code],
            "units": addition["quantity"], "price": addition["unitPrice"], "startDate": "2025-12-01T00:00:00.000Z",
            "endDate": "2026-12-31T00:00:00.000Z",
        }
    invoices: dict[int, int] = {}
    paid_on = paid_dates(book)
    for cw in book.invoices.values():
        iid = invoices[cw["id"]] = state.new_id()
        voided = cw["status"]["name"] == "Void"
        paid = not voided and cw["type"] != "Credit" and Decimal(str(cw["balance"])) <= 0
        state["Invoices"][iid] = {
            "id": iid, "companyID": companies[cw["company"]["id"]], "invoiceNumber": cw["invoiceNumber"],
            "invoiceDateTime": _day(cw["date"]), "createDateTime": _day(cw["date"]), "dueDate": _day(cw["dueDate"]),
            "fromDate": _day(cw["date"]), "toDate": _day(cw["date"]), "invoiceTotal": cw["total"],
            "totalTaxValue": cw["salesTax"], "paymentTerm": 3, "isVoided": voided,
            "voidedDate": stamp if voided else None, "paidDate": _day(paid_on.get(cw["id"], cw["dueDate"])) if paid else None,
            "comments": None, "orderNumber": None, "webServiceDate": None, "batchID": 1,
        }
    for product in book.products.values():
        kid = contracts.get((product.get("agreement") or {}).get("id"))
        code = product["catalogItem"]["identifier"]
        prorated = code.startswith("PRORATE-")
        service_code = code.removeprefix("PRORATE-")
        csid = contract_services.get((kid, service_code)) if kid else None
        _billing_item(state, state["Invoices"][invoices[product["invoice"]["id"]]], name=code,
                      description=product["description"], quantity=product["quantity"], rate=product["price"],
                      item_type=8 if prorated else 7 if csid else 4, contract_id=kid,
                      service_id=state["ContractServices"][csid]["serviceID"] if csid else None)
    for entry in book.time_entries.values():
        _billing_item(state, state["Invoices"][invoices[entry["invoice"]["id"]]], name="Labor",
                      description=entry["notes"], quantity=entry["hoursBilled"], rate=entry["hourlyRate"],
                      item_type=1, contract_id=None, service_id=None, time_entry_id=entry["id"])
    for ticket in book.tickets.values():
        tid = state.new_id()
        number = next(f["value"] for f in ticket["customFields"] if f["caption"] == "Invoice Number")
        state["Tickets"][tid] = {
            "id": tid, "ticketNumber": f"T20251120.{tid % 10000:04d}", "title": ticket["summary"],
            "companyID": companies[ticket["company"]["id"]], "issueType": 12, "status": 1, "createDate": stamp,
            "lastActivityDate": stamp, "completedDate": None,
            "userDefinedFields": [{"name": "Invoice Number", "value": number}],
        }


def _billing_item(state: AutotaskState, invoice: dict, *, name: str, description: str, quantity: Any, rate: Any,
                  item_type: int, contract_id: int | None, service_id: int | None,
                  time_entry_id: int | None = None) -> dict:
    bid = state.new_id()
    amount = (Decimal(str(quantity)) * Decimal(str(rate))).quantize(Decimal("0.01"))
    item = state["BillingItems"][bid] = {
        "id": bid, "invoiceID": invoice["id"], "companyID": invoice["companyID"], "contractID": contract_id,
        "serviceID": service_id, "itemName": name, "description": description, "quantity": quantity,
        "rate": rate, "extendedPrice": _num(amount), "totalAmount": _num(amount), "taxDollars": 0,
        "billingItemType": item_type, "timeEntryID": time_entry_id, "itemDate": invoice["invoiceDateTime"],
        "postedDate": invoice["invoiceDateTime"], "nonBillable": False,
    }
    return item


def billing_items(state: AutotaskState, invoice_id: int) -> list[dict]:
    return [b for b in state["BillingItems"].values() if b["invoiceID"] == invoice_id]


def _recompute(state: AutotaskState, invoice: dict) -> None:
    subtotal = sum(Decimal(str(b["extendedPrice"])) for b in billing_items(state, invoice["id"]))
    invoice["invoiceTotal"] = _num(subtotal + Decimal(str(invoice["totalTaxValue"] or 0)))


def sign_webhook(secret_key: str, body: bytes) -> str:
    """Autotask's X-Hook-Signature: `sha1=` and the base64 HMAC-SHA1 of the raw body with the secret key."""
    return "sha1=" + base64.b64encode(hmac.new(secret_key.encode(), body, hashlib.sha1).digest()).decode()


def _error(status: int, *messages: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"errors": list(messages)}, status_code=status, headers=headers)


class AutotaskSimulator(SimulatorServer):
    """The simulator's state and its HTTP app; `start()` serves it on a port of this event loop."""

    source = "autotask"

    def __init__(self, *, seeded: bool = True, today: date | None = None):
        super().__init__(AutotaskState(), render, seeded=seeded, today=today)
        self.app = self._build_app()

    @property
    def api_url(self) -> str:
        return self.base_url + API_ROOT

    # --- test controls ---
    def fail_next(self, status: int, *, path_contains: str = "", retry_after: int | None = None,
                  method: str | None = None, delay_s: float = 0.0, apply_first: bool = False) -> None:
        self.faults.append(Fault(status, path_contains, retry_after, method, delay_s, apply_first))

    def void_invoice(self, invoice_id: int) -> dict:
        invoice = self.state["Invoices"][invoice_id]
        invoice.update(isVoided=True, voidedDate=self.state.tick(), voidedByResourceID=29682885)
        return invoice

    def mark_paid(self, invoice_id: int, paid_on: date | None = None) -> dict:
        invoice = self.state["Invoices"][invoice_id]
        self.state.tick()
        invoice["paidDate"] = _day((paid_on or self.state.clock.date()).isoformat())
        return invoice

    def new_invoice(self, company_id: int, lines: list[tuple[str, str, str, str]]) -> dict:
        iid = self.state.new_id()
        stamp = self.state.tick()
        invoice = self.state["Invoices"][iid] = {
            "id": iid, "companyID": company_id, "invoiceNumber": str(iid), "invoiceDateTime": _day(stamp),
            "createDateTime": stamp, "dueDate": _day((self.state.clock + timedelta(days=30)).isoformat()),
            "fromDate": _day(stamp), "toDate": _day(stamp), "invoiceTotal": 0, "totalTaxValue": 0, "paymentTerm": 3,
            "isVoided": False, "voidedDate": None, "paidDate": None, "comments": None, "orderNumber": None,
            "webServiceDate": None, "batchID": 2,
        }
        for name, qty, price, description in lines:
            _billing_item(self.state, invoice, name=name, description=description, quantity=float(qty),
                          rate=float(price), item_type=4, contract_id=None, service_id=None)
        _recompute(self.state, invoice)
        return invoice

    def rename_company(self, company_id: int, name: str) -> dict:
        company = self.state["Companies"][company_id]
        company.update(companyName=name, lastTrackedModifiedDateTime=self.state.tick())
        self.notify("Companies", company_id, "Update", {"companyName": name})
        return company

    # --- webhooks ---
    def notify(self, entity: str, record_id: int, action: str, fields: dict) -> None:
        """Call out every active webhook of the entity, as Autotask does when a subscribed field changes."""
        table = {"Companies": "CompanyWebhooks", "Tickets": "TicketWebhooks"}[entity]
        for hook in list(self.state[table].values()):
            if not hook.get("isActive") or not hook.get(f"isSubscribedTo{action}Events"):
                continue
            hook["_sequence"] = hook.get("_sequence", 0) + 1
            body = json.dumps({"Action": action, "Guid": hook["webhookGUID"], "EntityType": entity[:-1] if
                               entity != "Companies" else "Company", "Id": record_id, "Fields": fields,
                               "EventTime": _iso(datetime.now(UTC)), "SequenceNumber": hook["_sequence"],
                               "PersonID": 29682885}).encode()
            signature = sign_webhook(hook["secretKey"], body)
            self.deliver(hook["webhookUrl"], body, {"x-hook-signature": signature})

    def _authorized(self, request: Request) -> bool:
        h = request.headers
        return (h.get("apiintegrationcode") == INTEGRATION_CODE and h.get("username") == USERNAME
                and h.get("secret") == SECRET)

    def _page(self, entity: str, search: dict, after_id: int) -> JSONResponse:
        try:
            expression = {"op": "and", "items": search.get("filter") or search.get("Filter") or []}
            if not expression["items"]:
                raise BadQuery("a query needs at least one filter expression")
            size = min(int(search.get("MaxRecords") or search.get("maxRecords") or MAX_RECORDS), MAX_RECORDS)
            selected = sorted((r for r in self.state[entity].values() if r["id"] > after_id and matches(r, expression)),
                              key=lambda r: r["id"])
        except (BadQuery, ValueError, TypeError) as exc:
            return _error(500, str(exc))
        items = [{k: v for k, v in r.items() if not k.startswith("_")} for r in selected[:size]]
        next_url = None
        if len(selected) > size:
            paging = base64.urlsafe_b64encode(json.dumps({"after": items[-1]["id"]}).encode()).decode()
            next_url = (f"{self.api_url}/{entity}/query/next?paging={paging}"
                        f"&search={quote(json.dumps(search, separators=(',', ':')))}")
        return JSONResponse({"items": items, "pageDetails": {"count": len(items), "requestCount": size,
                                                             "prevPageUrl": None, "nextPageUrl": next_url}})

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="Autotask PSA simulator", openapi_url=None, docs_url=None, redoc_url=None)
        sim = self

        @app.middleware("http")
        async def gate(request: Request, call_next):
            sim.requests.append({"method": request.method, "path": request.url.path,
                                 "query": dict(request.query_params), "headers": dict(request.headers),
                                 "body": await request.body()})
            if not request.url.path.lower().startswith(API_ROOT.lower()):
                return _error(404, "Unknown path")
            if not sim._authorized(request):
                return _error(401, "Unauthorized: the ApiIntegrationCode, UserName and Secret headers must name "
                                   "an active API user")
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
            return _error(fault.status, f"simulated {fault.status}", headers=headers)

        @app.get(API_ROOT + "/zoneInformation")
        @app.get(API_ROOT + "/ZoneInformation")
        async def zone(user: str = ""):
            if user.lower() != USERNAME:
                return _error(404, f"Zone information not found for user {user!r}")
            return {"zoneName": "Simulator Zone", "url": f"{sim.base_url}/ATServicesRest/", "webUrl": sim.base_url,
                    "ci": 7}

        @app.get(API_ROOT + "/Version")
        async def version():
            return {"apiVersions": ["1.0"]}

        @app.get(API_ROOT + "/{entity}/entityInformation/fields")
        async def fields(entity: str):
            picklists = PICKLISTS.get(entity, {})
            return {"fields": [{"name": name, "dataType": "integer", "isPickList": True, "picklistValues": [
                {"value": str(value), "label": label, "isActive": True, "isDefaultValue": False, "sortOrder": value}
                for value, label in values.items()]} for name, values in picklists.items()]}

        @app.get(API_ROOT + "/{entity}/query")
        async def query_get(entity: str, search: str = ""):
            if entity not in sim.state.tables:
                return _error(404, f"Unknown entity {entity}")
            try:
                parsed = json.loads(search)
            except ValueError:
                return _error(500, "search must be a JSON query")
            return sim._page(entity, parsed, 0)

        @app.post(API_ROOT + "/{entity}/query")
        async def query_post(entity: str, request: Request):
            if entity not in sim.state.tables:
                return _error(404, f"Unknown entity {entity}")
            try:
                parsed = json.loads(await request.body())
            except ValueError:
                return _error(500, "the body must be a JSON query")
            return sim._page(entity, parsed, 0)

        @app.get(API_ROOT + "/{entity}/query/next")
        async def query_next(entity: str, paging: str, search: str):
            try:
                after = json.loads(base64.urlsafe_b64decode(paging))["after"]
                parsed = json.loads(search)
            except (ValueError, KeyError):
                return _error(500, "invalid paging token")
            return sim._page(entity, parsed, int(after))

        @app.get(API_ROOT + "/{entity}/{record_id}")
        async def get_one(entity: str, record_id: int):
            record = sim.state.tables.get(entity, {}).get(record_id)
            return {"item": {k: v for k, v in record.items() if not k.startswith("_")} if record else None}

        @app.patch(API_ROOT + "/Invoices")
        async def update_invoice(request: Request):
            body = json.loads(await request.body(), parse_float=Decimal)
            invoice = sim.state["Invoices"].get(body.get("id"))
            if invoice is None:
                return _error(404, f"Invoice {body.get('id')} not found")
            unknown = set(body) - {"id", "paidDate", "comments", "webServiceDate", "invoiceNumber"}
            if unknown:
                return _error(500, f"read-only fields cannot be updated: {', '.join(sorted(unknown))}")
            if invoice["isVoided"]:
                return _error(500, "a voided invoice cannot be updated")
            invoice.update({k: v for k, v in body.items() if k != "id"})
            return {"itemId": invoice["id"]}

        @app.post(API_ROOT + "/{hooks}")
        async def create_webhook(hooks: str, request: Request):
            if hooks not in ("CompanyWebhooks", "TicketWebhooks"):
                return _error(405, f"{hooks} cannot be created through the API")
            body = await request.json()
            missing = [k for k in ("webhookUrl", "secretKey", "name", "isActive") if body.get(k) is None]
            if missing:
                return _error(500, f"missing required fields: {', '.join(missing)}")
            wid = sim.state.new_id()
            sim.state[hooks][wid] = {**body, "id": wid, "webhookGUID": str(uuid.uuid4()), "isReady": False}
            return {"itemId": wid}

        @app.post(API_ROOT + "/{hooks}/{webhook_id}/Fields")
        async def add_webhook_field(hooks: str, webhook_id: int, request: Request):
            hook = sim.state.tables.get(hooks, {}).get(webhook_id)
            if hook is None:
                return _error(404, f"webhook {webhook_id} not found")
            body = await request.json()
            sim.state.webhook_fields.setdefault(webhook_id, []).append(body)
            hook["isReady"] = hook["isReady"] or bool(body.get("isSubscribedField"))
            return {"itemId": sim.state.new_id()}

        return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8201)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--today", type=date.fromisoformat, help="date the book around this day (payloop dev)")
    args = parser.parse_args()

    async def serve() -> None:
        sim = AutotaskSimulator(today=args.today)
        await sim.start(args.port, args.host)
        print(f"Autotask simulator at {sim.api_url} (integration code {INTEGRATION_CODE}, user {USERNAME}, "
              f"secret {SECRET})", flush=True)
        await sim.serve_until_stopped()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
