"""A local Stripe: localstripe, plus what it lacks, behind one base URL, in Stripe's API format.

localstripe keeps answering what it does well (customers, card PaymentMethods and SetupIntents,
card PaymentIntents, refunds, its Stripe.js stand-in); this server forwards those requests to it
unchanged and answers itself, following Stripe's published API (`../shared/specs/stripe/spec3.yaml`,
objects shaped as in `fixtures3.json`) and Stripe's documented test values (docs/vendors/stripe.md):

- ACH Direct Debit (`us_bank_account`): PaymentMethods from the test account numbers (routing
  110000000) or their `pm_usBankAccount_*` tokens, SetupIntents that wait for microdeposit
  verification (amounts 32 and 45, or descriptor code SM11AA), mandates, and PaymentIntents that stay
  `processing` until the sandbox clock has moved 4 days, then succeed or fail with the account's
  failure code (`insufficient_funds`, `account_closed`, `no_account`, `debit_not_authorized`, ...).
- Card declines localstripe cannot produce: Stripe's declining test PaymentMethods
  (`pm_card_visa_chargeDeclinedStolenCard`, ...; they cannot be attached, as at Stripe), cards that
  attach and then decline (`pm_card_visa_chargeCustomerFailStolenCard`/`LostCard`, Stripe's
  `tok_visa_chargeCustomerFail*`), each answered as Stripe does: 402 `card_error` with `decline_code`.
- Payouts and balance transactions (`payloop.simulators.stripe_extras`).
- Webhooks: `POST /_config/webhooks/{id}` (localstripe's registration, also passed on to it) registers
  an endpoint; the sandbox's own events are posted there signed with `Stripe-Signature`.
- An optional rate limit (`--rate-limit N` requests per second on `/v1/`): a 429 with Stripe's
  `rate_limit` error, before anything else happens.

The sandbox clock is wall time, `speed` times faster when started with `--speed` (then due ACH
debits settle by themselves every second). Test controls (not Stripe's API): `POST /_sim/advance
{"days": 4}` moves the sandbox clock and settles what is due (webhooks delivered before it answers), `GET /_sim/clock`,
`POST /_sim/charges/{id}/return {"failure_code": "insufficient_funds"}` returns a succeeded ACH
debit late, `POST /_sim/payment_methods/{id}/decline {"decline_code": "insufficient_funds"}` makes
a saved card decline from now on (`null` clears it), `POST /_sim/payouts` (stripe_extras),
`POST /_sim/late_answers {"path": "/v1/payment_intents", "delay_s": 6}` carries out the next such POST
and answers it only after `delay_s` (a call that timed out after Stripe applied it).

Every POST with an `Idempotency-Key` is idempotent as at Stripe (localstripe keeps no keys): the key's
first answer is replayed with `Idempotent-Replayed: true`, the key with other parameters gets a 400
`idempotency_error`.

`python -m payloop.simulators.stripe_sandbox --port N --localstripe URL [--rate-limit R]`; tests
run it in-process with `await StripeSandbox(localstripe_url).start()`.
"""
from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode

from aiohttp import ClientSession, web

from payloop.embedded import free_port
from payloop.simulators.stripe_extras import API_VERSION, StripeExtras

DAY = 86_400
ACH_SETTLEMENT_S = 4 * DAY  # Stripe: ACH debits typically take 4 business days to succeed or fail
ACH_ROUTING = "110000000"
STAYS_PROCESSING = "processing"
# Stripe's test bank accounts: account number -> (token, what the debit does).
ACH_TEST_ACCOUNTS: dict[str, tuple[str, str | None]] = {
    "000123456789": ("pm_usBankAccount_success", None),
    "000111111113": ("pm_usBankAccount_accountClosed", "account_closed"),
    "000111111116": ("pm_usBankAccount_noAccount", "no_account"),
    "000222222227": ("pm_usBankAccount_insufficientFunds", "insufficient_funds"),
    "000333333335": ("pm_usBankAccount_debitNotAuthorized", "debit_not_authorized"),
    "000444444440": ("pm_usBankAccount_invalidCurrency", "invalid_currency"),
    "000000000009": ("pm_usBankAccount_processing", STAYS_PROCESSING),
}
ACH_TOKENS = {token: account for account, (token, _) in ACH_TEST_ACCOUNTS.items()}
MICRODEPOSITS_FAIL_ACCOUNT = "000666666661"
ACH_FAILURE_MESSAGES = {
    "account_closed": "The customer's bank account has been closed.",
    "no_account": "The customer's bank account could not be located.",
    "insufficient_funds": "The customer's account has insufficient funds to cover this payment.",
    "debit_not_authorized": "The customer has notified their bank that this payment was unauthorized.",
    "invalid_currency": "The bank was unable to process this payment because of its currency.",
    "authorization_revoked": "The customer has revoked the authorization for this payment.",
    "payment_stopped": "The customer's bank stopped this payment.",
    "invalid_account_number": "The bank account number is invalid.",
}
# Microdeposit test values: amounts or descriptor code -> outcome (None: verified).
MICRODEPOSIT_OUTCOMES: dict[Any, str | None] = {
    (32, 45): None, "SM11AA": None,
    (10, 11): "payment_method_microdeposit_verification_attempts_exceeded",
    "SM33CC": "payment_method_microdeposit_verification_attempts_exceeded",
    (40, 41): "payment_method_microdeposit_verification_timeout",
    "SM44DD": "payment_method_microdeposit_verification_timeout",
}
# Stripe's declining test cards: they cannot be attached, and decline any charge.
CARDS_DECLINED: dict[str, tuple[str, str, str | None]] = {  # id -> (number, code, decline_code)
    "pm_card_visa_chargeDeclined": ("4000000000000002", "card_declined", "generic_decline"),
    "pm_card_visa_chargeDeclinedInsufficientFunds": ("4000000000009995", "card_declined", "insufficient_funds"),
    "pm_card_visa_chargeDeclinedLostCard": ("4000000000009987", "card_declined", "lost_card"),
    "pm_card_visa_chargeDeclinedStolenCard": ("4000000000009979", "card_declined", "stolen_card"),
    "pm_card_chargeDeclinedFraudulent": ("4100000000000019", "card_declined", "fraudulent"),
    "pm_card_chargeDeclinedExpiredCard": ("4000000000000069", "expired_card", None),
    "pm_card_chargeDeclinedIncorrectCvc": ("4000000000000127", "incorrect_cvc", None),
    "pm_card_chargeDeclinedProcessingError": ("4000000000000119", "processing_error", None),
    "pm_card_visa_chargeDeclinedVelocityLimitExceeded": ("4000000000006975", "card_declined",
                                                         "card_velocity_exceeded"),
}
# Older spellings of the same test cards, still accepted by Stripe.
CARDS_DECLINED.update({
    "pm_card_chargeDeclined": CARDS_DECLINED["pm_card_visa_chargeDeclined"],
    "pm_card_chargeDeclinedInsufficientFunds": CARDS_DECLINED["pm_card_visa_chargeDeclinedInsufficientFunds"],
    "pm_card_chargeDeclinedLostCard": CARDS_DECLINED["pm_card_visa_chargeDeclinedLostCard"],
    "pm_card_chargeDeclinedStolenCard": CARDS_DECLINED["pm_card_visa_chargeDeclinedStolenCard"],
})
# Cards that attach and then decline (Stripe's tok_visa_chargeCustomerFail{LostCard,StolenCard}).
CARDS_DECLINED_AFTER_ATTACH = {
    "pm_card_visa_chargeCustomerFailLostCard": "lost_card",
    "pm_card_visa_chargeCustomerFailStolenCard": "stolen_card",
}
# localstripe's card that attaches and declines at charge stands in for them there.
LOCALSTRIPE_ATTACHABLE_DECLINE = "pm_card_chargeCustomerFail"
EXTRAS_API = ("/v1/payouts/{id}", "/v1/balance_transactions")  # stripe_extras' routes, behind our auth
CARD_MESSAGES = {
    "insufficient_funds": "Your card has insufficient funds.", "expired_card": "Your card has expired.",
    "incorrect_cvc": "Your card's security code is incorrect.",
    "processing_error": "An error occurred while processing your card. Try again in a little bit.",
}


def _id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def _error(status: int, message: str, type_: str = "invalid_request_error", **fields: Any) -> web.Response:
    return web.json_response({"error": {"type": type_, "message": message, **fields}}, status=status)


def parse_form(body: bytes) -> dict[str, Any]:
    """Stripe's form encoding (`a[b][0]=x`, `a[]=x`) as nested dicts and lists."""
    tree: dict[str, Any] = {}
    for key, value in parse_qsl(body.decode(), keep_blank_values=True):
        parts = re.findall(r"[^\[\]]+|\[\]", key)
        node: Any = tree
        for part, following in zip(parts, parts[1:] + [None]):
            if following is None:
                if part == "[]":
                    node.append(value)
                else:
                    node[part] = value
            elif following == "[]":
                node = node.setdefault(part, [])
            else:
                node = node.setdefault(part, {}) if isinstance(node, dict) else node
    return _lists(tree)


def _lists(node: Any) -> Any:
    if isinstance(node, dict):
        if node and all(k.isdigit() for k in node):
            return [_lists(node[k]) for k in sorted(node, key=int)]
        return {k: _lists(v) for k, v in node.items()}
    return node


@dataclass
class LateAnswer:
    path: str  # the first POST whose path starts with this is answered late
    delay_s: float


@dataclass
class Webhook:
    url: str
    secret: str
    events: list[str] | None


class RateLimit:
    """A token bucket: `rate` requests per second, bursts up to one second's worth."""

    def __init__(self, rate: float):
        self.rate, self.tokens, self.stamp = rate, rate, time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.rate, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class StripeSandbox:
    """One Stripe base URL for the payments service: what localstripe lacks, answered here."""

    def __init__(self, localstripe: str, *, host: str = "127.0.0.1", port: int | None = None,
                 rate_limit: float | None = None, speed: float = 1.0):
        self.localstripe = localstripe.rstrip("/")
        self.host, self.port = host, port or free_port()
        self.extras = StripeExtras(host, self.port)
        self.limit = RateLimit(rate_limit) if rate_limit else None
        self.offset_s = 0  # how far the sandbox clock was moved ahead of wall time
        # Simulated seconds per real second (`payloop dev --speed`): ACH debits settle on that calendar.
        self.speed = speed
        self._started = time.time()
        self._settler: asyncio.Task | None = None
        self.webhooks: dict[str, Webhook] = {}
        self.objects: dict[str, dict[str, Any]] = {}  # everything this server made, by id
        self.bank_accounts: dict[str, str] = {}  # us_bank_account PaymentMethod id -> account number
        self.verified: set[str] = set()  # ACH PaymentMethods whose account is verified
        self.card_declines: dict[str, tuple[str, str | None]] = {}  # pm id -> (code, decline_code)
        self.settling: dict[str, int] = {}  # ACH charge id -> when its outcome is known
        # Idempotency-Key -> (request fingerprint, status, body) of every POST that was carried out.
        self.idempotent: dict[str, tuple[str, int, bytes]] = {}
        self.late_answers: list[LateAnswer] = []
        self.replayed: list[str] = []  # keys whose first answer was given again
        self._deliveries: set[asyncio.Task] = set()
        self._runner: web.AppRunner | None = None
        self._http: ClientSession | None = None

    # --- lifecycle ---------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> "StripeSandbox":
        self._http = ClientSession()
        self._runner = web.AppRunner(self.app())
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        if self.speed != 1:
            self._settler = asyncio.get_running_loop().create_task(self._settle_as_time_passes())
        return self

    async def _settle_as_time_passes(self) -> None:
        """On a faster calendar the banking days pass by themselves: settle what is due every second."""
        while True:
            await asyncio.sleep(1)
            self._settle_due()

    def _settle_due(self) -> list[dict[str, Any]]:
        events = []
        for charge_id, due in sorted(self.settling.items(), key=lambda item: item[1]):
            if due <= self.now():
                del self.settling[charge_id]
                events += self._settle_ach(self.objects[charge_id])
        return events

    async def stop(self) -> None:
        if self._settler:
            self._settler.cancel()
        await self.delivered()
        if self._runner:
            await self._runner.cleanup()
        if self._http:
            await self._http.close()

    async def payout(self, transactions: list[dict]) -> dict:
        """Book a payout of these balance transactions; returns the payout and Stripe's `payout.paid` event."""
        async with self._http.post(f"{self.url}/_sim/payouts", json={
                "currency": "usd", "arrival_date": self.now(), "transactions": transactions}) as answer:
            return await answer.json()

    async def advance(self, *, days: int = 0, seconds: int = 0) -> dict:
        async with self._http.post(f"{self.url}/_sim/advance", json={"days": days, "seconds": seconds}) as answer:
            return await answer.json()

    def now(self) -> int:
        wall = time.time()
        return int(wall + (wall - self._started) * (self.speed - 1)) + self.offset_s

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._rate_limited, self._late, self._idempotent])
        r = app.router
        r.add_post("/_config/webhooks/{id}", self._register_webhook)
        r.add_post("/_sim/advance", self._advance)
        r.add_get("/_sim/clock", self._clock)
        r.add_post("/_sim/charges/{id}/return", self._return_charge)
        r.add_post("/_sim/payment_methods/{id}/decline", self._decline_card)
        r.add_post("/_sim/late_answers", self._add_late_answer)
        self.extras.add_routes(r)
        r.add_get("/v1/balance_transactions/{id}", self._own_or_forward)
        r.add_get("/v1/charges/{id}", self._own_or_forward)
        r.add_get("/v1/payment_intents/{id}", self._own_or_forward)
        r.add_get("/v1/setup_intents/{id}", self._own_or_forward)
        r.add_get("/v1/payment_methods/{id}", self._own_or_forward)
        r.add_get("/v1/mandates/{id}", self._own_or_forward)
        r.add_post("/v1/payment_methods", self._create_payment_method)
        r.add_post("/v1/payment_methods/{id}/attach", self._attach)
        r.add_post("/v1/payment_methods/{id}/detach", self._detach)
        r.add_post("/v1/setup_intents", self._create_setup_intent)
        r.add_post("/v1/setup_intents/{id}/confirm", self._confirm_setup_intent)
        r.add_post("/v1/setup_intents/{id}/verify_microdeposits", self._verify_microdeposits)
        r.add_post("/v1/payment_intents", self._create_payment_intent)
        r.add_route("*", "/{tail:.*}", self._forward)
        return app

    # --- plumbing ----------------------------------------------------------------------------------
    @web.middleware
    async def _rate_limited(self, request: web.Request, handler):
        if self.limit and request.path.startswith("/v1/") and not self.limit.take():
            return _error(429, "Request rate limit exceeded. Reduce the rate of your requests.", code="rate_limit")
        route = request.match_info.route.resource
        if route is not None and route.canonical in EXTRAS_API and not self._authorized(request, {}):
            return _error(401, "Invalid API Key provided", "authentication_error")
        return await handler(request)

    @web.middleware
    async def _idempotent(self, request: web.Request, handler):
        """Stripe's idempotent requests, for every POST (localstripe keeps none): a repeated key gets the
        first answer, marked `Idempotent-Replayed`; the same key with other parameters is refused."""
        key = request.headers.get("Idempotency-Key")
        if request.method != "POST" or not key or not request.path.startswith("/v1/"):
            return await handler(request)
        fingerprint = hashlib.sha256(request.path.encode() + b"\n" + await request.read()).hexdigest()
        if key in self.idempotent:
            first_fingerprint, status, body = self.idempotent[key]
            if first_fingerprint != fingerprint:
                return _error(400, "Keys for idempotent requests can only be used with the same parameters they "
                                   "were first used with.", "idempotency_error")
            self.replayed.append(key)
            return web.Response(status=status, body=body, content_type="application/json",
                                headers={"Idempotent-Replayed": "true", "Idempotency-Key": key})
        answer = await handler(request)
        if answer.status != 429 and answer.status < 500:  # Stripe saves what started executing
            self.idempotent[key] = (fingerprint, answer.status, answer.body)
        return answer

    @web.middleware
    async def _late(self, request: web.Request, handler):
        """A test control: carry out the request (and keep its idempotent answer), then answer after the
        caller has given up."""
        answer = await handler(request)
        late = next((a for a in self.late_answers if request.method == "POST" and request.path.startswith(a.path)),
                    None)
        if late is not None:
            self.late_answers.remove(late)
            await asyncio.sleep(late.delay_s)
        return answer

    async def _add_late_answer(self, request: web.Request) -> web.Response:
        body = await request.json()
        if not str(body.get("path", "")).startswith("/v1/"):
            return _error(400, "path must be an API path such as /v1/payment_intents")
        self.late_answers.append(LateAnswer(body["path"], float(body.get("delay_s", 5))))
        return web.json_response({"late_answers": len(self.late_answers)})

    async def _forward(self, request: web.Request, body: bytes | None = None) -> web.Response:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in ("host", "content-length")}
        async with self._http.request(request.method, self.localstripe + request.path_qs, headers=headers,
                                      data=await request.read() if body is None else body) as answer:
            # Headers pass through too: the browser's Stripe.js needs localstripe's CORS answers.
            kept = {k: v for k, v in answer.headers.items()
                    if k.lower() not in ("content-length", "content-encoding", "transfer-encoding", "connection")}
            return web.Response(status=answer.status, body=await answer.read(), headers=kept)

    @staticmethod
    def _authorized(request: web.Request, form: dict[str, Any], *, publishable_ok: bool = False) -> bool:
        """A secret key, or (for what Stripe.js does in a browser) a publishable key in the form."""
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        if scheme == "Bearer" and key.startswith("sk_") and len(key) > 3:
            return True
        return publishable_ok and str(form.get("key", "")).startswith("pk_")

    async def _form(self, request: web.Request) -> dict[str, Any]:
        return parse_form(await request.read()) if request.method == "POST" else dict(request.query)

    async def _own_or_forward(self, request: web.Request) -> web.Response:
        found = self.objects.get(request.match_info["id"])
        if found is None:
            return await self._forward(request)
        if not self._authorized(request, {}):
            return _error(401, "Invalid API Key provided", "authentication_error")
        return web.json_response(found)

    def _emit(self, *types_and_objects: tuple[str, dict[str, Any]]) -> list[dict[str, Any]]:
        """Stripe's events for what just happened, delivered (in order) after the answer."""
        events = [{"id": _id("evt"), "object": "event", "api_version": API_VERSION, "created": self.now(),
                   "type": kind, "livemode": False, "pending_webhooks": len(self.webhooks),
                   "data": {"object": json.loads(json.dumps(obj))}} for kind, obj in types_and_objects]
        task = asyncio.get_running_loop().create_task(self._deliver(events))
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)
        return events

    async def delivered(self) -> None:
        """Wait until every event emitted so far has been posted."""
        while self._deliveries:
            await asyncio.gather(*list(self._deliveries), return_exceptions=True)

    async def _deliver(self, events: list[dict[str, Any]]) -> None:
        for event in events:
            body = json.dumps(event).encode()
            for hook in list(self.webhooks.values()):
                if hook.events and event["type"] not in hook.events:
                    continue
                stamp = int(time.time())  # wall time: receivers check it against their own clock
                signature = hmac.new(hook.secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
                try:
                    async with self._http.post(hook.url, data=body, headers={
                            "Content-Type": "application/json; charset=utf-8",
                            "Stripe-Signature": f"t={stamp},v1={signature}"}) as answer:
                        await answer.read()
                except OSError:
                    pass  # an endpoint that is down misses it, as with Stripe after its retries

    # --- test controls -----------------------------------------------------------------------------
    async def _register_webhook(self, request: web.Request) -> web.Response:
        form = await self._form(request)
        url, secret, events = form.get("url"), form.get("secret"), form.get("events")
        if not url or not secret or not str(url).startswith("http"):
            return _error(400, "url and secret are required")
        self.webhooks[request.match_info["id"]] = Webhook(url, secret, events if isinstance(events, list) else None)
        return await self._forward(request)  # localstripe's own events go to the same endpoint

    async def _clock(self, request: web.Request) -> web.Response:
        return web.json_response({"now": self.now(), "offset_s": self.offset_s})

    async def _advance(self, request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else {}
        try:
            step = int(body.get("days", 0)) * DAY + int(body.get("seconds", 0))
        except (TypeError, ValueError):
            return _error(400, "days and seconds must be integers")
        if step < 0:
            return _error(400, "the clock only moves forward")
        await self.delivered()
        self.offset_s += step
        events = self._settle_due()
        await self.delivered()
        return web.json_response({"now": self.now(), "events": [{"id": e["id"], "type": e["type"]} for e in events]})

    async def _return_charge(self, request: web.Request) -> web.Response:
        charge = self.objects.get(request.match_info["id"])
        body = await request.json()
        code = body.get("failure_code")
        if charge is None or charge.get("payment_method_details", {}).get("type") != "us_bank_account":
            return _error(404, "No such ACH charge")
        if charge["status"] != "succeeded" or code not in ACH_FAILURE_MESSAGES:
            return _error(400, f"only a succeeded debit can be returned, with one of {sorted(ACH_FAILURE_MESSAGES)}")
        reversal = self._balance_transaction("payment_failure_refund", -charge["amount"], 0, charge["currency"],
                                             charge["id"])
        charge["failure_balance_transaction"] = reversal["id"]
        events = self._fail_ach(charge, code)
        await self.delivered()
        return web.json_response({"charge": charge, "events": [{"id": e["id"], "type": e["type"]} for e in events]})

    async def _decline_card(self, request: web.Request) -> web.Response:
        body = await request.json()
        method, code = request.match_info["id"], body.get("decline_code")
        if code is None:
            self.card_declines.pop(method, None)
        else:
            self.card_declines[method] = (body.get("code") or "card_declined", code)
        return web.json_response({"payment_method": method, "decline_code": code})

    # --- payment methods ---------------------------------------------------------------------------
    async def _create_payment_method(self, request: web.Request) -> web.Response:
        form = await self._form(request)
        if form.get("type") != "us_bank_account":
            return await self._forward(request)
        if not self._authorized(request, form, publishable_ok=True):
            return _error(401, "Invalid API Key provided", "authentication_error")
        method = self._bank_account(form)
        return method if isinstance(method, web.Response) else web.json_response(method)

    def _bank_account(self, data: dict[str, Any]) -> dict[str, Any] | web.Response:
        """A us_bank_account PaymentMethod from account details (they need verifying) or a test token."""
        bank = data.get("us_bank_account") or {}
        routing, account = bank.get("routing_number", ""), bank.get("account_number", "")
        if not (len(routing) == 9 and routing.isdigit()):
            return _error(400, "Invalid routing number", code="routing_number_invalid",
                          param="us_bank_account[routing_number]")
        if not (4 <= len(account) <= 17 and account.isdigit()):
            return _error(400, "Invalid account number", code="account_number_invalid",
                          param="us_bank_account[account_number]")
        if not (data.get("billing_details") or {}).get("name"):
            return _error(400, "Missing required param: billing_details[name].", code="parameter_missing",
                          param="billing_details[name]")
        method = {
            "id": _id("pm"), "object": "payment_method", "type": "us_bank_account", "created": self.now(),
            "customer": None, "livemode": False, "metadata": data.get("metadata") or {},
            "billing_details": {"address": None, "email": None, "phone": None, **(data.get("billing_details") or {})},
            "us_bank_account": {
                "account_holder_type": bank.get("account_holder_type", "company"),
                "account_type": bank.get("account_type", "checking"),
                "bank_name": "STRIPE TEST BANK" if routing == ACH_ROUTING else "TEST BANK",
                "financial_connections_account": None,
                "fingerprint": hashlib.sha256(f"{routing}:{account}".encode()).hexdigest()[:16],
                "last4": account[-4:], "networks": {"preferred": "ach", "supported": ["ach"]},
                "routing_number": routing, "status_details": None,
            },
        }
        self.objects[method["id"]] = method
        self.bank_accounts[method["id"]] = account
        return method

    def _token_method(self, token: str) -> dict[str, Any]:
        """A `pm_usBankAccount_*` token: a bank account verified at once (as with Financial Connections)."""
        method = self._bank_account({"us_bank_account": {"routing_number": ACH_ROUTING,
                                                         "account_number": ACH_TOKENS[token]},
                                     "billing_details": {"name": "Jenny Rosen"}})
        self.verified.add(method["id"])
        return method

    async def _attach(self, request: web.Request) -> web.Response:
        method_id = request.match_info["id"]
        form = await self._form(request)
        if method_id in CARDS_DECLINED:
            return self._card_declined_error(method_id, *CARDS_DECLINED[method_id][1:])
        method = self.objects.get(method_id)
        if method is None:
            return await self._forward(request)
        if not self._authorized(request, form):
            return _error(401, "Invalid API Key provided", "authentication_error")
        method["customer"] = form.get("customer")
        return web.json_response(method)

    async def _detach(self, request: web.Request) -> web.Response:
        method = self.objects.get(request.match_info["id"])
        if method is None:
            return await self._forward(request)
        if not self._authorized(request, {}):
            return _error(401, "Invalid API Key provided", "authentication_error")
        method["customer"] = None
        return web.json_response(method)

    # --- setup intents -----------------------------------------------------------------------------
    async def _create_setup_intent(self, request: web.Request) -> web.Response:
        form = await self._form(request)
        if "us_bank_account" not in (form.get("payment_method_types") or []):
            return await self._forward(request)
        if not self._authorized(request, form):
            return _error(401, "Invalid API Key provided", "authentication_error")
        intent_id = _id("seti")
        intent = {"id": intent_id, "object": "setup_intent",
                  "client_secret": f"{intent_id}_secret_{secrets.token_hex(12)}", "created": self.now(),
                  "customer": form.get("customer"), "description": form.get("description"),
                  "last_setup_error": None, "latest_attempt": None, "livemode": False, "mandate": None,
                  "metadata": form.get("metadata") or {}, "next_action": None, "payment_method": None,
                  "payment_method_options": {"us_bank_account": {"verification_method": "automatic"}},
                  "payment_method_types": ["us_bank_account"], "status": "requires_payment_method",
                  "usage": form.get("usage", "off_session"), "application": None, "cancellation_reason": None,
                  "automatic_payment_methods": None, "flow_directions": None, "on_behalf_of": None,
                  "single_use_mandate": None}
        self.objects[intent_id] = intent
        return web.json_response(intent)

    async def _confirm_setup_intent(self, request: web.Request) -> web.Response:
        form = await self._form(request)
        intent = self.objects.get(request.match_info["id"])
        chosen = form.get("payment_method")
        if intent is None:
            return await self._confirm_card_setup(request, form, chosen)
        if not self._authorized(request, form, publishable_ok=True):
            return _error(401, "Invalid API Key provided", "authentication_error")
        if intent["status"] not in ("requires_payment_method", "requires_confirmation"):
            return _error(400, f"This SetupIntent is {intent['status']} and cannot be confirmed.",
                          code="setup_intent_unexpected_state")
        if chosen in ACH_TOKENS:
            method = self._token_method(chosen)
        elif chosen:
            method = self.objects.get(chosen)
            if method is None:
                return _error(404, f"No such PaymentMethod: '{chosen}'", code="resource_missing")
        elif (form.get("payment_method_data") or {}).get("type") == "us_bank_account":
            method = self._bank_account(form["payment_method_data"])
            if isinstance(method, web.Response):
                return method
        else:
            return _error(400, "A payment method is required to confirm this SetupIntent.",
                          code="parameter_missing", param="payment_method")
        if not ((form.get("mandate_data") or {}).get("customer_acceptance") or {}).get("type"):
            return _error(400, "mandate_data[customer_acceptance] is required for us_bank_account.",
                          code="parameter_missing", param="mandate_data")
        method["customer"] = intent["customer"]
        intent["payment_method"] = method["id"]
        if self.bank_accounts[method["id"]] == MICRODEPOSITS_FAIL_ACCOUNT:
            self._setup_failed(intent, "payment_method_microdeposit_failed",
                               "Microdeposits could not be sent to this bank account.")
        elif method["id"] in self.verified:
            self._setup_succeeded(intent)
        else:
            intent["status"] = "requires_action"
            intent["next_action"] = {"type": "verify_with_microdeposits", "verify_with_microdeposits": {
                "arrival_date": self.now() + DAY, "microdeposit_type": "amounts",
                "hosted_verification_url": f"{self.url}/microdeposit/{intent['id']}"}}
        return web.json_response(intent)

    async def _confirm_card_setup(self, request: web.Request, form: dict[str, Any], chosen: str | None) -> web.Response:
        """A localstripe card SetupIntent: Stripe's declining test cards fail here, as at Stripe."""
        if chosen in CARDS_DECLINED:
            _, code, decline_code = CARDS_DECLINED[chosen]
            return self._card_declined_error(chosen, code, decline_code, setup_intent={
                "id": request.match_info["id"], "object": "setup_intent", "status": "requires_payment_method"})
        if chosen in CARDS_DECLINED_AFTER_ATTACH:
            # localstripe makes (and keeps) a card that attaches; the sandbox declines its charges.
            async with self._http.get(f"{self.localstripe}/v1/payment_methods/{LOCALSTRIPE_ATTACHABLE_DECLINE}",
                                      headers={"Authorization": request.headers.get("Authorization", "")}) as made:
                if made.status != 200:
                    return web.Response(status=made.status, body=await made.read(), content_type="application/json")
                stand_in = (await made.json())["id"]
            self.card_declines[stand_in] = ("card_declined", CARDS_DECLINED_AFTER_ATTACH[chosen])
            pairs = [(k, stand_in if k == "payment_method" else v)
                     for k, v in parse_qsl((await request.read()).decode(), keep_blank_values=True)]
            return await self._forward(request, urlencode(pairs).encode())
        return await self._forward(request)

    async def _verify_microdeposits(self, request: web.Request) -> web.Response:
        form = await self._form(request)
        intent = self.objects.get(request.match_info["id"])
        if intent is None:
            return _error(404, f"No such setupintent: '{request.match_info['id']}'", code="resource_missing")
        if not self._authorized(request, form, publishable_ok=True):
            return _error(401, "Invalid API Key provided", "authentication_error")
        if intent["status"] != "requires_action":
            return _error(400, "This SetupIntent is not awaiting microdeposit verification.",
                          code="setup_intent_unexpected_state")
        try:
            given: Any = form["descriptor_code"] if "descriptor_code" in form else tuple(
                sorted(int(a) for a in form.get("amounts", [])))
        except ValueError:
            return _error(400, "amounts must be integers (cents)", param="amounts")
        if given not in MICRODEPOSIT_OUTCOMES:
            kind = "descriptor_code" if isinstance(given, str) else "amounts"
            return _error(400, "The verification values do not match the microdeposits.",
                          code=f"payment_method_microdeposit_verification_{kind}_mismatch", param=kind)
        failure = MICRODEPOSIT_OUTCOMES[given]
        if failure:
            self._setup_failed(intent, failure, "The bank account could not be verified.")
            return _error(400, "The bank account could not be verified.", code=failure, setup_intent=intent)
        self.verified.add(intent["payment_method"])
        self._setup_succeeded(intent)
        return web.json_response(intent)

    def _setup_succeeded(self, intent: dict[str, Any]) -> None:
        mandate = {"id": _id("mandate"), "object": "mandate", "livemode": False, "multi_use": {},
                   "payment_method": intent["payment_method"], "status": "active", "type": "multi_use",
                   "customer_acceptance": {"accepted_at": self.now(), "type": "online", "online": {}},
                   "payment_method_details": {"type": "us_bank_account", "us_bank_account": {}}}
        self.objects[mandate["id"]] = mandate
        intent.update(status="succeeded", next_action=None, mandate=mandate["id"], last_setup_error=None)
        self._emit(("setup_intent.succeeded", intent))

    def _setup_failed(self, intent: dict[str, Any], code: str, message: str) -> None:
        intent.update(status="requires_payment_method", next_action=None, payment_method=None,
                      last_setup_error={"type": "invalid_request_error", "code": code, "message": message})
        self._emit(("setup_intent.setup_failed", intent))

    # --- payment intents ---------------------------------------------------------------------------
    async def _create_payment_intent(self, request: web.Request) -> web.Response:
        form = await self._form(request)
        chosen = form.get("payment_method")
        ours = chosen in self.bank_accounts or chosen in ACH_TOKENS or chosen in CARDS_DECLINED \
            or chosen in self.card_declines
        if not ours:
            return await self._forward(request)
        if not self._authorized(request, form):
            return _error(401, "Invalid API Key provided", "authentication_error")
        return self._payment_intent(form, chosen)

    def _payment_intent(self, form: dict[str, Any], chosen: str) -> web.Response:
        try:
            amount = int(form.get("amount", ""))
        except ValueError:
            return _error(400, "Invalid integer: amount", param="amount")
        if amount <= 0 or not form.get("currency"):
            return _error(400, "amount and currency are required", param="amount")
        intent_id = _id("pi")
        intent = {"id": intent_id, "object": "payment_intent", "amount": amount, "amount_capturable": 0,
                  "amount_details": {"tip": {}},
                  "amount_received": 0, "capture_method": "automatic", "confirmation_method": "automatic",
                  "client_secret": f"{intent_id}_secret_{secrets.token_hex(12)}", "created": self.now(),
                  "currency": form["currency"].lower(), "customer": form.get("customer"),
                  "description": form.get("description"), "last_payment_error": None, "latest_charge": None,
                  "livemode": False, "metadata": form.get("metadata") or {}, "next_action": None,
                  "payment_method": chosen, "payment_method_options": {}, "processing": None,
                  "payment_method_types": form.get("payment_method_types") or ["card"],
                  "setup_future_usage": None, "status": "requires_confirmation", "canceled_at": None,
                  "cancellation_reason": None, "application": None, "application_fee_amount": None,
                  "automatic_payment_methods": None, "invoice": None, "on_behalf_of": None,
                  "receipt_email": None, "review": None, "shipping": None, "statement_descriptor": None,
                  "statement_descriptor_suffix": None, "transfer_data": None, "transfer_group": None}
        self.objects[intent_id] = intent
        if str(form.get("confirm")).lower() != "true":
            return web.json_response(intent)
        if chosen in ACH_TOKENS:
            chosen = intent["payment_method"] = self._token_method(chosen)["id"]
        if chosen in self.bank_accounts:
            return self._debit_bank_account(intent, chosen)
        code, decline_code = self.card_declines.get(chosen) or CARDS_DECLINED[chosen][1:]
        return self._decline_card_payment(intent, chosen, code, decline_code)

    def _charge(self, intent: dict[str, Any], details: dict[str, Any]) -> dict[str, Any]:
        charge_id = _id("py" if details["type"] == "us_bank_account" else "ch")
        method = self.objects.get(intent["payment_method"]) or {}
        charge = {"id": charge_id, "object": "charge", "amount": intent["amount"], "amount_captured": intent["amount"],
                  "amount_refunded": 0, "application": None, "application_fee": None, "application_fee_amount": None,
                  "balance_transaction": None, "billing_details": method.get("billing_details") or {
                      "address": None, "email": None, "name": None, "phone": None},
                  "calculated_statement_descriptor": None, "captured": True, "created": self.now(),
                  "currency": intent["currency"], "customer": intent["customer"], "description": None,
                  "disputed": False, "failure_balance_transaction": None, "failure_code": None,
                  "failure_message": None, "fraud_details": {}, "invoice": None, "livemode": False,
                  "metadata": intent["metadata"], "on_behalf_of": None, "outcome": None, "paid": False,
                  "payment_intent": intent["id"], "payment_method": intent["payment_method"],
                  "payment_method_details": details, "receipt_email": None, "receipt_number": None,
                  "receipt_url": None, "refunded": False, "review": None, "shipping": None, "source_transfer": None,
                  "statement_descriptor": None, "statement_descriptor_suffix": None, "status": "pending",
                  "transfer_data": None, "transfer_group": None,
                  "refunds": {"object": "list", "data": [], "has_more": False,
                              "url": f"/v1/charges/{charge_id}/refunds"}}
        self.objects[charge["id"]] = charge
        intent["latest_charge"] = charge["id"]
        return charge

    def _debit_bank_account(self, intent: dict[str, Any], method_id: str) -> web.Response:
        if method_id not in self.verified:
            return _error(400, "The bank account must be verified before it can be debited.",
                          code="payment_method_unverified", param="payment_method")
        bank = self.objects[method_id]["us_bank_account"]
        self._charge(intent, {"type": "us_bank_account", "us_bank_account": {
            k: bank[k] for k in ("account_holder_type", "account_type", "bank_name", "fingerprint", "last4",
                                 "routing_number")}})
        intent.update(status="processing", processing={"type": "us_bank_account"})
        _, behaviour = ACH_TEST_ACCOUNTS.get(self.bank_accounts[method_id], (None, None))
        if behaviour != STAYS_PROCESSING:
            self.settling[intent["latest_charge"]] = self.now() + ACH_SETTLEMENT_S
        self._emit(("charge.pending", self.objects[intent["latest_charge"]]), ("payment_intent.processing", intent))
        return web.json_response(intent)

    def _settle_ach(self, charge: dict[str, Any]) -> list[dict[str, Any]]:
        _, failure = ACH_TEST_ACCOUNTS.get(self.bank_accounts[charge["payment_method"]], (None, None))
        if failure:
            return self._fail_ach(charge, failure)
        # Stripe's ACH Direct Debit pricing: 0.8%, capped at $5.00.
        fee = min((charge["amount"] * 8 + 500) // 1000, 500)
        txn = self._balance_transaction("charge", charge["amount"], fee, charge["currency"], charge["id"])
        charge.update(status="succeeded", paid=True, balance_transaction=txn["id"],
                      outcome={"network_status": "approved_by_network", "type": "authorized"})
        intent = self.objects[charge["payment_intent"]]
        intent.update(status="succeeded", amount_received=charge["amount"], processing=None)
        return self._emit(("charge.succeeded", charge), ("payment_intent.succeeded", intent))

    def _fail_ach(self, charge: dict[str, Any], code: str) -> list[dict[str, Any]]:
        """An ACH debit failed or was returned: Stripe reports the return as the charge's failure_code."""
        message = ACH_FAILURE_MESSAGES.get(code, "The payment failed.")
        charge.update(status="failed", paid=False, failure_code=code, failure_message=message,
                      outcome={"network_status": "declined_by_network", "type": "invalid", "reason": code})
        intent = self.objects[charge["payment_intent"]]
        intent.update(status="requires_payment_method", amount_received=0, processing=None, last_payment_error={
            "type": "invalid_request_error", "code": code, "message": message,
            "payment_method": self.objects[charge["payment_method"]]})
        return self._emit(("charge.failed", charge), ("payment_intent.payment_failed", intent))

    def _decline_card_payment(self, intent: dict[str, Any], method_id: str, code: str,
                              decline_code: str | None) -> web.Response:
        charge = self._charge(intent, {"type": "card", "card": {"brand": "visa", "network": "visa"}})
        message = CARD_MESSAGES.get(decline_code or code, "Your card was declined.")
        charge.update(status="failed", failure_code=code, failure_message=message, outcome={
            "network_status": "declined_by_network", "type": "issuer_declined", "reason": decline_code})
        intent.update(status="requires_payment_method", last_payment_error={
            "type": "card_error", "code": code, "decline_code": decline_code, "message": message,
            "charge": charge["id"], "payment_method": {"id": method_id, "object": "payment_method"}})
        self._emit(("charge.failed", charge), ("payment_intent.payment_failed", intent))
        return self._card_declined_error(method_id, code, decline_code, charge=charge["id"], payment_intent=intent)

    @staticmethod
    def _card_declined_error(method_id: str, code: str, decline_code: str | None, **context: Any) -> web.Response:
        message = CARD_MESSAGES.get(decline_code or code, "Your card was declined.")
        fields = {"code": code, "doc_url": f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}",
                  "payment_method": {"id": method_id, "object": "payment_method", "type": "card"}, **context}
        if decline_code:
            fields["decline_code"] = decline_code
        return _error(402, message, "card_error", **fields)

    def _balance_transaction(self, type_: str, amount: int, fee: int, currency: str, source: str) -> dict[str, Any]:
        txn = StripeExtras._transaction(type_, amount, fee, currency, source, None, self.now())
        txn.pop("_payout")
        txn["status"] = "pending"
        self.objects[txn["id"]] = txn
        return txn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8420)
    parser.add_argument("--localstripe", required=True, help="localstripe's base URL, e.g. http://127.0.0.1:8421")
    parser.add_argument("--rate-limit", type=float, default=None, help="requests per second on /v1/ (429 above)")
    parser.add_argument("--speed", type=float, default=1.0, help="simulated seconds per real second (ACH settles)")
    args = parser.parse_args()

    async def serve() -> None:
        sandbox = await StripeSandbox(args.localstripe, host=args.host, port=args.port,
                                      rate_limit=args.rate_limit, speed=args.speed).start()
        print(f"stripe sandbox on {sandbox.url} (localstripe at {args.localstripe})", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await sandbox.stop()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
