"""ConnectWise PSA (Manage REST API 3.0). Vendor facts and our assumptions: docs/vendors/connectwise.md.

Auth is Basic `company+publicKey:privateKey` plus the integration's `clientId` header. Lists are paged
with `page`/`pageSize` and the `Link` header's `rel="next"`; incremental sync filters with
`conditions=lastUpdated>=[...]`. Invoice lines are the products and billed time entries that carry
the invoice's id; agreement links come from the agreement's additions. Callbacks are verified with
the key the PSA publishes at `Metadata.key_url`, fetched only from this connection's own API root.
"""
from __future__ import annotations

import asyncio
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
    DEFAULT_LINE_KINDS, kind_from_prefix, map_page,
    Line, Page, PsaAgreement, PsaClient, PsaCreditMemo, PsaDisputeTicket, PsaError, PsaInvoice,
    PsaRequestError, RecordedPayment, WebhookNotice, WebhookRejected, snake, to_minor,
)
from payloop_psa_ingest.connectors.fields import dec as _dec, day as _date, dumps_exact as _dumps, int_id as _int
from payloop_psa_ingest.connectors.fields import text as _text
from payloop_psa_ingest.connectors.http import VendorHttp, decode_json

ACCEPT = "application/vnd.connectwise.com+json; version=2025.1"
# Records saved in the same second as our last read, or committed late, are caught by this overlap;
# content hashes make the re-read free of events.
CURSOR_OVERLAP = timedelta(seconds=60)
# Payment lists read at once for a page's paid invoices: a page's worth in parallel, not a flood.
PAID_DATE_CONCURRENCY = 8
CALLBACK_TYPES = {"company": "clients", "agreement": "agreements", "invoice": "invoices", "ticket": "tickets"}



class ConnectWiseCredentials(BaseModel):
    company_id: str = Field(min_length=1, description="The company id used at login")
    public_key: str = Field(min_length=1)
    private_key: str = Field(min_length=1)
    client_id: str = Field(min_length=1, description="Integration clientId from developer.connectwise.com")


class ConnectWiseConnector:
    source = "connectwise"

    def __init__(self, base_url: str, credentials: dict[str, str], settings: dict[str, Any] | None = None):
        settings = settings or {}
        creds = ConnectWiseCredentials.model_validate(credentials)
        self.base = base_url.rstrip("/")
        token = base64.b64encode(f"{creds.company_id}+{creds.public_key}:{creds.private_key}".encode()).decode()
        client = httpx.AsyncClient(
            headers={"Authorization": f"Basic {token}", "clientId": creds.client_id, "Accept": ACCEPT,
                     "Content-Type": "application/json"},
            timeout=float(settings.get("timeout_s", 30)))
        self.http = VendorHttp(self.source, client, max_attempts=int(settings.get("max_attempts", 5)),
                               backoff_initial_s=float(settings.get("backoff_initial_s", 0.5)))
        self.page_size = int(settings.get("page_size", 250))
        self.line_kinds = {**DEFAULT_LINE_KINDS, **settings.get("line_kind_prefixes", {})}
        self.dispute_type = settings.get("dispute_ticket_type", "Billing Dispute")
        self.default_currency = settings.get("default_currency", "USD")
        # The payment date of a paid invoice costs one request (its payments): with a long history that is
        # most of a first sync's requests, so only when the connection asks (`settings.paid_dates`).
        self.paid_dates = bool(settings.get("paid_dates", False))
        self._additions: dict[int, list[dict]] = {}

    async def aclose(self) -> None:
        await self.http.client.aclose()

    # --- reading -----------------------------------------------------------------------------------
    async def check(self) -> dict[str, Any]:
        return decode_json(await self.http.request("GET", f"{self.base}/system/info"))

    async def _pages(self, path: str, conditions: str | None = None) -> AsyncIterator[list[dict]]:
        params: dict[str, Any] | None = {"page": 1, "pageSize": self.page_size, "orderBy": "id asc"}
        if conditions:
            params["conditions"] = conditions
        url: str | None = f"{self.base}{path}"
        while url:
            response = await self.http.request("GET", url, params=params)
            body = decode_json(response)
            if not isinstance(body, list):
                raise PsaRequestError(f"connectwise: GET {path} answered {type(body).__name__}, not a list")
            yield body
            url, params = self._next_link(response), None

    def _next_link(self, response: httpx.Response) -> str | None:
        for link in response.headers.get("link", "").split(","):
            match = re.search(r'<([^>]+)>\s*;\s*rel="?next"?', link)
            if match:
                url = match.group(1)
                # Credentials go only to this connection's API root, whatever a header says.
                if not url.startswith(self.base + "/"):
                    raise PsaRequestError(f"connectwise: next page {url!r} is outside {self.base}")
                return url
        return None

    async def _all(self, path: str, conditions: str | None = None) -> list[dict]:
        return [record async for page in self._pages(path, conditions) for record in page]

    async def changes(self, kind: str, since: datetime | None) -> AsyncIterator[Page]:
        condition = None
        if since is not None:
            condition = f"lastUpdated>=[{(since - CURSOR_OVERLAP).astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}]"
        if kind == "clients":
            async for raw in self._pages("/company/companies", condition):
                yield self._map_page(kind, raw, self._client)
        elif kind == "agreements":
            async for raw in self._pages("/finance/agreements", condition):
                for agreement in raw:
                    if isinstance(agreement.get("id"), int):
                        self._additions[agreement["id"]] = await self._all(
                            f"/finance/agreements/{agreement['id']}/additions")
                yield self._map_page(kind, raw, self._agreement)
        elif kind == "invoices":
            async for raw in self._pages("/finance/invoices", condition):
                lines = await self._invoice_lines([r["id"] for r in raw if isinstance(r.get("id"), int)])
                paid = await self._paid_dates(raw)
                yield self._map_page(kind, raw, lambda r: self._invoice(r, lines.get(r["id"], []), paid.get(r["id"])))
        elif kind == "tickets":
            wanted = f'type/name="{self.dispute_type}"'
            async for raw in self._pages("/service/tickets", f"{wanted} and {condition}" if condition else wanted):
                yield self._map_page(kind, raw, self._ticket)
        else:
            raise ValueError(f"unknown kind {kind!r}")

    def _map_page(self, kind: str, raw: list[dict], mapper) -> Page:
        return map_page(self.source, kind, raw, mapper, _updated)

    async def _invoice_lines(self, invoice_ids: list[int]) -> dict[int, list[tuple[str, dict]]]:
        """Products and billed time of a page of invoices, two queries per page rather than per invoice."""
        lines: dict[int, list[tuple[str, dict]]] = {}
        if not invoice_ids:
            return lines
        condition = f"invoice/id in ({','.join(str(i) for i in invoice_ids)})"
        for source, path in (("product", "/procurement/products"), ("time", "/time/entries")):
            for record in await self._all(path, condition):
                lines.setdefault(record["invoice"]["id"], []).append((source, record))
        agreements = {r["agreement"]["id"] for rs in lines.values() for s, r in rs
                      if s == "product" and r.get("agreement")}
        for agreement_id in agreements - self._additions.keys():
            self._additions[agreement_id] = await self._all(f"/finance/agreements/{agreement_id}/additions")
        return lines

    async def _paid_dates(self, raw: list[dict]) -> dict[int, date]:
        """When each invoice of a page that the PSA shows paid by payments was paid: the latest `paymentDate` of
        its payments (`/finance/invoices/{id}/payments`), the invoice itself carrying no paid date."""
        if not self.paid_dates:
            return {}
        paid_ids = [r["id"] for r in raw if isinstance(r, dict) and isinstance(r.get("id"), int) and _paid_by_payments(r)]
        gate = asyncio.Semaphore(PAID_DATE_CONCURRENCY)

        async def latest_payment(invoice_id: int) -> date | None:
            async with gate:
                try:
                    payments = await self._all(f"/finance/invoices/{invoice_id}/payments")
                except PsaRequestError:
                    return None  # gone since the page was read: the invoice lands without a paid date
            days = [_date(p["paymentDate"]) for p in payments
                    if isinstance(p, dict) and p.get("paymentDate") and _dec(p.get("amount")) > 0]
            return max(days, default=None)

        found = await asyncio.gather(*(latest_payment(i) for i in paid_ids))
        return {i: day for i, day in zip(paid_ids, found) if day is not None}

    # --- mapping -----------------------------------------------------------------------------------
    def _client(self, r: dict) -> PsaClient:
        emails: list[str] = []
        for field in ("invoiceToEmailAddress", "invoiceCCEmailAddress"):
            emails += [e.strip() for e in re.split(r"[;,]", r.get(field) or "") if e.strip()]
        return PsaClient(external_id=str(_int(r["id"])), name=_text(r["name"]), billing_emails=emails,
                         terms=(r.get("billingTerms") or {}).get("name"),
                         timezone=(r.get("timeZoneSetup") or {}).get("name"))

    def _line_kind(self, identifier: str, uom: str | None, price: Decimal, on_agreement: bool) -> str:
        by_prefix = kind_from_prefix(identifier, self.line_kinds)
        if by_prefix:
            return by_prefix
        if (uom or "").lower() == "device":
            return "per_device"
        if (uom or "").lower() == "user":
            return "per_user"
        if price < 0:
            return "credit"
        return "recurring" if on_agreement else "product"

    def _agreement(self, r: dict) -> PsaAgreement:
        lines = []
        for addition in self._additions.get(r["id"], []):
            if addition.get("cancelledDate") and _date(addition["cancelledDate"]) <= datetime.now(UTC).date():
                continue
            qty, price = _dec(addition.get("quantity")), _dec(addition.get("unitPrice"))
            identifier = (addition.get("product") or {}).get("identifier") or ""
            lines.append((str(addition["id"]), Line(
                kind=self._line_kind(identifier, addition.get("uom"), price, True),
                description=addition.get("description") or addition.get("invoiceDescription") or identifier,
                quantity=qty, unit_price_minor=to_minor(price), amount_minor=to_minor(qty * price),
                agreement_line_external_id=str(addition["id"]))))
        return PsaAgreement(
            external_id=str(_int(r["id"])), client_external_id=str(_int(r["company"]["id"])),
            kind=snake((r.get("type") or {}).get("name"), "agreement"), name=_text(r["name"]),
            billing_cycle=(r.get("billingCycle") or {}).get("name"),
            starts_on=_date(r["startDate"]) if r.get("startDate") else None,
            ends_on=_date(r["endDate"]) if r.get("endDate") else None, lines=lines)

    def _addition_for(self, agreement_id: int, identifier: str) -> str | None:
        candidates = {identifier.upper()}
        for prefix, kind in self.line_kinds.items():
            if kind == "proration" and identifier.upper().startswith(prefix.upper()):
                candidates.add(identifier[len(prefix):].upper())
        for addition in self._additions.get(agreement_id, []):
            if ((addition.get("product") or {}).get("identifier") or "").upper() in candidates:
                return str(addition["id"])
        return None

    def _invoice(self, r: dict, raw_lines: list[tuple[str, dict]], paid_on: date | None = None) -> PsaInvoice | PsaCreditMemo:
        currency = (r.get("currency") or {}).get("currencyCode") or self.default_currency
        decimals = int((r.get("currency") or {}).get("numberOfDecimals") or 2)
        total = to_minor(_dec(r.get("total")), decimals)
        client = str(_int(r["company"]["id"]))
        number = _text(r["invoiceNumber"])
        if (r.get("type") or "").lower() == "credit":
            applied = ([(str(r["applyToId"]), abs(total))]
                       if (r.get("applyToType") or "").lower() == "invoice" and r.get("applyToId") else [])
            return PsaCreditMemo(external_id=str(_int(r["id"])), client_external_id=client, number=number,
                                 currency=currency, issued_on=_date(r["date"]), total_minor=abs(total),
                                 applied_to=applied)
        lines = [self._line(source, line, decimals) for source, line in sorted(raw_lines, key=lambda x: x[1]["id"])]
        agreement = r.get("agreement")
        balance = to_minor(_dec(r.get("balance")), decimals)
        paid = _dec(r.get("payments")) + _dec(r.get("credits"))
        status_name = ((r.get("status") or {}).get("name") or "").lower()
        if "void" in status_name:
            status = "void"
        elif "written" in status_name:
            status = "written_off"
        elif balance <= 0 < total:
            status = "paid"
        elif paid > 0 and balance > 0:
            status = "partially_paid"
        else:
            status = "open"
        return PsaInvoice(
            external_id=str(_int(r["id"])), client_external_id=client, number=number,
            agreement=(str(agreement["id"]), snake(agreement.get("type"), "agreement"), agreement.get("name") or "")
            if agreement else None,
            currency=currency, issued_on=_date(r["date"]), due_on=_date(r["dueDate"]),
            terms=(r.get("billingTerms") or {}).get("name"), status=status,
            subtotal_minor=to_minor(_dec(r.get("subtotal")), decimals),
            tax_minor=to_minor(_dec(r.get("salesTax")), decimals), total_minor=total,
            balance_minor=0 if status == "void" else balance, lines=lines,
            paid_on=paid_on if status == "paid" else None)

    def _line(self, source: str, r: dict, decimals: int) -> Line:
        if source == "time":
            hours, rate = _dec(r.get("hoursBilled")), _dec(r.get("hourlyRate"))
            return Line(kind="time", description=r.get("notes") or "Labor", quantity=hours,
                        unit_price_minor=to_minor(rate, decimals), amount_minor=to_minor(hours * rate, decimals))
        qty, price = _dec(r.get("quantity")), _dec(r.get("price"))
        identifier = (r.get("catalogItem") or {}).get("identifier") or ""
        agreement_id = (r.get("agreement") or {}).get("id")
        return Line(kind=self._line_kind(identifier, None, price, agreement_id is not None),
                    description=r.get("description") or identifier, quantity=qty,
                    unit_price_minor=to_minor(price, decimals), amount_minor=to_minor(qty * price, decimals),
                    agreement_line_external_id=self._addition_for(agreement_id, identifier) if agreement_id else None)

    def _ticket(self, r: dict) -> PsaDisputeTicket:
        numbers = [str(f["value"]).strip() for f in r.get("customFields") or []
                   if "invoice" in (f.get("caption") or "").lower() and f.get("value")]
        numbers += [n for n in re.findall(r"invoice\s*#?\s*(\w+\d)", r.get("summary") or "", re.I) if n not in numbers]
        return PsaDisputeTicket(external_id=str(_int(r["id"])), client_external_id=str(_int(r["company"]["id"])),
                                summary=_text(r["summary"]), invoice_numbers=numbers,
                                open=not r.get("closedFlag", False))

    # --- writing -----------------------------------------------------------------------------------
    async def record_payment(self, invoice_external_id: str, *, amount_minor: int, currency: str,
                             paid_on: date, reference: str) -> RecordedPayment:
        """Look first (an earlier attempt may have landed before its answer was lost), then post once.

        ConnectWise takes no idempotency key, so our reference rides in the payment's `source` field.
        """
        path = f"/finance/invoices/{int(invoice_external_id)}/payments"
        for payment in await self._all(path):
            if payment.get("source") == reference:
                return RecordedPayment(str(payment["id"]), already_present=True)
        amount = Decimal(amount_minor).scaleb(-2)
        body = _dumps({"type": "Payment", "amount": amount, "paymentDate": f"{paid_on.isoformat()}T00:00:00Z",
                       "source": reference, "invoice": {"id": int(invoice_external_id)}})
        created = decode_json(await self.http.request("POST", f"{self.base}{path}", content=body))
        return RecordedPayment(str(created["id"]), already_present=False)

    # --- callbacks ---------------------------------------------------------------------------------
    async def register_webhooks(self, url: str) -> list[str]:
        ids = []
        for type_ in CALLBACK_TYPES:
            body = json.dumps({"url": url, "objectId": 1, "type": type_, "level": "owner",
                               "description": f"Payloop {type_} changes", "payloadVersion": "2025.1"})
            created = decode_json(await self.http.request("POST", f"{self.base}/system/callbacks", content=body))
            ids.append(str(created["id"]))
        return ids

    async def verify_webhook(self, headers: dict[str, str], body: bytes) -> WebhookNotice:
        signature = headers.get("x-content-signature")
        if not signature:
            raise WebhookRejected("missing x-content-signature")
        try:
            payload = json.loads(body)
            key_url = payload["Metadata"]["key_url"]
        except (ValueError, KeyError, TypeError):
            raise WebhookRejected("not a ConnectWise callback payload") from None
        if not isinstance(key_url, str) or not key_url.startswith(self.base + "/"):
            raise WebhookRejected("key_url is not on this connection's ConnectWise site")
        try:
            signing_key = decode_json(await self.http.request("GET", key_url))["signing_key"]
        except (PsaError, KeyError, TypeError):
            raise WebhookRejected("cannot fetch the callback signing key") from None
        expected = base64.b64encode(hmac.new(hashlib.sha256(signing_key.encode()).digest(), body,
                                             hashlib.sha256).digest()).decode()
        if not hmac.compare_digest(expected, signature):
            raise WebhookRejected("signature mismatch")
        kind = CALLBACK_TYPES.get(str(payload.get("Type", "")).lower())
        message_id = str(payload.get("MessageId") or hashlib.sha256(body).hexdigest())
        return WebhookNotice(message_id=message_id, kind=kind,
                             external_id=str(payload["ID"]) if payload.get("ID") is not None else None)


def _paid_by_payments(r: dict) -> bool:
    """Paid in full with some payment (not only credits), and neither a credit memo nor void."""
    try:
        total, balance, payments = _dec(r.get("total")), _dec(r.get("balance")), _dec(r.get("payments"))
    except ValueError:
        return False  # mapping the record reports it
    status = ((r.get("status") or {}).get("name") or "").lower()
    return ((r.get("type") or "").lower() != "credit" and "void" not in status and "written" not in status
            and balance <= 0 < total and payments > 0)


def _updated(record: dict) -> datetime | None:
    raw = (record.get("_info") or {}).get("lastUpdated") if isinstance(record, dict) else None
    try:
        return datetime.fromisoformat(raw.replace("Z", "+00:00")) if raw else None
    except ValueError:
        return None
