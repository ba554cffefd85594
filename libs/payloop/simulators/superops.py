"""A local SuperOps (MSP GraphQL API) for `payloop dev` and the psa_ingest tests.

Follows the vendor's formats (docs/vendors/superops.md): one GraphQL endpoint at `POST /msp` (the US data
centre's path), `Authorization: Bearer <API token>` and `CustomerSubDomain: <subdomain>` headers, list queries
taking a `ListInfoInput` (`page`, `pageSize` up to 100, one `condition` of attribute/operator/value, `sort`) and
answering `listInfo { page pageSize hasMore totalCount }`, an invalid token answered 401, an unknown subdomain
400, and business errors, the 800-requests-a-minute limit among them, answered 200 with GraphQL `errors` whose
`extensions.clientError[].code` names them. Every request is parsed, validated and executed against the
published schema (specs/superops/superops.graphql), so a query the real API would reject fails here too.

SuperOps documents no webhook API: an MSP points a webhook at a URL with a header of its choosing in SuperOps
itself; `add_webhook` plays that part (docs/vendors/superops.md says what the payload is assumed to be).
The book is the MSP year of `psa_book.py` that every PSA simulator serves, rendered as SuperOps clients with HQ sites,
service items, one client contract per recurring charge, invoices with items, and billing-dispute tickets.
`python -m payloop.simulators.superops --port N` serves it alone.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from graphql import GraphQLError, OperationDefinitionNode, build_schema, execute, parse, validate

from payloop.simulators.psa_book import Book, paid_dates
from payloop.simulators.serving import SimulatorServer

API_PATH = "/msp"
API_TOKEN = "demo-superops-api-token"
SUBDOMAIN = "payloopdemo"
MAX_PAGE_SIZE = 100
REQUESTS_PER_MINUTE = 800
DISPUTE_CATEGORY = "Billing Dispute"
SCHEMA_FILE = Path(__file__).resolve().parents[3] / "specs" / "superops" / "superops.graphql"
# Keys the simulator keeps for itself; the schema never selects them.
PRIVATE_PREFIX = "_"


def _stamp(moment: datetime) -> str:
    """SuperOps' date-time format: ISO 8601 in UTC without an offset, e.g. 2022-04-10T10:15:30."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _money(value: Any) -> str:
    return str(Decimal(str(value)).quantize(Decimal("0.01")))


def _qty(value: Any) -> str:
    text = format(Decimal(str(value)).normalize(), "f")
    return text if text not in ("-0", "") else "0"


@dataclass
class Fault:
    status: int
    path_contains: str = ""
    retry_after: int | None = None
    method: str | None = None
    delay_s: float = 0.0
    apply_first: bool = False
    graphql_code: str | None = None  # answer 200 with this clientError code instead of an HTTP error


@dataclass
class SuperOpsState:
    clients: dict[str, dict] = field(default_factory=dict)
    sites: dict[str, dict] = field(default_factory=dict)
    service_items: dict[str, dict] = field(default_factory=dict)
    contracts: dict[str, dict] = field(default_factory=dict)
    invoices: dict[str, dict] = field(default_factory=dict)
    tickets: dict[str, dict] = field(default_factory=dict)
    webhooks: list[dict] = field(default_factory=list)
    next_id: int = 7_000_000
    clock: datetime = field(default_factory=lambda: datetime(2026, 1, 1, tzinfo=UTC))

    def new_id(self) -> str:
        self.next_id += 1
        return str(self.next_id)

    def tick(self) -> str:
        self.clock = max(self.clock + timedelta(seconds=1), datetime.now(UTC).replace(microsecond=0))
        return _stamp(self.clock)

    def service_item(self, name: str, description: str, quantity_type: str = "UNITS", price: Any = None) -> dict:
        """The catalogue entry named `name`, created on first use (as an MSP would set it up)."""
        found = next((i for i in self.service_items.values() if i["name"] == name), None)
        if found is None:
            item_id = self.new_id()
            found = self.service_items[item_id] = {
                "itemId": item_id, "name": name, "description": description, "quantityType": quantity_type,
                "unitPrice": _money(price) if price is not None else None, "useAsWorklogItem": quantity_type == "HOURS",
                "salesTaxEnabled": False}
        return found


def _ref(item: dict) -> dict:
    return {"itemId": item["itemId"], "name": item["name"]}


def _item(state: SuperOpsState, service: dict, *, billed: str, qty: Any, price: Any, details: str) -> dict:
    amount = (Decimal(str(qty)) * Decimal(str(price))).quantize(Decimal("0.01"))
    return {"itemId": state.new_id(), "billedDate": billed, "details": details, "quantity": _qty(qty),
            "unitPrice": _money(price), "discountRate": "0", "amount": _money(amount), "taxable": False, "tax": None,
            "serviceItem": _ref(service), "taxAmount": "0.00", "totalAmount": _money(amount)}


def recompute(invoice: dict) -> None:
    invoice["totalAmount"] = _money(sum((Decimal(i["totalAmount"]) for i in invoice["items"]), Decimal(0)))


def render(book: Book, state: SuperOpsState) -> None:
    stamp = state.tick()
    today = date.today()
    accounts: dict[int, str] = {}
    for cw in book.companies.values():
        account = accounts[cw["id"]] = state.new_id()
        site_id = state.new_id()
        state.sites[site_id] = {
            "id": site_id, "name": "Headquarters", "timezoneCode": cw["timeZoneSetup"]["name"], "working24x7": False,
            "line1": cw["addressLine1"], "city": cw["city"], "stateCode": cw["state"], "postalCode": cw["zip"],
            "countryCode": "US", "client": {"accountId": account, "name": cw["name"]}, "hq": True}
        contacts = [{"userId": state.new_id(), "name": "Accounts Payable", "email": cw["invoiceToEmailAddress"]}]
        if cw.get("invoiceCCEmailAddress"):
            contacts.append({"userId": state.new_id(), "name": "Controller", "email": cw["invoiceCCEmailAddress"]})
        state.clients[account] = {
            "accountId": account, "name": cw["name"], "stage": "Customer", "status": "Active",
            "emailDomains": [cw["invoiceToEmailAddress"].split("@")[1]], "primaryContact": contacts[0],
            "secondaryContact": contacts[1] if len(contacts) > 1 else None,
            "hqSite": {"id": site_id, "name": "Headquarters"},
            "customFields": {"Payment Terms": cw["billingTerms"]["name"]}}
    for addition in book.additions.values():
        agreement = book.agreements[addition["agreementId"]]
        account = accounts[agreement["company"]["id"]]
        service = state.service_item(addition["product"]["identifier"], addition["description"],
                                     price=addition["unitPrice"])
        contract_id = state.new_id()
        state.contracts[contract_id] = {
            "contractId": contract_id, "client": {"accountId": account, "name": state.clients[account]["name"]},
            "startDate": agreement["startDate"][:10], "endDate": None, "contractStatus": "ACTIVE",
            "contract": {
                "contractId": contract_id, "name": addition["description"], "description": agreement["name"],
                "contractType": "SERVICE", "billableContract": {
                    "contractId": contract_id, "chargeItem": _ref(service), "quantityCalculationType": "FIXED",
                    "sellingPriceCalculationType": "FIXED", "sellingPriceOverridden": True,
                    "sellingPrice": {"model": "PER_UNIT", "details": [{"value": _money(addition["unitPrice"])}]},
                    "discountRate": "0", "frequencyType": "RECURRING", "billableSiteType": "HQ",
                    "recurringContract": {"contractId": contract_id, "recurringMode": "UPFRONT",
                                          "frequencyDurationUnit": "MONTH", "frequencyInterval": 1,
                                          "billingOffset": 0},
                    "changes": [{"changeId": state.new_id(), "effectiveDate": agreement["startDate"][:10],
                                 "endDate": None, "quantity": _qty(addition["quantity"]),
                                 "quantityChangeOperation": "BASELINE"}]}}}
    labour = state.service_item("LABOUR", "Labour", "HOURS", "165.00")
    paid_on = paid_dates(book)
    for cw in book.invoices.values():
        billed = cw["date"][:10]
        items = [_item(state, state.service_item(p["catalogItem"]["identifier"], p["description"]), billed=billed,
                       qty=p["quantity"], price=p["price"], details=p["description"])
                 for p in sorted(book.products.values(), key=lambda p: p["id"]) if p["invoice"]["id"] == cw["id"]]
        items += [_item(state, labour, billed=billed, qty=t["hoursBilled"], price=t["hourlyRate"], details=t["notes"])
                  for t in book.time_entries.values() if t["invoice"]["id"] == cw["id"]]
        account = accounts[cw["company"]["id"]]
        paid = cw["status"]["name"] == "Paid"
        if cw["status"]["name"] == "Void":
            status = "VOID"
        elif paid:
            status = "PAID"
        else:
            status = "OVERDUE" if date.fromisoformat(cw["dueDate"][:10]) < today else "APPROVED"
        invoice_id = state.new_id()
        invoice = state.invoices[invoice_id] = {
            "invoiceId": invoice_id, "displayId": cw["invoiceNumber"],
            "client": {"accountId": account, "name": cw["company"]["name"]},
            "site": state.clients[account]["hqSite"], "invoiceDate": billed, "dueDate": cw["dueDate"][:10],
            "statusEnum": status, "sentToClient": True, "items": items, "taxes": [], "discountAmount": "0.00",
            "additionalDiscount": "0.00", "additionalDiscountRate": "0", "notes": None,
            "paymentDate": paid_on.get(cw["id"], billed) if paid else None, "paymentMethod": None, "paymentReference": "bank" if paid else None,
            "invoicePaymentTerm": {"paymentTermId": "1", "paymentTermName": "Net 30", "paymentTermValue": 30},
            "_contractBilled": bool(cw.get("agreement")), "_updated": stamp}
        recompute(invoice)
    for ticket in book.tickets.values():
        number = next(f["value"] for f in ticket["customFields"] if f["caption"] == "Invoice Number")
        add_ticket(state, accounts[ticket["company"]["id"]], ticket["summary"], DISPUTE_CATEGORY,
                   {"Invoice Number": number})
    first = next(iter(state.clients))
    add_ticket(state, first, "Printer offline on the second floor", "Hardware", {})


def add_ticket(state: SuperOpsState, account: str, subject: str, category: str, custom: dict) -> dict:
    ticket_id, stamp = state.new_id(), state.tick()
    ticket = state.tickets[ticket_id] = {
        "ticketId": ticket_id, "displayId": f"T{ticket_id[-4:]}", "subject": subject, "ticketType": "SERVICE_REQUEST",
        "requestType": "Service Request", "source": "FORM",
        "client": {"accountId": account, "name": state.clients[account]["name"]}, "status": "Open",
        "priority": "Medium", "category": category, "customFields": custom, "createdTime": stamp,
        "updatedTime": stamp}
    return ticket


# --- ListInfoInput ------------------------------------------------------------------------------------

class ClientError(Exception):
    """A business error SuperOps answers with HTTP 200 and `extensions.clientError[].code`."""

    def __init__(self, code: str, message: str, param: dict | None = None):
        super().__init__(message)
        self.code, self.param = code, param or {}


def _attribute(record: dict, path: str) -> Any:
    value: Any = record
    for key in path.split("."):
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _matches(record: dict, condition: dict) -> bool:
    attribute, operator, expected = condition.get("attribute"), condition.get("operator"), condition.get("value")
    if not attribute or not operator:
        raise ClientError("mandatory_validation_failed", "condition needs an attribute and an operator",
                          {"attribute": attribute})
    actual = _attribute(record, attribute)
    if operator in ("after", "before"):
        try:
            bound = datetime.fromisoformat(str(expected)).replace(tzinfo=None)
        except ValueError:
            raise ClientError("type_validation_failed", f"{expected!r} is not a date-time",
                              {"attribute": attribute}) from None
        if actual is None:
            return False
        moment = datetime.fromisoformat(str(actual)).replace(tzinfo=None)
        return moment > bound if operator == "after" else moment < bound
    text, wanted = str(actual or "").lower(), str(expected or "").lower()
    checks = {"is": text == wanted, "isNot": text != wanted, "contains": wanted in text,
              "notContains": wanted not in text, "startsWith": text.startswith(wanted),
              "endsWith": text.endswith(wanted), "isEmpty": not text, "isNotEmpty": bool(text),
              "includes": isinstance(expected, list) and text in [str(v).lower() for v in expected]}
    if operator not in checks:
        raise ClientError("value_pattern_validation_failed", f"unknown operator {operator!r}",
                          {"attribute": "operator"})
    return checks[operator]


def listing(records: list[dict], list_info: dict | None, key: str) -> dict:
    list_info = list_info or {}
    page = list_info.get("page") or 1
    size = min(list_info.get("pageSize") or 50, MAX_PAGE_SIZE)
    if page < 1 or size < 1:
        raise ClientError("value_pattern_validation_failed", "page and pageSize must be positive")
    condition = list_info.get("condition")
    selected = [r for r in records if not condition or _matches(r, condition)]
    for sort in reversed(list_info.get("sort") or []):
        selected.sort(key=lambda r: str(_attribute(r, sort["attribute"]) or ""), reverse=sort.get("order") == "DESC")
    chunk = selected[(page - 1) * size: page * size]
    return {key: chunk, "listInfo": {"page": page, "pageSize": size, "totalCount": len(selected),
                                     "hasMore": page * size < len(selected), "condition": condition,
                                     "sort": list_info.get("sort")}}


# --- the server ---------------------------------------------------------------------------------------

class SuperOpsSimulator(SimulatorServer):
    """The simulator's state and its HTTP app; `start()` serves it on a port of this event loop."""

    source = "superops"

    def __init__(self, *, seeded: bool = True, today: date | None = None):
        super().__init__(SuperOpsState(), render, seeded=seeded, today=today)
        self.schema = build_schema(SCHEMA_FILE.read_text())
        self.requests_per_minute = REQUESTS_PER_MINUTE
        self._window: list[float] = []
        self.app = self._build_app()

    @property
    def api_url(self) -> str:
        return self.base_url + API_PATH

    # --- test controls ---
    def fail_next(self, status: int = 200, *, path_contains: str = "", retry_after: int | None = None,
                  method: str | None = None, delay_s: float = 0.0, apply_first: bool = False,
                  graphql_code: str | None = None) -> None:
        self.faults.append(Fault(status, path_contains, retry_after, method, delay_s, apply_first, graphql_code))

    def add_webhook(self, url: str, headers: dict[str, str]) -> None:
        """What an MSP admin does in SuperOps: point a webhook at `url`, sending `headers` with each call."""
        self.state.webhooks.append({"url": url, "headers": dict(headers)})

    def _changed(self, invoice: dict, event: str) -> dict:
        recompute(invoice)
        invoice["_updated"] = self.state.tick()
        self.notify(event, {"invoiceId": invoice["invoiceId"], "displayId": invoice["displayId"]})
        return invoice

    def add_invoice_line(self, invoice_id: str, name: str, qty: str, price: str, details: str) -> dict:
        invoice = self.state.invoices[invoice_id]
        invoice["items"].append(_item(self.state, self.state.service_item(name, details), billed=invoice["invoiceDate"],
                                      qty=qty, price=price, details=details))
        return self._changed(invoice, "invoice.updated")

    def void_invoice(self, invoice_id: str) -> dict:
        invoice = self.state.invoices[invoice_id]
        invoice["statusEnum"] = "VOID"
        return self._changed(invoice, "invoice.updated")

    def new_invoice(self, account: str, lines: list[tuple[str, str, str, str]]) -> dict:
        invoice_id = self.state.new_id()
        today = self.state.clock.date()
        client = self.state.clients[account]
        invoice = self.state.invoices[invoice_id] = {
            "invoiceId": invoice_id, "displayId": f"INV-{invoice_id}",
            "client": {"accountId": account, "name": client["name"]}, "site": client["hqSite"],
            "invoiceDate": today.isoformat(), "dueDate": (today + timedelta(days=30)).isoformat(),
            "statusEnum": "APPROVED", "sentToClient": True, "taxes": [], "discountAmount": "0.00",
            "additionalDiscount": "0.00", "additionalDiscountRate": "0", "notes": None, "paymentDate": None,
            "paymentMethod": None, "paymentReference": None,
            "invoicePaymentTerm": {"paymentTermId": "1", "paymentTermName": "Net 30", "paymentTermValue": 30},
            "_contractBilled": False,
            "items": [_item(self.state, self.state.service_item(name, details), billed=today.isoformat(), qty=q,
                            price=p, details=details) for name, q, p, details in lines]}
        return self._changed(invoice, "invoice.created")

    # --- webhooks ---
    def notify(self, event: str, data: dict) -> None:
        for hook in self.state.webhooks:
            body = json.dumps({"eventId": secrets.token_hex(8), "event": event, "timestamp": _stamp(datetime.now(UTC)),
                               "data": data}).encode()
            self.deliver(hook["url"], body, hook["headers"])

    # --- serving ---
    def _over_limit(self) -> bool:
        now = time.monotonic()
        self._window = [t for t in self._window if now - t < 60] + [now]
        return len(self._window) > self.requests_per_minute

    # --- resolvers: each root field the simulator serves, over the state ---
    def _root(self) -> dict:
        state = self.state

        def page_of(records: list[dict], key: str):
            return lambda info, input=None: listing(list(records), input, key)

        def update_invoice(info, input):
            invoice = state.invoices.get(str(input["invoiceId"]))
            if invoice is None:
                raise ClientError("entity_does_not_exist", f"invoice {input['invoiceId']} does not exist",
                                  {"attribute": "invoiceId"})
            if invoice["statusEnum"] == "VOID" and input.get("statusEnum") != "VOID":
                raise ClientError("dependent_validation_failed", "a void invoice cannot change status",
                                  {"attribute": "statusEnum"})
            invoice.update({k: v for k, v in input.items() if k not in ("invoiceId", "paymentMethod",
                                                                          "invoicePaymentTerm")})
            return self._changed(invoice, "invoice.updated")

        return {
            "getClientList": page_of(state.clients.values(), "clients"),
            "getClientSiteList": lambda info, input: listing(
                [s for s in state.sites.values() if not input.get("clientId")
                 or s["client"]["accountId"] == str(input["clientId"])], input.get("listInfo"), "sites"),
            "getServiceItemList": page_of(state.service_items.values(), "items"),
            "getClientContractList": page_of(state.contracts.values(), "clientContracts"),
            "getInvoiceList": page_of(state.invoices.values(), "invoices"),
            "getInvoice": lambda info, input: state.invoices.get(str(input["invoiceId"])),
            "getTicketList": page_of(state.tickets.values(), "tickets"),
            "updateInvoice": update_invoice,
        }

    def run(self, document, variables: dict | None, operation_name: str | None) -> dict:
        result = execute(self.schema, document, self._root(), variable_values=variables,
                         operation_name=operation_name)
        body: dict[str, Any] = {"data": result.data}
        if result.errors:
            body["errors"] = [_error_json(e) for e in result.errors]
        return body

    def _build_app(self) -> FastAPI:
        app = FastAPI(title="SuperOps simulator", openapi_url=None, docs_url=None, redoc_url=None)
        sim = self

        @app.post(API_PATH)
        async def graphql_endpoint(request: Request):
            raw = await request.body()
            try:
                payload = json.loads(raw)
                document = parse(payload["query"])
            except (ValueError, KeyError, TypeError, GraphQLError) as exc:
                sim.requests.append({"method": "POST", "path": API_PATH, "query": {}, "body": raw,
                                     "headers": dict(request.headers)})
                return JSONResponse({"errors": [{"message": f"cannot parse the request: {exc}"}]}, status_code=400)
            root_field = _root_field(document)
            sim.requests.append({"method": "POST", "path": f"{API_PATH}:{root_field}", "query": {}, "body": raw,
                                 "headers": dict(request.headers), "operation": root_field})
            if request.headers.get("authorization") != f"Bearer {API_TOKEN}":
                return JSONResponse({"message": "The API token used is invalid or deleted."}, status_code=401)
            if request.headers.get("customersubdomain") != SUBDOMAIN:
                return JSONResponse({"message": "Invalid subdomain provided."}, status_code=400)
            fault = next((f for f in sim.faults if f.path_contains in f"{API_PATH}:{root_field}"
                          and f.method in (None, "POST")), None)
            if fault is not None:
                sim.faults.remove(fault)
                if fault.apply_first:
                    sim.run(document, payload.get("variables"), payload.get("operationName"))
                if fault.delay_s:
                    await asyncio.sleep(fault.delay_s)
                if fault.graphql_code:
                    return JSONResponse(_client_error(fault.graphql_code, f"simulated {fault.graphql_code}"))
                headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else None
                return JSONResponse({"message": f"simulated {fault.status}"}, status_code=fault.status,
                                    headers=headers)
            if sim._over_limit():
                return JSONResponse(_client_error("rate_limit_exceeded", "API limit reached"))
            problems = validate(sim.schema, document)
            if problems:
                return JSONResponse({"data": None, "errors": [_error_json(e) for e in problems]})
            return JSONResponse(sim.run(document, payload.get("variables"), payload.get("operationName")))

        return app


def _root_field(document) -> str:
    for definition in document.definitions:
        if isinstance(definition, OperationDefinitionNode) and definition.selection_set.selections:
            return definition.selection_set.selections[0].name.value
    return ""


def _client_error(code: str, message: str, param: dict | None = None) -> dict:
    return {"data": None, "errors": [{"message": message,
                                      "extensions": {"clientError": [{"code": code, "param": param or {}}]}}]}


def _error_json(error: GraphQLError) -> dict:
    body = error.formatted
    original = error.original_error
    if isinstance(original, ClientError):
        body["extensions"] = {"clientError": [{"code": original.code, "param": original.param}]}
    return body


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8203)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--today", type=date.fromisoformat, help="date the book around this day (payloop dev)")
    args = parser.parse_args()

    async def serve() -> None:
        sim = SuperOpsSimulator(today=args.today)
        await sim.start(args.port, args.host)
        print(f"SuperOps simulator at {sim.api_url} (API token {API_TOKEN}, CustomerSubDomain {SUBDOMAIN})",
              flush=True)
        await sim.serve_until_stopped()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
