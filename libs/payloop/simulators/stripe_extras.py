"""Stripe payouts and balance transactions, which localstripe lacks, in Stripe's API format.

Follows Stripe's published OpenAPI (`../shared/specs/stripe/spec3.yaml`, objects as in
`fixtures3.json`): `GET /v1/payouts/{id}` and `GET /v1/balance_transactions?payout=...` with
cursor pagination (`limit`, `starting_after`, `has_more`), authenticated with a secret key
(`Authorization: Bearer sk_...`). A test-control route builds what Stripe's own books would hold:

    POST /_sim/payouts  {"currency": "usd", "arrival_date": 1767225600,
                         "transactions": [{"type": "charge", "source": "ch_...", "amount": 1000, "fee": 59}]}

creates one balance transaction per entry (net = amount - fee), a payout of their nets with its own
`payout` transaction, and answers `{"payout": ..., "event": ...}`, the `payout.paid` event Stripe
would send, for the caller to sign and deliver. `python -m payloop.simulators.stripe_extras --port N`
runs it standalone; tests run it in-process with `await StripeExtras(port=N).start()`.
"""
from __future__ import annotations

import argparse
import asyncio
import secrets
import time
from typing import Any

from aiohttp import web

API_VERSION = "2023-08-16"
REPORTING_CATEGORY = {"charge": "charge", "payment": "charge", "refund": "refund", "payment_refund": "refund",
                      "adjustment": "dispute", "stripe_fee": "fee", "payout": "payout"}


def _id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


def _error(status: int, message: str, type_: str = "invalid_request_error") -> web.Response:
    return web.json_response({"error": {"type": type_, "message": message}}, status=status)


class StripeExtras:
    def __init__(self, host: str = "127.0.0.1", port: int = 8230):
        self.host, self.port = host, port
        self.payouts: dict[str, dict[str, Any]] = {}
        # Newest first, as Stripe lists them; each remembers the payout that settled it.
        self.transactions: list[dict[str, Any]] = []
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> "StripeExtras":
        self._runner = web.AppRunner(self.app())
        await self._runner.setup()
        await web.TCPSite(self._runner, self.host, self.port).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._auth])
        self.add_routes(app.router)
        return app

    def add_routes(self, router: web.UrlDispatcher) -> None:
        """Its routes, for a server that serves them beside others (the Stripe sandbox)."""
        router.add_get("/v1/payouts/{id}", self._payout)
        router.add_get("/v1/balance_transactions", self._list_transactions)
        router.add_post("/_sim/payouts", self._create_payout)

    @web.middleware
    async def _auth(self, request: web.Request, handler):
        if request.path.startswith("/v1/"):
            scheme, _, key = request.headers.get("Authorization", "").partition(" ")
            if scheme != "Bearer" or not key.startswith("sk_"):
                return _error(401, "Invalid API Key provided", "authentication_error")
        return await handler(request)

    async def _payout(self, request: web.Request) -> web.Response:
        payout = self.payouts.get(request.match_info["id"])
        if payout is None:
            return _error(404, f"No such payout: '{request.match_info['id']}'")
        return web.json_response(payout)

    async def _list_transactions(self, request: web.Request) -> web.Response:
        query = request.query
        try:
            limit = int(query.get("limit", "10"))
        except ValueError:
            return _error(400, "Invalid integer: limit")
        if not 1 <= limit <= 100:
            return _error(400, "limit must be between 1 and 100")
        rows = [t for t in self.transactions if "payout" not in query or t["_payout"] == query["payout"]]
        if "starting_after" in query:
            ids = [t["id"] for t in rows]
            if query["starting_after"] not in ids:
                return _error(400, f"No such balance transaction: '{query['starting_after']}'")
            rows = rows[ids.index(query["starting_after"]) + 1:]
        page = rows[:limit]
        return web.json_response({"object": "list", "url": "/v1/balance_transactions", "has_more": len(rows) > limit,
                                  "data": [{k: v for k, v in t.items() if not k.startswith("_")} for t in page]})

    async def _create_payout(self, request: web.Request) -> web.Response:
        body = await request.json()
        currency = body.get("currency", "usd")
        now = int(time.time())
        payout_id = _id("po")
        created = []
        for entry in body.get("transactions", []):
            amount, fee = int(entry["amount"]), int(entry.get("fee", 0))
            created.append(self._transaction(entry["type"], amount, fee, currency, entry.get("source"), payout_id, now))
        net = sum(t["net"] for t in created)
        own = self._transaction("payout", -net, 0, currency, payout_id, payout_id, now)
        payout = {"id": payout_id, "object": "payout", "amount": net, "currency": currency, "status": "paid",
                  "arrival_date": int(body.get("arrival_date", now)), "created": now, "automatic": True,
                  "balance_transaction": own["id"], "description": "STRIPE PAYOUT", "method": "standard",
                  "type": "bank_account", "source_type": "card", "livemode": False, "metadata": {},
                  "failure_code": None, "failure_message": None}
        self.payouts[payout_id] = payout
        # Newest first: the payout's own transaction, then what it settled, latest first.
        self.transactions[:0] = [own, *reversed(created)]
        event = {"id": _id("evt"), "object": "event", "api_version": API_VERSION, "created": now,
                 "type": "payout.paid", "livemode": False, "data": {"object": payout}}
        return web.json_response({"payout": payout, "event": event})

    @staticmethod
    def _transaction(type_: str, amount: int, fee: int, currency: str, source: str | None, payout_id: str,
                     now: int) -> dict[str, Any]:
        return {"id": _id("txn"), "object": "balance_transaction", "amount": amount, "fee": fee, "net": amount - fee,
                "currency": currency, "type": type_, "source": source, "status": "available", "created": now,
                "available_on": now, "description": None, "exchange_rate": None,
                "fee_details": [{"amount": fee, "currency": currency, "type": "stripe_fee",
                                 "description": "Stripe processing fees", "application": None}] if fee else [],
                "reporting_category": REPORTING_CATEGORY.get(type_, "other_adjustment"), "_payout": payout_id}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8230)
    args = parser.parse_args()

    async def serve() -> None:
        sim = await StripeExtras(args.host, args.port).start()
        print(f"stripe_extras on {sim.url}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await sim.stop()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
