"""SuperOps (MSP GraphQL API). Vendor facts and our assumptions: docs/vendors/superops.md.

One endpoint (`https://api.superops.ai/msp`, or `euapi` in the EU) takes every query as a POST with an API
token as a bearer and the MSP's `CustomerSubDomain`. Lists take `ListInfoInput` (`page`, `pageSize` <= 100, one
`condition`) and answer `listInfo { hasMore }`. Business errors, the 800-a-minute limit among them, come back
as HTTP 200 with GraphQL `errors` coded in `extensions.clientError`; a bad token is a 401, a bad subdomain 400.

SuperOps' published Invoice, Client and ClientContract types carry no updated time, so those are re-read
whole on every sync (content hashes keep that free of events); tickets have `updatedTime` and are read
incrementally. SuperOps bills a contract as one charge item, so a client's contracts together are our
agreement, one contract per line. An invoice records one payment (`statusEnum`, `paymentDate`,
`paymentReference`), so write-back settles whole invoices only. SuperOps offers no webhook API: the MSP points a
webhook at us with a shared secret header, and that header is what we verify.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
from pydantic import BaseModel, Field

from payloop_psa_ingest.connectors.base import (
    DEFAULT_LINE_KINDS, Line, Page, PsaAgreement, PsaAuthError, PsaClient, PsaCreditMemo, PsaDisputeTicket,
    PsaError, PsaInvoice, PsaRequestError, PsaRetryableError, RecordedPayment, WebhookNotice, WebhookRejected,
    kind_from_prefix, map_page, snake, to_minor,
)
from payloop_psa_ingest.connectors.fields import day, text
from payloop_psa_ingest.connectors.http import VendorHttp, decode_json

DEFAULT_URL = "https://api.superops.ai/msp"
MAX_PAGE_SIZE = 100
CURSOR_OVERLAP = timedelta(seconds=60)
WEBHOOK_HEADER = "x-payloop-token"
CLOSED_TICKET_STATUSES = {"resolved", "closed"}
# clientError codes that only an operator can fix (a role without access, a lapsed subscription).
ACCOUNT_CODES = {"forbidden", "subscription_trial_expired", "subscription_paused", "subscription_cancelled"}
WEBHOOK_KINDS = {"client": "clients", "contract": "agreements", "invoice": "invoices", "ticket": "tickets"}

CLIENTS = """query clients($input: ListInfoInput!) { getClientList(input: $input) {
  clients { accountId name status primaryContact secondaryContact hqSite customFields }
  listInfo { page pageSize hasMore totalCount } } }"""
SITES = """query sites($input: GetClientSiteListInput!) { getClientSiteList(input: $input) {
  sites { id timezoneCode hq client } listInfo { page pageSize hasMore totalCount } } }"""
SERVICE_ITEMS = """query serviceItems($input: ListInfoInput!) { getServiceItemList(input: $input) {
  items { itemId name quantityType } listInfo { page pageSize hasMore totalCount } } }"""
CONTRACTS = """query contracts($input: ListInfoInput) { getClientContractList(input: $input) {
  clientContracts { contractId client startDate endDate contractStatus
    contract { contractId name description contractType billableContract {
      chargeItem sellingPrice { details { value } } frequencyType
      recurringContract { frequencyDurationUnit frequencyInterval }
      changes { effectiveDate endDate quantity quantityChangeOperation } } } }
  listInfo { page pageSize hasMore totalCount } } }"""
INVOICE_FIELDS = """invoiceId displayId client invoiceDate dueDate statusEnum additionalDiscount totalAmount
  paymentDate paymentReference invoicePaymentTerm
  items { itemId details quantity unitPrice amount taxAmount serviceItem }"""
INVOICES = f"""query invoices($input: ListInfoInput!) {{ getInvoiceList(input: $input) {{
  invoices {{ {INVOICE_FIELDS} }} listInfo {{ page pageSize hasMore totalCount }} }} }}"""
INVOICE = """query invoice($input: InvoiceIdentifierInput!) { getInvoice(input: $input) {
  invoiceId statusEnum totalAmount paymentReference } }"""
TICKETS = """query tickets($input: ListInfoInput!) { getTicketList(input: $input) {
  tickets { ticketId displayId subject client status category customFields updatedTime }
  listInfo { page pageSize hasMore totalCount } } }"""
UPDATE_INVOICE = """mutation recordPayment($input: UpdateInvoiceInput!) { updateInvoice(input: $input) {
  invoiceId statusEnum paymentReference } }"""


class SuperOpsCredentials(BaseModel):
    api_token: str = Field(min_length=1, description="A SuperOps API token (Settings > My Profile > API token)")
    subdomain: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9-]+$",
                           description="The MSP's SuperOps subdomain (Settings > MSP Information), sent as "
                                       "CustomerSubDomain")
    webhook_secret: str | None = Field(None, min_length=16, description=(
        "A secret you choose and enter in SuperOps as the value of the webhook's X-Payloop-Token header; "
        "without it webhooks are refused and changes arrive by polling"))


class SuperOpsConnector:
    source = "superops"

    def __init__(self, base_url: str, credentials: dict[str, str], settings: dict[str, Any] | None = None):
        settings = settings or {}
        self.creds = SuperOpsCredentials.model_validate(credentials)
        self.url = base_url.rstrip("/")
        client = httpx.AsyncClient(timeout=float(settings.get("timeout_s", 30)), headers={
            "Authorization": f"Bearer {self.creds.api_token}", "CustomerSubDomain": self.creds.subdomain,
            "Content-Type": "application/json", "Accept": "application/json"})
        self.http = VendorHttp(self.source, client, max_attempts=int(settings.get("max_attempts", 5)),
                               backoff_initial_s=float(settings.get("backoff_initial_s", 0.5)))
        self.page_size = min(int(settings.get("page_size", MAX_PAGE_SIZE)), MAX_PAGE_SIZE)
        self.line_kinds = {**DEFAULT_LINE_KINDS, **settings.get("line_kind_prefixes", {})}
        self.dispute_category = settings.get("dispute_ticket_type", "Billing Dispute")
        self.currency = settings.get("default_currency", "USD")
        self._quantity_types: dict[str, str] = {}
        self._contracts: dict[str, list[dict]] = {}  # client accountId -> its client contracts

    async def aclose(self) -> None:
        await self.http.client.aclose()

    # --- transport -----------------------------------------------------------------------------------
    async def _graphql(self, query: str, variables: dict[str, Any], *, write: bool = False) -> dict:
        """`data` of one GraphQL call. A rate-limit error was refused before anything applied, so it is retried
        (writes too); other GraphQL errors are classified by their clientError code."""
        operation = re.search(r"\{\s*(\w+)", query).group(1)  # the root field, for messages
        for attempt in range(1, self.http.max_attempts + 1):
            try:
                response = await self.http.request("POST", self.url, idempotent=not write,
                                                   content=json.dumps({"query": query, "variables": variables}))
            except PsaRequestError as exc:
                if exc.status == 400:  # SuperOps answers an unknown CustomerSubDomain with 400
                    raise PsaAuthError(f"{exc}; check the connection's subdomain", status=400) from None
                raise
            body = decode_json(response)
            errors = body.get("errors") if isinstance(body, dict) else None
            if not errors:
                if not isinstance(body, dict) or not isinstance(body.get("data"), dict):
                    raise PsaRequestError(f"superops: {operation} answered without data")
                return body["data"]
            error = _classify(operation, errors)
            if not isinstance(error, PsaRetryableError) or attempt == self.http.max_attempts:
                raise error
            await self.http.sleep_before_retry(attempt, None, error, method="POST", url=f"{self.url}#{operation}")
        raise AssertionError("unreachable")

    async def _pages(self, query: str, root: str, key: str, condition: dict | None = None, *,
                     wrap: str | None = None) -> AsyncIterator[list[dict]]:
        page = 1
        while True:
            list_info: dict[str, Any] = {"page": page, "pageSize": self.page_size}
            if condition:
                list_info["condition"] = condition
            data = (await self._graphql(query, {"input": {wrap: list_info} if wrap else list_info}))[root]
            records = (data or {}).get(key)
            if not isinstance(records, list):
                raise PsaRequestError(f"superops: {root} answered without {key!r}")
            if records:
                yield records
            if not (data.get("listInfo") or {}).get("hasMore") or not records:
                return
            page += 1

    async def _all(self, query: str, root: str, key: str, **kwargs: Any) -> list[dict]:
        return [r async for page in self._pages(query, root, key, **kwargs) for r in page]

    async def check(self) -> dict[str, Any]:
        data = await self._graphql(CLIENTS, {"input": {"page": 1, "pageSize": 1}})
        return {"url": self.url, "clients": ((data["getClientList"] or {}).get("listInfo") or {}).get("totalCount")}

    # --- reading -------------------------------------------------------------------------------------
    async def changes(self, kind: str, since: datetime | None) -> AsyncIterator[Page]:
        if kind == "clients":
            zones = {(s.get("client") or {}).get("accountId"): s.get("timezoneCode")
                     for s in await self._all(SITES, "getClientSiteList", "sites", wrap="listInfo") if s.get("hq")}
            async for raw in self._pages(CLIENTS, "getClientList", "clients"):
                yield map_page(self.source, kind, raw, lambda r: self._client(r, zones), lambda r: None,
                               id_field="accountId")
        elif kind == "agreements":
            await self._load_contracts()
            clients = [{"accountId": account, "contracts": contracts} for account, contracts in self._contracts.items()]
            yield map_page(self.source, kind, clients, self._agreement, lambda r: None, id_field="accountId")
        elif kind == "invoices":
            if not self._quantity_types:
                await self._load_contracts()
            async for raw in self._pages(INVOICES, "getInvoiceList", "invoices"):
                issued = [r for r in raw if r.get("statusEnum") != "DRAFT"]  # a draft is not yet the client's debt
                yield map_page(self.source, kind, issued, self._invoice, lambda r: None, id_field="invoiceId")
        elif kind == "tickets":
            # One condition per request (the documented form): by category on a full read, by time after.
            condition = ({"attribute": "updatedTime", "operator": "after", "value": _stamp(since - CURSOR_OVERLAP)}
                         if since else {"attribute": "category", "operator": "is", "value": self.dispute_category})
            async for raw in self._pages(TICKETS, "getTicketList", "tickets", condition):
                disputes = [r for r in raw if str(r.get("category") or "").lower() == self.dispute_category.lower()]
                yield map_page(self.source, kind, disputes, self._ticket, lambda r: _when(r.get("updatedTime")),
                               id_field="ticketId")
        else:
            raise ValueError(f"unknown kind {kind!r}")

    async def _load_contracts(self) -> None:
        self._quantity_types = {str(i["itemId"]): i.get("quantityType") or "UNITS"
                                for i in await self._all(SERVICE_ITEMS, "getServiceItemList", "items")}
        self._contracts = {}
        for contract in await self._all(CONTRACTS, "getClientContractList", "clientContracts"):
            if contract.get("contractStatus") == "ACTIVE":
                account = str((contract.get("client") or {}).get("accountId"))
                self._contracts.setdefault(account, []).append(contract)

    # --- mapping -------------------------------------------------------------------------------------
    def _client(self, r: dict, zones: dict[Any, str | None]) -> PsaClient:
        emails = [c["email"] for c in (r.get("primaryContact"), r.get("secondaryContact"))
                  if isinstance(c, dict) and c.get("email")]
        return PsaClient(external_id=text(r["accountId"]), name=text(r["name"]), billing_emails=emails,
                         terms=_custom(r.get("customFields"), "paymentterms"), timezone=zones.get(r["accountId"]))

    def _kind(self, name: str, item_id: str | None, price: Decimal, *, contracted: bool) -> str:
        by_prefix = kind_from_prefix(name, self.line_kinds)
        if by_prefix:
            return by_prefix
        if self._quantity_types.get(str(item_id)) in ("HOURS", "BLOCK_HOURS"):
            return "time"
        if price < 0:
            return "credit"
        return "recurring" if contracted else "product"

    def _agreement(self, r: dict) -> PsaAgreement:
        lines = []
        for contract in r["contracts"]:
            billable = contract["contract"]["billableContract"]
            charge = billable["chargeItem"]
            qty = _quantity(billable.get("changes") or [])
            price = Decimal(billable["sellingPrice"]["details"][0]["value"])
            lines.append((text(contract["contractId"]), Line(
                kind=self._kind(text(charge["name"]), charge.get("itemId"), price, contracted=True),
                description=contract["contract"].get("name") or charge["name"], quantity=qty,
                unit_price_minor=to_minor(price), amount_minor=to_minor(qty * price),
                agreement_line_external_id=str(contract["contractId"]))))
        first = r["contracts"][0]
        recurring = first["contract"]["billableContract"].get("recurringContract") or {}
        return PsaAgreement(
            external_id=text(r["accountId"]), client_external_id=text(r["accountId"]),
            kind=snake(first["contract"].get("contractType"), "service"),
            name=f"{(first.get('client') or {}).get('name') or r['accountId']} contracts",
            billing_cycle=(recurring.get("frequencyDurationUnit") or "").title() or None,
            starts_on=min(day(c["startDate"]) for c in r["contracts"]),
            ends_on=None if any(not c.get("endDate") for c in r["contracts"])
            else max(day(c["endDate"]) for c in r["contracts"]), lines=lines)

    def _contract_for(self, account: str, name: str) -> dict | None:
        candidates = {name.upper()}
        candidates |= {name[len(p):].upper() for p, k in self.line_kinds.items()
                       if k == "proration" and name.upper().startswith(p.upper())}
        return next((c for c in self._contracts.get(account, [])
                     if c["contract"]["billableContract"]["chargeItem"]["name"].upper() in candidates), None)

    def _invoice(self, r: dict) -> PsaInvoice | PsaCreditMemo:
        account = text((r.get("client") or {}).get("accountId"))
        number = text(r["displayId"])
        issued = day(r["invoiceDate"])
        lines, linked = [], False
        for item in sorted(r.get("items") or [], key=lambda i: str(i["itemId"])):
            service = item.get("serviceItem") or {}
            name = text(service.get("name"))
            contract = self._contract_for(account, name)
            linked |= contract is not None
            qty, price = Decimal(item["quantity"]), Decimal(item["unitPrice"])
            lines.append(Line(kind=self._kind(name, service.get("itemId"), price, contracted=contract is not None),
                              description=item.get("details") or name, quantity=qty, unit_price_minor=to_minor(price),
                              amount_minor=to_minor(Decimal(item["amount"])),
                              agreement_line_external_id=str(contract["contractId"]) if contract else None))
        discount = Decimal(r.get("additionalDiscount") or 0)
        if discount:
            lines.append(Line(kind="adjustment", description="Additional discount", quantity=Decimal(1),
                              unit_price_minor=-to_minor(discount), amount_minor=-to_minor(discount)))
        subtotal = sum((line.amount_minor for line in lines), 0)
        tax = sum((to_minor(Decimal(i.get("taxAmount") or 0)) for i in r.get("items") or []), 0)
        total = to_minor(Decimal(r["totalAmount"]))
        if total != subtotal + tax:
            raise ValueError(f"totalAmount {r['totalAmount']} is not the items' amounts and taxes")
        if total < 0:
            return PsaCreditMemo(external_id=text(r["invoiceId"]), client_external_id=account, number=number,
                                 currency=self.currency, issued_on=issued, total_minor=-total, applied_to=[])
        status = {"PAID": "paid", "VOID": "void"}.get(r.get("statusEnum"), "open")
        term = r.get("invoicePaymentTerm") or {}
        due = day(r["dueDate"]) if r.get("dueDate") else issued + timedelta(days=int(term.get("paymentTermValue") or 0))
        agreement = None
        if linked:
            contracts = self._contracts[account]
            agreement = (account, snake(contracts[0]["contract"].get("contractType"), "service"),
                         f"{(contracts[0].get('client') or {}).get('name') or account} contracts")
        return PsaInvoice(
            external_id=text(r["invoiceId"]), client_external_id=account, number=number, agreement=agreement,
            currency=self.currency, issued_on=issued, due_on=due, terms=term.get("paymentTermName"), status=status,
            subtotal_minor=subtotal, tax_minor=tax, total_minor=total,
            balance_minor=0 if status in ("paid", "void") else total, lines=lines,
            paid_on=day(r["paymentDate"]) if status == "paid" and r.get("paymentDate") else None)

    def _ticket(self, r: dict) -> PsaDisputeTicket:
        numbers = [n.strip() for n in str(_custom(r.get("customFields"), "invoicenumber") or "").split(",") if n.strip()]
        numbers += [n for n in re.findall(r"invoice\s*#?\s*(\w+\d)", r.get("subject") or "", re.I) if n not in numbers]
        return PsaDisputeTicket(external_id=text(r["ticketId"]),
                                client_external_id=text((r.get("client") or {}).get("accountId")),
                                summary=text(r["subject"]), invoice_numbers=numbers,
                                open=str(r.get("status") or "").lower() not in CLOSED_TICKET_STATUSES)

    # --- writing -------------------------------------------------------------------------------------
    async def record_payment(self, invoice_external_id: str, *, amount_minor: int, currency: str,
                             paid_on: date, reference: str) -> RecordedPayment:
        """A SuperOps invoice holds one payment: mark it PAID with our reference, or (a refund) back to APPROVED.

        Look first, since an earlier attempt may have landed before its answer was lost; a payment that does not
        settle the whole invoice cannot be represented and is refused for an operator to record by hand.
        """
        invoice = (await self._graphql(INVOICE, {"input": {"invoiceId": invoice_external_id}}))["getInvoice"]
        if not invoice:
            raise PsaRequestError(f"superops: invoice {invoice_external_id} does not exist")
        external_id = f"{invoice_external_id}:{reference}"
        if invoice.get("paymentReference") == reference:
            return RecordedPayment(external_id, already_present=True)
        total = to_minor(Decimal(invoice["totalAmount"]))
        status = invoice.get("statusEnum")
        if amount_minor > 0:
            if status == "VOID" or status == "PAID":
                raise PsaRequestError(f"superops: invoice {invoice_external_id} is {status} "
                                      f"(reference {invoice.get('paymentReference')!r}); it cannot take payment {reference}")
            if amount_minor != total:
                raise PsaRequestError(f"superops: a SuperOps invoice records one payment of its whole total "
                                      f"({total} minor units), not {amount_minor}; record it in SuperOps by hand")
            change = {"statusEnum": "PAID", "paymentDate": paid_on.isoformat(), "paymentReference": reference}
        else:
            if status != "PAID" or -amount_minor != total:
                raise PsaRequestError(f"superops: a refund of {-amount_minor} cannot reopen invoice "
                                      f"{invoice_external_id} ({status}, total {total}); record it in SuperOps by hand")
            change = {"statusEnum": "APPROVED", "paymentDate": None, "paymentReference": reference}
        await self._graphql(UPDATE_INVOICE, {"input": {"invoiceId": invoice_external_id, **change}}, write=True)
        return RecordedPayment(external_id, already_present=False)

    # --- webhooks ------------------------------------------------------------------------------------
    async def register_webhooks(self, url: str) -> list[str]:
        """SuperOps has no API to subscribe webhooks: the MSP enters `url` and the X-Payloop-Token header there."""
        return []

    async def verify_webhook(self, headers: dict[str, str], body: bytes) -> WebhookNotice:
        secret = self.creds.webhook_secret
        if not secret:
            raise WebhookRejected("no webhook secret is configured for this connection")
        if not hmac.compare_digest(secret.encode(), (headers.get(WEBHOOK_HEADER) or "").encode()):
            raise WebhookRejected("X-Payloop-Token does not match")
        try:
            payload = json.loads(body)
        except ValueError:
            raise WebhookRejected("not a JSON webhook") from None
        payload = payload if isinstance(payload, dict) else {}
        event = str(payload.get("event") or "")
        data = payload.get("data") if isinstance(payload.get("data"), dict) else {}
        kind = WEBHOOK_KINDS.get(event.split(".")[0].lower())
        external = next((data[k] for k in ("invoiceId", "ticketId", "accountId", "contractId") if data.get(k)), None)
        return WebhookNotice(message_id=str(payload.get("eventId") or hashlib.sha256(body).hexdigest()), kind=kind,
                             external_id=str(external) if external is not None else None)


def _classify(operation: str, errors: list[Any]) -> PsaError:
    first = errors[0] if isinstance(errors[0], dict) else {"message": str(errors[0])}
    codes = [str(c.get("code")) for c in ((first.get("extensions") or {}).get("clientError") or [])
             if isinstance(c, dict)]
    message = f"superops: {operation} failed: {first.get('message') or 'error'}" + (f" ({', '.join(codes)})"
                                                                                     if codes else "")
    if "rate_limit_exceeded" in codes:
        return PsaRetryableError(message)
    if ACCOUNT_CODES & set(codes):
        return PsaAuthError(f"{message}; credentials refused, fix the connection's token or the SuperOps account")
    return PsaRequestError(message)


def _quantity(changes: list[dict]) -> Decimal:
    """The contract's quantity today: its baseline with the increases and decreases in effect."""
    today, quantity = datetime.now(UTC).date(), Decimal(0)
    for change in sorted(changes, key=lambda c: c.get("effectiveDate") or ""):
        if change.get("effectiveDate") and day(change["effectiveDate"]) > today:
            continue
        if change.get("endDate") and day(change["endDate"]) < today:
            continue
        amount = Decimal(change.get("quantity") or 0)
        operation = change.get("quantityChangeOperation")
        quantity = amount if operation == "BASELINE" else quantity + amount if operation == "INCREASE" \
            else quantity - amount
    return quantity


def _custom(fields: Any, wanted: str) -> str | None:
    """A custom field by its label, compared without case, spaces or punctuation (labels are the MSP's)."""
    if not isinstance(fields, dict):
        return None
    for label, value in fields.items():
        if re.sub(r"[^a-z0-9]", "", str(label).lower()) == wanted and value not in (None, ""):
            return str(value)
    return None


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _when(raw: Any) -> datetime | None:
    try:
        moment = datetime.fromisoformat(str(raw).replace("Z", "+00:00")) if raw else None
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment and moment.tzinfo is None else moment
