"""The one adapter to Stripe: every call the payments service makes to the processor.

Calls that create or move money carry an `Idempotency-Key` derived from our own row ids, so a
retry after a crash or timeout returns Stripe's first answer instead of charging again. Per tenant,
the charge runs on the tenant's Stripe Connect account (`stripe_account_id` in tenant settings).

Every request waits for its slot in a `RequestPace` below Stripe's live rate limit (100 operations a
second), so a busy auto-pay run is paced by us rather than refused; a 429 that comes all the same (other
processes on the same account) is retried here with exponential backoff, and only if it persists does it
become `ProcessorUnavailable`: a charge then stays unanswered and is presented again later, never failed.
"""
from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
import stripe
import structlog

from payloop.metrics import EXTERNAL_API_ERRORS

from payloop_payments.pacing import RequestPace
from payloop_payments.settings import PaymentsSettings

log = structlog.get_logger(__name__)

ChargeStatus = Literal["succeeded", "processing", "failed"]


@dataclass(frozen=True)
class MethodDetails:
    stripe_payment_method_id: str
    type: Literal["card", "ach"]
    brand: str | None
    last4: str | None


@dataclass(frozen=True)
class ChargeResult:
    status: ChargeStatus
    payment_intent_id: str | None = None
    charge_id: str | None = None
    fee_minor: int = 0
    decline_code: str | None = None
    message: str | None = None


class ProcessorUnavailable(Exception):
    """Stripe could not be reached, answered 5xx or kept refusing with 429: retry later with the same key."""


# Stripe asks for exponential backoff on 429; the first wait is a few of our paced slots.
RATE_LIMIT_FIRST_BACKOFF_S = 0.25


class StripeGateway:
    def __init__(self, settings: PaymentsSettings):
        base = {"api": settings.stripe_api_base} if settings.stripe_api_base else None
        # aiohttp rather than httpx: per request, httpx's connection pool took about as much of our CPU as
        # the rest of a charge's Stripe call (py-spy of the auto-pay run). Same requests, same retries.
        self._http = stripe.AIOHTTPClient(timeout=aiohttp.ClientTimeout(total=settings.stripe_timeout_s))
        self._client = stripe.StripeClient(settings.api_key(), base_addresses=base, http_client=self._http,
                                           max_network_retries=2)
        self._pace = RequestPace(settings.stripe_max_requests_per_s)
        self._rate_limit_retries = settings.stripe_rate_limit_retries

    async def close(self) -> None:
        """Close the connections to Stripe (at the service's stop); the gateway is not used after."""
        await self._http.close_async()

    @staticmethod
    def _options(idempotency_key: str | None = None, account: str | None = None) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if idempotency_key:
            options["idempotency_key"] = idempotency_key
        if account:
            options["stripe_account"] = account
        return options

    async def create_customer(self, *, tenant_id: str, client_id: str, name: str, email: str | None,
                              account: str | None) -> str:
        params: dict[str, Any] = {"name": name, "metadata": {"tenant_id": tenant_id, "client_id": client_id}}
        if email:
            params["email"] = email
        customer = await self._call(self._client.v1.customers.create_async, params=params,
                                    options=self._options(f"payloop-customer-{tenant_id}-{client_id}", account))
        return customer.id

    async def create_setup_intent(self, *, customer_id: str, method_type: Literal["card", "ach"],
                                  account: str | None, usage: Literal["off_session", "on_session"] = "off_session",
                                  ) -> tuple[str, str]:
        types = ["card"] if method_type == "card" else ["us_bank_account"]
        intent = await self._call(self._client.v1.setup_intents.create_async,
                                  params={"customer": customer_id, "payment_method_types": types,
                                          "usage": usage},
                                  options=self._options(account=account))
        return intent.id, intent.client_secret

    async def confirm_setup_intent(self, setup_intent_id: str, payment_method: str, account: str | None) -> None:
        """What Stripe.js does in the browser; used by the dev demo and tests."""
        await self._call(self._client.v1.setup_intents.confirm_async, setup_intent_id,
                         params={"payment_method": payment_method}, options=self._options(account=account))

    async def saved_method(self, setup_intent_id: str, *, customer_id: str, account: str | None) -> MethodDetails:
        """The payment method a succeeded SetupIntent saved for this customer."""
        intent = await self._call(self._client.v1.setup_intents.retrieve_async, setup_intent_id,
                                  options=self._options(account=account))
        if intent.customer != customer_id or intent.status != "succeeded" or not intent.payment_method:
            raise ValueError(f"setup intent {setup_intent_id} has not saved a method for this client")
        method_id = intent.payment_method if isinstance(intent.payment_method, str) else intent.payment_method.id
        method = await self._call(self._client.v1.payment_methods.retrieve_async, method_id,
                                  options=self._options(account=account))
        if method.type == "card":
            return MethodDetails(method.id, "card", method.card.brand, method.card.last4)
        if method.type == "us_bank_account":
            bank = method.us_bank_account
            return MethodDetails(method.id, "ach", bank.bank_name, bank.last4)
        raise ValueError(f"payment method type {method.type} is not accepted")

    async def charge(self, *, customer_id: str, payment_method_id: str, method_type: str, amount_minor: int,
                     currency: str, idempotency_key: str, metadata: dict[str, str], off_session: bool,
                     account: str | None) -> ChargeResult:
        params: dict[str, Any] = {
            "amount": amount_minor, "currency": currency.lower(), "customer": customer_id,
            "payment_method": payment_method_id, "confirm": True, "metadata": metadata,
            "payment_method_types": ["card"] if method_type == "card" else ["us_bank_account"],
        }
        if off_session:
            params["off_session"] = True
        # The fee comes with the answer: one request a charge instead of three (charge, then its balance
        # transaction), which also keeps each endpoint under Stripe's per-endpoint limit.
        params["expand"] = ["latest_charge.balance_transaction"]
        try:
            # The raw request: the same form-encoded POST /v1/payment_intents with the same headers and
            # retries as `payment_intents.create_async`, but the answer stays the JSON dict it came as;
            # building StripeObjects of an expanded intent was about a sixth of the request's CPU.
            answer = await self._call(self._client.raw_request_async, "post", "/v1/payment_intents",
                                      **params, **self._options(idempotency_key, account))
        except stripe.CardError as exc:
            error = exc.error
            intent_id = getattr(getattr(error, "payment_intent", None), "id", None) if error else None
            charge_id = getattr(error, "charge", None) if error else None
            return ChargeResult("failed", intent_id, charge_id if isinstance(charge_id, str) else None,
                                decline_code=(error.decline_code if error and error.decline_code else exc.code),
                                message=exc.user_message)
        return await self._result_of(answer.data, account)

    async def _result_of(self, intent: dict[str, Any], account: str | None) -> ChargeResult:
        charge = intent.get("latest_charge")
        charge_id = charge if isinstance(charge, str) or charge is None else charge["id"]
        if intent["status"] == "succeeded":
            return ChargeResult("succeeded", intent["id"], charge_id,
                                fee_minor=await self._fee_of_expanded(charge, charge_id, account))
        if intent["status"] == "processing":
            return ChargeResult("processing", intent["id"], charge_id)
        error = intent.get("last_payment_error")
        return ChargeResult("failed", intent["id"], charge_id,
                            decline_code=(error.get("decline_code") or error.get("code")) if error else None,
                            message=error.get("message") if error else None)

    async def _fee_of_expanded(self, charge: dict[str, Any] | str | None, charge_id: str | None,
                               account: str | None) -> int:
        """The fee from the charge's expanded balance transaction; asked for when it did not come expanded."""
        if charge is None or isinstance(charge, str):
            return await self._fee(charge_id, account)
        txn = charge.get("balance_transaction")
        if txn is None:
            return 0
        if isinstance(txn, str):
            return await self._fee(charge_id, account)
        return int(txn.get("fee") or 0)

    async def _fee(self, charge_id: str | None, account: str | None) -> int:
        if not charge_id:
            return 0
        charge = await self._call(self._client.v1.charges.retrieve_async, charge_id,
                                  options=self._options(account=account))
        txn = charge.balance_transaction
        if not txn:
            return 0
        if isinstance(txn, str):
            txn = await self._call(self._client.v1.balance_transactions.retrieve_async, txn,
                                   options=self._options(account=account))
        return int(txn.fee or 0)

    async def fee_of_charge(self, charge_id: str, account: str | None) -> int:
        return await self._fee(charge_id, account)

    async def detach_method(self, payment_method_id: str, account: str | None) -> None:
        """Forget a method at Stripe (a card used once at checkout and not to be kept)."""
        await self._call(self._client.v1.payment_methods.detach_async, payment_method_id,
                         options=self._options(account=account))

    async def refund(self, *, payment_intent_id: str, amount_minor: int, idempotency_key: str,
                     account: str | None) -> str:
        refund = await self._call(self._client.v1.refunds.create_async,
                                  params={"payment_intent": payment_intent_id, "amount": amount_minor},
                                  options=self._options(idempotency_key, account))
        return refund.id

    async def payout_transactions(self, payout_id: str, account: str | None) -> list[dict[str, Any]]:
        """Every balance transaction a payout settled (charges, refunds, disputes, fees), as plain dicts."""
        items: list[dict[str, Any]] = []
        params: dict[str, Any] = {"payout": payout_id, "limit": 100}
        while True:
            page = await self._call(self._client.v1.balance_transactions.list_async, params=params,
                                    options=self._options(account=account))
            items.extend(txn.to_dict() for txn in page.data)
            if not page.has_more or not page.data:
                return items
            params["starting_after"] = page.data[-1].id

    async def _call(self, method, *args, **kwargs):
        for retry in range(self._rate_limit_retries + 1):
            await self._pace.wait()
            try:
                return await method(*args, **kwargs)
            except stripe.CardError:
                raise
            except stripe.RateLimitError as exc:
                # Refused before anything happened at Stripe, so the same request may simply go again.
                EXTERNAL_API_ERRORS.labels(service="payments", system="stripe", kind=type(exc).__name__).inc()
                if retry == self._rate_limit_retries:
                    raise ProcessorUnavailable(str(exc)) from exc
                # Jitter, so callers refused together do not come back together.
                delay = RATE_LIMIT_FIRST_BACKOFF_S * 2 ** retry * random.uniform(0.5, 1.0)
                log.info("payments.stripe.rate_limited", retry=retry + 1, delay_s=round(delay, 3))
                await asyncio.sleep(delay)
            except (stripe.APIConnectionError, stripe.APIError) as exc:
                EXTERNAL_API_ERRORS.labels(service="payments", system="stripe", kind=type(exc).__name__).inc()
                raise ProcessorUnavailable(str(exc)) from exc
