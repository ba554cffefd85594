"""HaloPSA. Vendor facts and our assumptions: docs/vendors/halopsa.md.

Auth is OAuth2 client credentials (`POST {root}/auth/token`, scope `all`) and a bearer token on
`{root}/api/...`. Lists are paged with `pageinate=true&page_size=&page_no=` and report `record_count`.
Halo lists offer no modified-since filter: invoices are read newest `last_modified` first and the read
stops at the cursor; clients, contracts and dispute tickets are few and re-read whole (content hashes
keep that free of events). Webhooks call out with HTTP Basic credentials we give Halo when registering.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
from pydantic import BaseModel, Field

from payloop_psa_ingest.connectors.base import (
    DEFAULT_LINE_KINDS, Line, Page, PsaAgreement, PsaClient, PsaCreditMemo, PsaDisputeTicket,
    PsaInvoice, PsaRequestError, RecordedPayment, WebhookNotice, WebhookRejected, kind_from_prefix, map_page,
    to_minor,
)
from payloop_psa_ingest.connectors.fields import day, dec, dumps_exact, int_id, text
from payloop_psa_ingest.connectors.http import VendorHttp, decode_json

CURSOR_OVERLAP = timedelta(seconds=60)
MAX_PAGE_SIZE = 100
VOID_STATUS = 3  # paymentstatus lookup value of a voided invoice (assumption: Halo's lookup is configurable)
WEBHOOK_KINDS = {"client": "clients", "clientcontract": "agreements", "invoice": "invoices", "tickets": "tickets"}
WEBHOOK_USER = "payloop"


class HaloCredentials(BaseModel):
    client_id: str = Field(min_length=1, description="Client ID of a Halo API application (client credentials)")
    client_secret: str = Field(min_length=1)


class HaloConnector:
    source = "halopsa"

    def __init__(self, base_url: str, credentials: dict[str, str], settings: dict[str, Any] | None = None):
        settings = settings or {}
        self.creds = HaloCredentials.model_validate(credentials)
        self.root = base_url.rstrip("/")
        client = httpx.AsyncClient(headers={"Accept": "application/json"}, timeout=float(settings.get("timeout_s", 30)))
        self.http = VendorHttp(self.source, client, max_attempts=int(settings.get("max_attempts", 5)),
                               backoff_initial_s=float(settings.get("backoff_initial_s", 0.5)))
        self.page_size = min(int(settings.get("page_size", MAX_PAGE_SIZE)), MAX_PAGE_SIZE)
        self.line_kinds = {**DEFAULT_LINE_KINDS, **settings.get("line_kind_prefixes", {})}
        self.dispute_type = settings.get("dispute_ticket_type", "Billing Dispute")
        self.currency = settings.get("default_currency", "USD")
        self._token: str | None = None
        self._contracts: dict[int, dict] = {}
        self._recurring: dict[int, list[dict]] = {}

    async def aclose(self) -> None:
        await self.http.client.aclose()

    # --- transport -----------------------------------------------------------------------------------
    async def _api(self, method: str, path: str, **kwargs: Any) -> Any:
        if self._token is None:
            response = await self.http.request("POST", f"{self.root}/auth/token", idempotent=True, data={
                "grant_type": "client_credentials", "client_id": self.creds.client_id,
                "client_secret": self.creds.client_secret, "scope": "all"})
            self._token = str(decode_json(response)["access_token"])
            self.http.client.headers["Authorization"] = f"Bearer {self._token}"
        return decode_json(await self.http.request(method, f"{self.root}/api/{path}", **kwargs))

    async def _pages(self, resource: str, key: str, **params: Any) -> AsyncIterator[list[dict]]:
        page_no, seen = 1, 0
        while True:
            body = await self._api("GET", resource, params={"pageinate": "true", "page_size": self.page_size,
                                                             "page_no": page_no, **params})
            records = body.get(key) if isinstance(body, dict) else None
            if not isinstance(records, list):
                raise PsaRequestError(f"halopsa: GET /api/{resource} answered without {key!r}")
            if records:
                yield records
            seen += len(records)
            if not records or seen >= int(body.get("record_count") or 0):
                return
            page_no += 1

    async def _all(self, resource: str, key: str, **params: Any) -> list[dict]:
        return [r async for page in self._pages(resource, key, **params) for r in page]

    async def check(self) -> dict[str, Any]:
        body = await self._api("GET", "TicketType", params={"count": 1})
        return {"root": self.root, "reachable": isinstance(body, (dict, list))}

    # --- reading -------------------------------------------------------------------------------------
    async def changes(self, kind: str, since: datetime | None) -> AsyncIterator[Page]:
        if kind == "clients":
            async for raw in self._pages("Client", "clients"):
                yield map_page(self.source, kind, raw, self._client, lambda r: None)
        elif kind == "agreements":
            await self._load_contracts()
            raw = list(self._contracts.values())
            yield map_page(self.source, kind, raw, self._agreement, lambda r: None)
        elif kind == "invoices":
            if not self._contracts:
                await self._load_contracts()
            after = since - CURSOR_OVERLAP if since else None
            params = {"includelines": "true", "order": "last_modified", "orderdesc": "true"}
            async for raw in self._pages("Invoice", "invoices", **params):
                fresh = [r for r in raw if after is None or (_when(r.get("last_modified")) or after) >= after]
                yield map_page(self.source, kind, fresh, self._invoice, lambda r: _when(r.get("last_modified")))
                if len(fresh) < len(raw):
                    return  # newest first: the rest is older than the cursor
        elif kind == "tickets":
            types = await self._all("TicketType", "tickettypes")
            wanted = [t["id"] for t in types if str(t.get("name", "")).lower() == self.dispute_type.lower()]
            if not wanted:
                return
            async for raw in self._pages("Tickets", "tickets", tickettype_id=wanted[0]):
                yield map_page(self.source, kind, raw, self._ticket, lambda r: None)
        else:
            raise ValueError(f"unknown kind {kind!r}")

    async def _load_contracts(self) -> None:
        """Contracts and their recurring invoices (whose lines are the contract's recurring charges)."""
        self._contracts = {c["id"]: c for c in await self._all("ClientContract", "contracts")
                           if isinstance(c.get("id"), int)}
        self._recurring = {}
        for recurring in await self._all("RecurringInvoice", "invoices", includelines="true"):
            self._recurring.setdefault(recurring.get("chid") or 0, []).extend(recurring.get("lines") or [])

    # --- mapping -------------------------------------------------------------------------------------
    def _client(self, r: dict) -> PsaClient:
        emails = [e.strip() for field in ("accountsemailaddress", "accountsccemailaddress")
                  for e in (r.get(field) or "").replace(",", ";").split(";") if e.strip()]
        terms = r.get("paymentterms")
        return PsaClient(external_id=str(int_id(r["id"])), name=text(r["name"]), billing_emails=emails,
                         terms=f"Net {terms}" if isinstance(terms, int) and terms > 0 else None,
                         timezone=_custom(r, "CFTimeZone"))

    def _kind(self, code: str, price: Decimal, *, recurring: bool) -> str:
        by_prefix = kind_from_prefix(code, self.line_kinds)
        if by_prefix:
            return by_prefix
        if price < 0:
            return "credit"
        return "recurring" if recurring else "product"

    def _agreement(self, r: dict) -> PsaAgreement:
        lines = []
        for line in self._recurring.get(int_id(r["id"]), []):
            qty, price = dec(line.get("qty_order")), dec(line.get("unit_price"))
            lines.append((str(line["id"]), Line(
                kind=self._kind(line.get("item_code") or "", price, recurring=True),
                description=line.get("item_shortdescription") or line.get("item_code") or "", quantity=qty,
                unit_price_minor=to_minor(price), amount_minor=to_minor(dec(line.get("net_amount"))),
                agreement_line_external_id=str(line["id"]))))
        kind = _custom(r, "CFContractType") or "contract"
        return PsaAgreement(
            external_id=str(r["id"]), client_external_id=str(int_id(r["client_id"])),
            kind="_".join(kind.lower().split()), name=text(r.get("ref") or r.get("invoicedescription")),
            billing_cycle={1: "Monthly", 2: "Quarterly", 3: "Yearly"}.get(r.get("billingperiod")),
            starts_on=day(r["start_date"]) if r.get("start_date") else None,
            ends_on=day(r["end_date"]) if r.get("end_date") else None, lines=lines)

    def _invoice(self, r: dict) -> PsaInvoice | PsaCreditMemo:
        raw_lines = sorted(r.get("lines") or [], key=lambda line: line["id"])
        subtotal = sum((to_minor(dec(line.get("net_amount"))) for line in raw_lines), 0)
        tax = sum((to_minor(dec(line.get("tax_amount"))) for line in raw_lines), 0)
        total = subtotal + tax
        client = str(int_id(r["client_id"]))
        issued = day(r["invoice_date"])
        number = text(r.get("invoicenumber") or str(int_id(r["id"])))
        currency = r.get("currency") or self.currency
        if total < 0:
            return PsaCreditMemo(external_id=str(int_id(r["id"])), client_external_id=client, number=number,
                                 currency=currency, issued_on=issued, total_minor=-total, applied_to=[])
        contract_id = r.get("chid") or 0
        contract = self._contracts.get(contract_id)
        recurring = {line.get("_itemid"): line for line in self._recurring.get(contract_id, [])}
        lines = [self._line(line, recurring) for line in raw_lines]
        balance = to_minor(dec(r.get("amountdue")))
        if r.get("paymentstatus") == VOID_STATUS:
            status, balance = "void", 0
        elif balance <= 0 < total:
            status = "paid"
        elif dec(r.get("amountpaid")) > 0:
            status = "partially_paid"
        else:
            status = "open"
        terms = r.get("paymentterms")
        return PsaInvoice(
            external_id=str(int_id(r["id"])), client_external_id=client, number=number,
            agreement=(str(contract_id), "_".join((_custom(contract, "CFContractType") or "contract").lower().split()),
                       contract.get("ref") or "") if contract else None,
            currency=currency, issued_on=issued,
            due_on=issued + timedelta(days=terms if isinstance(terms, int) else 0),
            terms=f"Net {terms}" if isinstance(terms, int) and terms > 0 else None, status=status,
            subtotal_minor=subtotal, tax_minor=tax, total_minor=total, balance_minor=balance, lines=lines,
            paid_on=day(r["datepaid"]) if status == "paid" and r.get("datepaid") else None)

    def _line(self, line: dict, recurring: dict[Any, dict]) -> Line:
        qty, price = dec(line.get("qty_order")), dec(line.get("unit_price"))
        linked = recurring.get(line.get("_itemid"))
        if line.get("actioncode") or line.get("faultid"):
            kind = "time"  # billed from a ticket's actions: labour
        else:
            kind = self._kind(line.get("item_code") or "", price, recurring=linked is not None)
        return Line(kind=kind, description=line.get("item_shortdescription") or line.get("item_code") or "",
                    quantity=qty, unit_price_minor=to_minor(price), amount_minor=to_minor(dec(line.get("net_amount"))),
                    agreement_line_external_id=str(linked["id"]) if linked else None)

    def _ticket(self, r: dict) -> PsaDisputeTicket:
        numbers = [n.strip() for n in (_custom(r, "CFInvoiceNumber") or "").split(",") if n.strip()]
        return PsaDisputeTicket(external_id=str(int_id(r["id"])), client_external_id=str(int_id(r["client_id"])),
                                summary=text(r["summary"]), invoice_numbers=numbers, open=not r.get("hasbeenclosed"))

    # --- writing -------------------------------------------------------------------------------------
    async def record_payment(self, invoice_external_id: str, *, amount_minor: int, currency: str,
                             paid_on: date, reference: str) -> RecordedPayment:
        """Add the payment to the invoice's `amountpaid`, our reference to `payment_ref`; look first, since an
        earlier attempt may have landed before its answer was lost."""
        invoice_id = int(invoice_external_id)
        invoice = await self._api("GET", f"Invoice/{invoice_id}")
        refs = [ref.strip() for ref in (invoice.get("payment_ref") or "").split(";") if ref.strip()]
        external_id = f"{invoice_id}:{reference}"
        if reference in refs:
            return RecordedPayment(external_id, already_present=True)
        paid = dec(invoice.get("amountpaid")) + Decimal(amount_minor).scaleb(-2)
        await self._api("POST", "Invoice", content=dumps_exact([{  # Halo updates are a POSTed array with ids
            "id": invoice_id, "amountpaid": paid, "datepaid": f"{paid_on.isoformat()}T00:00:00",
            "payment_ref": "; ".join([*refs, reference])}]), headers={"Content-Type": "application/json"})
        return RecordedPayment(external_id, already_present=False)

    # --- webhooks ------------------------------------------------------------------------------------
    def webhook_password(self) -> str:
        """Derived from the client secret, so nothing more is stored; a new secret needs re-registering."""
        return hmac.new(self.creds.client_secret.encode(), b"payloop-halo-webhook", hashlib.sha256).hexdigest()

    async def register_webhooks(self, url: str) -> list[str]:
        created = await self._api("POST", "Webhook", content=json.dumps([{
            "name": "Payloop", "url": url, "enabled": True, "authentication_type": "basic",
            "username": WEBHOOK_USER, "password": self.webhook_password(),
            "entities": ["Client", "ClientContract", "Invoice", "Tickets"]}]),
            headers={"Content-Type": "application/json"})
        hooks = created if isinstance(created, list) else [created]
        return [str(h["id"]) for h in hooks]

    async def verify_webhook(self, headers: dict[str, str], body: bytes) -> WebhookNotice:
        expected = "Basic " + base64.b64encode(f"{WEBHOOK_USER}:{self.webhook_password()}".encode()).decode()
        if not hmac.compare_digest(expected.encode(), (headers.get("authorization") or "").encode()):
            raise WebhookRejected("basic credentials do not match")
        try:
            payload = json.loads(body)
            object_type = str(payload["object_type"]).lower()
        except (ValueError, KeyError, TypeError):
            raise WebhookRejected("not a HaloPSA webhook payload") from None
        return WebhookNotice(message_id=str(payload.get("id") or hashlib.sha256(body).hexdigest()),
                             kind=WEBHOOK_KINDS.get(object_type),
                             external_id=str(payload["object_id"]) if payload.get("object_id") is not None else None)


def _custom(record: dict | None, name: str) -> str | None:
    for field in (record or {}).get("customfields") or []:
        if str(field.get("name", "")).lower() == name.lower():
            return str(field["value"]) if field.get("value") not in (None, "") else None
    return None


def _when(raw: Any) -> datetime | None:
    if not isinstance(raw, str):
        return None
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)

