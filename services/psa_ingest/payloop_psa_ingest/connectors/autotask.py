"""Autotask PSA (REST API v1.0). Vendor facts and our assumptions: docs/vendors/autotask.md.

Auth is three headers (`ApiIntegrationCode`, `UserName`, `Secret`) sent only to the user's zone,
found through `zoneInformation?user=`. Entities are read with JSON filter queries and followed
through `pageDetails.nextPageUrl`. Invoices carry no last-modified time, so an incremental read
asks for invoices created, voided or paid since the cursor. Autotask keeps no payment ledger: the
write-back marks the invoice paid once our payments cover it, with our references in its comments.
Webhooks exist for companies and tickets only, signed `X-Hook-Signature: sha1=<base64 HMAC-SHA1>`.
"""
from __future__ import annotations

import base64
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
    DEFAULT_LINE_KINDS, Line, Page, PsaAgreement, PsaClient, PsaCreditMemo, PsaDisputeTicket, PsaInvoice,
    PsaRequestError, RecordedPayment, WebhookNotice, WebhookRejected, kind_from_prefix, map_page, snake, to_minor,
)
from payloop_psa_ingest.connectors.fields import day, dec, dumps_exact, int_id, text
from payloop_psa_ingest.connectors.http import VendorHttp, decode_json

DEFAULT_URL = "https://webservices.autotask.net/ATServicesRest/V1.0"
CURSOR_OVERLAP = timedelta(seconds=60)
MAX_RECORDS = 500
# Picklist values (billingItemType) whose lines are labour, and a recurring-service adjustment (pro-rating).
LABOR_ITEM_TYPES = {1, 2}
PRORATION_ITEM_TYPES = {8}
WEBHOOK_KINDS = {"company": "clients", "ticket": "tickets"}
WEBHOOK_ENTITIES = ("CompanyWebhooks", "TicketWebhooks")
# The reference lines we append to an invoice's comments: "payloop:<payment>:<invoice> 123.45 USD 2026-01-31".
PAYMENT_NOTE = re.compile(r"^(payloop:\S+) (-?\d+\.\d{2}) [A-Z]{3} \d{4}-\d{2}-\d{2}$", re.MULTILINE)


class AutotaskCredentials(BaseModel):
    integration_code: str = Field(min_length=1, description="The API tracking identifier (ApiIntegrationCode)")
    username: str = Field(min_length=1, description="The API-only user's user name")
    secret: str = Field(min_length=1)


class AutotaskConnector:
    source = "autotask"

    def __init__(self, base_url: str, credentials: dict[str, str], settings: dict[str, Any] | None = None):
        settings = settings or {}
        self.creds = AutotaskCredentials.model_validate(credentials)
        self.discovery = base_url.rstrip("/")
        client = httpx.AsyncClient(
            headers={"ApiIntegrationCode": self.creds.integration_code, "UserName": self.creds.username,
                     "Secret": self.creds.secret, "Content-Type": "application/json"},
            timeout=float(settings.get("timeout_s", 30)))
        self.http = VendorHttp(self.source, client, max_attempts=int(settings.get("max_attempts", 5)),
                               backoff_initial_s=float(settings.get("backoff_initial_s", 0.5)))
        self.page_size = min(int(settings.get("page_size", MAX_RECORDS)), MAX_RECORDS)
        self.line_kinds = {**DEFAULT_LINE_KINDS, **settings.get("line_kind_prefixes", {})}
        self.dispute_type = settings.get("dispute_ticket_type", "Billing Dispute")
        self.currency = settings.get("default_currency", "USD")
        self._zone: str | None = None
        self._picklists: dict[tuple[str, str], dict[int, str]] = {}
        self._contracts: dict[int, dict] = {}
        self._contract_services: dict[int, list[dict]] = {}
        self._services: dict[int, dict] = {}
        self._units: dict[int, list[dict]] = {}

    async def aclose(self) -> None:
        await self.http.client.aclose()

    # --- transport -----------------------------------------------------------------------------------
    async def zone(self) -> str:
        """The user's zone API root; credentials go nowhere else."""
        if self._zone is None:
            response = await self.http.request("GET", f"{self.discovery}/zoneInformation",
                                               params={"user": self.creds.username})
            url = str(decode_json(response).get("url") or "")
            host = httpx.URL(url).host if url.startswith(("https://", "http://")) else ""
            if not (host.endswith(".autotask.net") or host == httpx.URL(self.discovery).host):
                raise PsaRequestError(f"autotask: zone URL {url!r} is not an Autotask host")
            self._zone = url.rstrip("/") + "/V1.0"
        return self._zone

    async def _query(self, entity: str, filters: list[dict]) -> AsyncIterator[list[dict]]:
        zone = await self.zone()
        # A query is a read, so its POST may be resent; POST keeps long `in` lists out of the URL.
        response = await self.http.request("POST", f"{zone}/{entity}/query", idempotent=True,
                                           content=json.dumps({"filter": filters, "MaxRecords": self.page_size}))
        while True:
            body = decode_json(response)
            if not isinstance(body, dict) or not isinstance(body.get("items"), list):
                raise PsaRequestError(f"autotask: {entity} query answered without items")
            yield body["items"]
            next_url = (body.get("pageDetails") or {}).get("nextPageUrl")
            if not next_url:
                return
            if not next_url.lower().startswith(zone.lower() + "/"):
                raise PsaRequestError(f"autotask: next page {next_url!r} is outside {zone}")
            response = await self.http.request("GET", next_url)

    async def _all(self, entity: str, filters: list[dict]) -> list[dict]:
        return [record async for page in self._query(entity, filters) for record in page]

    async def _by_ids(self, entity: str, field: str, ids: set[int]) -> list[dict]:
        out: list[dict] = []
        ordered = sorted(ids)
        for start in range(0, len(ordered), 200):  # keeps each `in` list well inside the vendor's limits
            out += await self._all(entity, [{"op": "in", "field": field, "value": ordered[start:start + 200]}])
        return out

    async def picklist(self, entity: str, field: str) -> dict[int, str]:
        if (entity, field) not in self._picklists:
            zone = await self.zone()
            fields = decode_json(await self.http.request("GET", f"{zone}/{entity}/entityInformation/fields"))
            for f in fields.get("fields") or []:
                self._picklists[(entity, f["name"])] = {int(v["value"]): v["label"] for v in f.get("picklistValues") or []}
        return self._picklists.get((entity, field), {})

    async def check(self) -> dict[str, Any]:
        zone = await self.zone()
        body = decode_json(await self.http.request("GET", f"{zone}/Version"))
        return {"zone": zone, **(body if isinstance(body, dict) else {})}

    # --- reading -------------------------------------------------------------------------------------
    async def changes(self, kind: str, since: datetime | None) -> AsyncIterator[Page]:
        after = _stamp(since - CURSOR_OVERLAP) if since else None
        everything = [{"op": "gte", "field": "id", "value": 0}]
        if kind == "clients":
            filters = [{"op": "gt", "field": "lastTrackedModifiedDateTime", "value": after}] if after else everything
            async for raw in self._query("Companies", filters):
                yield map_page(self.source, kind, raw, self._client, lambda r: _when(r.get("lastTrackedModifiedDateTime")))
        elif kind == "agreements":
            types = await self.picklist("Contracts", "contractType")
            filters = [{"op": "gt", "field": "lastModifiedDateTime", "value": after}] if after else everything
            async for raw in self._query("Contracts", filters):
                await self._load_contract_detail({r["id"] for r in raw if isinstance(r.get("id"), int)}, raw)
                yield map_page(self.source, kind, raw, lambda r: self._agreement(r, types),
                               lambda r: _when(r.get("lastModifiedDateTime")))
        elif kind == "invoices":
            terms = await self.picklist("Invoices", "paymentTerm")
            filters = everything
            if since:
                # Posted invoices change only by being voided or paid; paidDate is a date, so look back a day.
                filters = [{"op": "or", "items": [
                    {"op": "gt", "field": "createDateTime", "value": after},
                    {"op": "gt", "field": "voidedDate", "value": after},
                    {"op": "gte", "field": "paidDate", "value": _stamp(since - timedelta(days=1))}]}]
            async for raw in self._query("Invoices", filters):
                items = await self._by_ids("BillingItems", "invoiceID",
                                           {r["id"] for r in raw if isinstance(r.get("id"), int)})
                lines: dict[int, list[dict]] = {}
                for item in items:
                    lines.setdefault(item["invoiceID"], []).append(item)
                contracts = {i["contractID"] for i in items if i.get("contractID")} - self._contracts.keys()
                if contracts:
                    await self._load_contract_detail(contracts, await self._by_ids("Contracts", "id", contracts))
                yield map_page(self.source, kind, raw, lambda r: self._invoice(r, lines.get(r["id"], []), terms),
                               _invoice_changed_at)
        elif kind == "tickets":
            issue_types = await self.picklist("Tickets", "issueType")
            wanted = [value for value, label in issue_types.items() if label.lower() == self.dispute_type.lower()]
            if not wanted:
                return  # this instance has no such issue type: no dispute tickets to read
            filters = [{"op": "eq", "field": "issueType", "value": wanted[0]}]
            if after:
                filters.append({"op": "gt", "field": "lastActivityDate", "value": after})
            async for raw in self._query("Tickets", filters):
                yield map_page(self.source, kind, raw, self._ticket, lambda r: _when(r.get("lastActivityDate")))
        else:
            raise ValueError(f"unknown kind {kind!r}")

    async def _load_contract_detail(self, contract_ids: set[int], contracts: list[dict]) -> None:
        """Services, their catalogue entries and current units of a page of contracts: one query each."""
        for contract in contracts:
            if isinstance(contract.get("id"), int):
                self._contracts[contract["id"]] = contract
        if not contract_ids:
            return
        services = await self._by_ids("ContractServices", "contractID", contract_ids)
        units = await self._by_ids("ContractServiceUnits", "contractID", contract_ids)
        for contract_id in contract_ids:
            self._contract_services[contract_id] = []
        for service in services:
            self._contract_services[service["contractID"]].append(service)
        for unit in units:
            self._units.setdefault(unit["contractServiceID"], []).append(unit)
        missing = {s["serviceID"] for s in services if s.get("serviceID")} - self._services.keys()
        if missing:
            for service in await self._by_ids("Services", "id", missing):
                self._services[service["id"]] = service

    # --- mapping -------------------------------------------------------------------------------------
    def _client(self, r: dict) -> PsaClient:
        emails = [e.strip() for e in re.split(r"[;,]", _udf(r, "Billing Email") or "") if e.strip()]
        return PsaClient(external_id=str(int_id(r["id"])), name=text(r["companyName"]), billing_emails=emails,
                         terms=_udf(r, "Payment Terms"), timezone=_udf(r, "Time Zone"))

    def _service_code(self, service_id: int | None) -> str:
        return (self._services.get(service_id) or {}).get("name") or "" if service_id else ""

    def _agreement(self, r: dict, types: dict[int, str]) -> PsaAgreement:
        contract_id = int_id(r["id"])
        lines = []
        today = datetime.now(UTC).date()
        for service in self._contract_services.get(contract_id, []):
            units = sorted(self._units.get(service["id"], []), key=lambda u: u.get("startDate") or "")
            current = [u for u in units if day(u["startDate"]) <= today <= day(u["endDate"])] or units[-1:]
            qty = dec(current[0]["units"]) if current else Decimal(1)
            price = dec(service.get("adjustedPrice") if service.get("adjustedPrice") is not None
                        else service.get("unitPrice"))
            code = self._service_code(service.get("serviceID"))
            lines.append((str(service["id"]), Line(
                kind=self._line_kind(code, price, on_contract=True), description=service.get("invoiceDescription") or code,
                quantity=qty, unit_price_minor=to_minor(price), amount_minor=to_minor(qty * price),
                agreement_line_external_id=str(service["id"]))))
        return PsaAgreement(
            external_id=str(contract_id), client_external_id=str(int_id(r["companyID"])),
            kind=snake(types.get(r.get("contractType")), "agreement"), name=text(r["contractName"]),
            billing_cycle={"m": "Monthly", "q": "Quarterly", "s": "Semi-Annual", "y": "Yearly"}.get(
                r.get("contractPeriodType") or ""),
            starts_on=day(r["startDate"]) if r.get("startDate") else None,
            ends_on=day(r["endDate"]) if r.get("endDate") else None, lines=lines)

    def _line_kind(self, code: str, price: Decimal, *, on_contract: bool) -> str:
        by_prefix = kind_from_prefix(code, self.line_kinds)
        if by_prefix:
            return by_prefix
        if price < 0:
            return "credit"
        return "recurring" if on_contract else "product"

    def _invoice(self, r: dict, items: list[dict], terms: dict[int, str]) -> PsaInvoice | PsaCreditMemo:
        total = to_minor(dec(r.get("invoiceTotal")))
        tax = to_minor(dec(r.get("totalTaxValue")))
        client = str(int_id(r["companyID"]))
        number = str(r.get("invoiceNumber") or int_id(r["id"]))
        issued = day(r["invoiceDateTime"])
        if total < 0:
            # Autotask has no credit-memo entity: a negative invoice is the credit; it names no target.
            return PsaCreditMemo(external_id=str(int_id(r["id"])), client_external_id=client, number=number,
                                 currency=self.currency, issued_on=issued, total_minor=-total, applied_to=[])
        lines = [self._line(item) for item in sorted(items, key=lambda i: i["id"])]
        contract_id = next((i["contractID"] for i in items if i.get("contractID")), None)
        agreement = None
        if contract_id:
            contract = self._contracts.get(contract_id) or {}
            types = self._picklists.get(("Contracts", "contractType"), {})
            agreement = (str(contract_id), snake(types.get(contract.get("contractType")), "agreement"),
                         contract.get("contractName") or "")
        if r.get("isVoided"):
            status = "void"
        elif r.get("paidDate"):
            status = "paid"
        else:
            status = "open"
        return PsaInvoice(
            external_id=str(int_id(r["id"])), client_external_id=client, number=number, agreement=agreement,
            currency=self.currency, issued_on=issued, due_on=day(r["dueDate"]) if r.get("dueDate") else issued,
            terms=terms.get(r.get("paymentTerm")), status=status, subtotal_minor=total - tax, tax_minor=tax,
            total_minor=total, balance_minor=total if status == "open" else 0, lines=lines,
            paid_on=day(r["paidDate"]) if status == "paid" else None)

    def _line(self, item: dict) -> Line:
        qty, rate = dec(item.get("quantity")), dec(item.get("rate"))
        item_type = item.get("billingItemType")
        contract_service = None
        if item.get("contractID") and item.get("serviceID"):
            contract_service = next((s for s in self._contract_services.get(item["contractID"], [])
                                     if s.get("serviceID") == item["serviceID"]), None)
        if item_type in LABOR_ITEM_TYPES:
            kind = "time"
        elif item_type in PRORATION_ITEM_TYPES:
            kind = "proration"
        else:
            code = self._service_code(item.get("serviceID")) or item.get("itemName") or ""
            kind = self._line_kind(code, rate, on_contract=contract_service is not None)
        return Line(kind=kind, description=item.get("description") or item.get("itemName") or "", quantity=qty,
                    unit_price_minor=to_minor(rate), amount_minor=to_minor(dec(item.get("extendedPrice"))),
                    agreement_line_external_id=str(contract_service["id"]) if contract_service else None)

    def _ticket(self, r: dict) -> PsaDisputeTicket:
        numbers = [n.strip() for n in re.split(r"[;,]", _udf(r, "Invoice Number") or "") if n.strip()]
        numbers += [n for n in re.findall(r"invoice\s*#?\s*(\w+\d)", r.get("title") or "", re.I) if n not in numbers]
        return PsaDisputeTicket(external_id=str(int_id(r["id"])), client_external_id=str(int_id(r["companyID"])),
                                summary=text(r["title"]), invoice_numbers=numbers, open=not r.get("completedDate"))

    # --- writing -------------------------------------------------------------------------------------
    async def record_payment(self, invoice_external_id: str, *, amount_minor: int, currency: str,
                             paid_on: date, reference: str) -> RecordedPayment:
        """Autotask records only that an invoice is paid (`paidDate`). Our payments ride in its comments,
        one reference per line, so a retry sees what landed; the invoice is paid when they cover it."""
        zone = await self.zone()
        invoice_id = int(invoice_external_id)
        item = decode_json(await self.http.request("GET", f"{zone}/Invoices/{invoice_id}")).get("item")
        if not item:
            raise PsaRequestError(f"autotask: invoice {invoice_id} not found")
        comments = item.get("comments") or ""
        recorded = {ref: Decimal(amount) for ref, amount in PAYMENT_NOTE.findall(comments)}
        external_id = f"{invoice_id}:{reference}"
        if reference in recorded:
            return RecordedPayment(external_id, already_present=True)
        amount = Decimal(amount_minor).scaleb(-2)
        note = f"{reference} {amount:.2f} {currency} {paid_on.isoformat()}"
        covered = sum(recorded.values(), Decimal(0)) + amount >= dec(item.get("invoiceTotal"))
        body: dict[str, Any] = {"id": invoice_id, "comments": f"{comments}\n{note}".strip()}
        if covered:
            body["paidDate"] = f"{paid_on.isoformat()}T00:00:00.000Z"
        elif item.get("paidDate") and amount < 0:
            body["paidDate"] = None  # a refund reopened it
        # The update sets absolute values, so resending it after a timeout cannot double anything.
        await self.http.request("PATCH", f"{zone}/Invoices", idempotent=True, content=dumps_exact(body))
        return RecordedPayment(external_id, already_present=False)

    # --- webhooks ------------------------------------------------------------------------------------
    def webhook_secret(self) -> str:
        """Derived from the API secret, so nothing more is stored; rotating the secret needs re-registering."""
        return hmac.new(self.creds.secret.encode(), b"payloop-autotask-webhook", hashlib.sha256).hexdigest()[:40]

    async def register_webhooks(self, url: str) -> list[str]:
        zone = await self.zone()
        ids = []
        for entity in WEBHOOK_ENTITIES:
            body = {"isActive": True, "name": f"Payloop {entity}", "webhookUrl": url, "deactivationUrl": url,
                    "secretKey": self.webhook_secret(), "notificationEmailAddress": self.creds.username,
                    "isSubscribedToCreateEvents": True, "isSubscribedToUpdateEvents": True,
                    "isSubscribedToDeleteEvents": True, "sendThresholdExceededNotification": False}
            created = decode_json(await self.http.request("POST", f"{zone}/{entity}", content=json.dumps(body)))
            webhook_id = created["itemId"]
            # A webhook calls out only for its subscribed fields: subscribe to all the entity offers.
            field_ids = await self.picklist(f"{entity[:-1]}Fields", "fieldID")
            if not field_ids:
                raise PsaRequestError(f"autotask: {entity} offers no fields to subscribe to")
            for field_id in field_ids:
                await self.http.request("POST", f"{zone}/{entity}/{webhook_id}/Fields", content=json.dumps(
                    {"webhookID": webhook_id, "fieldID": field_id, "isSubscribedField": True,
                     "isDisplayAlwaysField": False}))
            ids.append(str(webhook_id))
        return ids

    async def verify_webhook(self, headers: dict[str, str], body: bytes) -> WebhookNotice:
        signature = headers.get("x-hook-signature") or ""
        if not signature.startswith("sha1="):
            raise WebhookRejected("missing X-Hook-Signature")
        expected = base64.b64encode(hmac.new(self.webhook_secret().encode(), body, hashlib.sha1).digest()).decode()
        if not hmac.compare_digest(expected, signature.removeprefix("sha1=")):
            raise WebhookRejected("signature mismatch")
        try:
            payload = json.loads(body)
            entity = str(payload["EntityType"]).lower()
        except (ValueError, KeyError, TypeError):
            raise WebhookRejected("not an Autotask webhook payload") from None
        sequence = payload.get("SequenceNumber")
        message_id = (f"{payload.get('Guid')}:{sequence}" if payload.get("Guid") and sequence is not None
                      else hashlib.sha256(body).hexdigest())
        return WebhookNotice(message_id=message_id, kind=WEBHOOK_KINDS.get(entity),
                             external_id=str(payload["Id"]) if payload.get("Id") is not None else None)


def _udf(record: dict, name: str) -> str | None:
    for udf in record.get("userDefinedFields") or []:
        if str(udf.get("name", "")).lower() == name.lower():
            return udf.get("value") or None
    return None


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _when(raw: Any) -> datetime | None:
    if not isinstance(raw, str):
        return None
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _invoice_changed_at(record: dict) -> datetime | None:
    stamps = [s for s in (_when(record.get(f)) for f in ("createDateTime", "voidedDate")) if s]
    return max(stamps) if stamps else None
