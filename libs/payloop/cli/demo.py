"""The demo MSP that `payloop dev` seeds, through the services' own APIs (never their databases).

What it sets up, in order, so that the first minute shows the whole loop (docs/demo.md):
the tenant profile; a collection policy that sends at any hour; a QuickBooks connection to the
simulator's demo realm with its account mapping; a ConnectWise connection to the simulator's demo
company and a first sync (40 clients, a year of invoices, the last months still open); and saved
cards with auto-pay for a few clients (one card that declines), plus an installment plan.

Only the tenant profile is essential to `payloop dev`: any later step that fails is reported with
its reason and skipped, so a broken demo never stops the platform from running.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import parse_qs, urlparse

import httpx

from payloop.auth import mint_token
from payloop.cli.errors import CliError
from payloop.services import service
from payloop.simulators import SIMULATORS

if TYPE_CHECKING:
    from payloop.cli.dev import DevPlatform

DEMO_TENANT = "demo-msp"

# The simulators' demo accounts (libs/payloop/simulators/connectwise.py and quickbooks.py).
CONNECTWISE_CREDENTIALS = {"company_id": "payloopdemo", "public_key": "demo-public-key",
                           "private_key": "demo-private-key", "client_id": "00000000-demo-4000-8000-clientid0001"}
QUICKBOOKS_REALM = "9130350000000001"
# localstripe accepts any `sk_test_` key; the payments service uses this one in dev unless told otherwise.
DEV_STRIPE_KEY = "sk_test_payloop_dev"
# Stripe's test payment methods: a card that succeeds and one whose off-session charges decline.
GOOD_CARD, DECLINING_CARD = "pm_card_visa", "pm_card_chargeCustomerFail"

AUTOPAY_CLIENTS = 6  # the first clients of the PSA's list pay by card on auto-pay; the last of them declines
INSTALLMENT_CLIENT = AUTOPAY_CLIENTS  # the next one pays its largest invoice in three parts
WAIT_S = 30.0


class DemoStepFailed(Exception):
    pass


def api(platform: "DevPlatform", service_name: str) -> httpx.Client:
    token = mint_token(DEMO_TENANT, ["admin"])
    return httpx.Client(base_url=f"http://127.0.0.1:{platform.service_port(service(service_name))}",
                        headers={"Authorization": f"Bearer {token}"}, timeout=60)


def expect(response: httpx.Response, what: str) -> Any:
    if response.status_code >= 400:
        raise DemoStepFailed(f"{what}: {response.status_code} {response.text[:300]}")
    return response.json() if response.content else {}


def simulator_url(platform: "DevPlatform", name: str) -> str:
    spec = next(s for s in SIMULATORS if s.name == name)
    return f"http://127.0.0.1:{platform.port(spec.port)}"


def wait_until(check: Callable[[], Any], what: str, timeout_s: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise DemoStepFailed(f"gave up waiting for {what} after {timeout_s:.0f}s")
        time.sleep(0.25)


@dataclass
class Demo:
    platform: "DevPlatform"
    clients: list[dict] = field(default_factory=list)  # the PSA's clients as psa_ingest saw them

    def say(self, text: str) -> None:
        self.platform.say(f"demo: {text}")


def seed_demo(platform: "DevPlatform") -> None:
    with api(platform, "tenants") as tenants:
        response = tenants.put(f"/v1/tenants/{DEMO_TENANT}", json={
            "name": "Demo MSP", "timezone": "America/Chicago", "currency": "USD",
            "branding": {"primary_color": "#0f766e", "sender_name": "Demo MSP Billing"},
        })
        if response.status_code >= 400:
            raise CliError(f"seeding the demo failed at the tenant profile: {response.status_code} "
                           f"{response.text[:500]}")
    platform.say(f"seeded tenant {DEMO_TENANT!r}")
    demo = Demo(platform)
    for what, step in (("collection policy", seed_policy), ("QuickBooks connection", seed_quickbooks),
                       ("ConnectWise connection", seed_connectwise), ("auto-pay", seed_autopay)):
        try:
            step(demo)
        except (DemoStepFailed, httpx.HTTPError) as exc:
            demo.say(f"WARNING: {what} not set up ({exc}); the platform runs on without it")
            if step is seed_connectwise:
                break  # auto-pay needs the PSA's clients
    platform.say(what_to_open(platform))


def seed_policy(demo: Demo) -> None:
    """Reminders at any hour and day, so a newcomer sees one whatever the time; no hand-off step, so even
    the simulator's long-overdue invoices get an email (the final notice) rather than a task."""
    policy = {"name": "Demo: reminders around the clock", "is_default": True, "business_days": False,
              "send_hour": 0, "quiet_start_hour": 0, "quiet_end_hour": 0,
              "steps": [{"offset_days": -3, "level": "friendly"}, {"offset_days": 0, "level": "friendly"},
                        {"offset_days": 3, "level": "firm"}, {"offset_days": 7, "level": "firm"},
                        {"offset_days": 14, "level": "final"}]}
    with api(demo.platform, "collections") as collections:
        def stored() -> httpx.Response | None:
            response = collections.put("/v1/collections/policies/demo", json=policy)
            # 404 until collections has consumed the tenant profile just stored.
            return None if response.status_code == 404 else response
        # Before the first sync: steps are decided once, by the policy in force when they fall due.
        expect(wait_until(stored, "collections to learn of the tenant"), "storing the policy")
    demo.say("collection policy 'demo' (sends at any hour)")


def seed_quickbooks(demo: Demo) -> None:
    """The MSP's consent at the simulator, the code handed to gl_posting, then the account mapping."""
    qbo = simulator_url(demo.platform, "quickbooks")
    redirect_uri = "http://127.0.0.1/demo-callback"
    consent = httpx.get(f"{qbo}/connect/oauth2", params={
        "client_id": "payloop-dev", "redirect_uri": redirect_uri, "response_type": "code",
        "scope": "com.intuit.quickbooks.accounting", "state": uuid.uuid4().hex, "realmId": QUICKBOOKS_REALM},
        timeout=10)
    if consent.status_code != 302:
        raise DemoStepFailed(f"the simulator's consent answered {consent.status_code}")
    code = parse_qs(urlparse(consent.headers["location"]).query)["code"][0]
    with api(demo.platform, "gl_posting") as gl:
        expect(gl.put("/v1/gl/connection", json={"system": "quickbooks", "company_id": QUICKBOOKS_REALM,
                                                 "authorization_code": code, "redirect_uri": redirect_uri}),
               "connecting QuickBooks")

        def connected() -> dict | None:
            view = expect(gl.get("/v1/gl/connection"), "reading the connection")
            if view["status"] == "failed":
                raise DemoStepFailed(f"gl_posting could not connect: {view['last_error']} (is gl_posting "
                                     f"pointed at {qbo}? PAYLOOP_GL_QUICKBOOKS_* settings)")
            return view if view["status"] == "connected" else None
        wait_until(connected, "gl_posting to exchange the authorization code")
        state = expect(httpx.get(f"{qbo}/_sim/companies/{QUICKBOOKS_REALM}", timeout=10), "reading the books")
        accounts = {a["Name"]: a["Id"] for a in state["entities"]["Account"]}
        expect(gl.put("/v1/gl/account-mapping", json={
            "clearing_account_id": accounts["Undeposited Funds"], "bank_account_id": accounts["Checking"],
            "fee_account_id": accounts["Merchant Processing Fees"],
            "refunds_account_id": accounts["Refunds and Chargebacks"],
            "refund_item_id": state["entities"]["Item"][0]["Id"]}), "mapping the accounts")
    demo.say(f"QuickBooks realm {QUICKBOOKS_REALM} connected and mapped")


def seed_connectwise(demo: Demo) -> None:
    """Connect the simulator's demo company and run the first sync now (then every 30 s by itself)."""
    base_url = simulator_url(demo.platform, "connectwise") + "/v4_6_release/apis/3.0"
    with api(demo.platform, "psa_ingest") as psa:
        existing = expect(psa.get("/v1/psa/connections"), "listing connections")["items"]
        connection = next((c for c in existing if c["base_url"] == base_url), None)
        if connection is None:  # a restarted `payloop dev` keeps its databases: connect once
            connection = expect(psa.post("/v1/psa/connections", json={
                "source": "connectwise", "name": "ConnectWise (simulator)", "base_url": base_url,
                "credentials": CONNECTWISE_CREDENTIALS, "poll_interval_s": 30}), "connecting ConnectWise")
        run = expect(psa.post(f"/v1/psa/connections/{connection['id']}/sync", json={}), "the first sync")
        if run["status"] != "succeeded":
            raise DemoStepFailed(f"the first sync {run['status']}: {run.get('error')}")
        demo.clients = expect(psa.get("/v1/psa/records", params={"kind": "client", "limit": 100}),
                              "listing clients")["items"]
    demo.say(f"ConnectWise connected; first sync: {run['counts']}")


def seed_autopay(demo: Demo) -> None:
    """Cards saved the way Stripe.js saves them, then auto-pay; the open invoices they cover are copied into
    QuickBooks first (the MSP's books already hold its invoices), so the payments post against them."""
    chosen = demo.clients[:INSTALLMENT_CLIENT + 1]
    with api(demo.platform, "payments") as payments:
        invoices = {c["id"]: wait_until(lambda c=c: client_invoices(payments, c["id"]),
                                        f"payments to learn of {c['data']['name']}'s invoices") for c in chosen}
        mirror_into_quickbooks(demo, chosen, invoices)
        enrolled = 0
        for index, client in enumerate(chosen):
            if payments.get(f"/v1/clients/{client['id']}/payment-methods").json():
                continue  # seeded by an earlier run
            card = DECLINING_CARD if index == AUTOPAY_CLIENTS - 1 else GOOD_CARD
            method = save_card(demo, payments, client["id"], card)
            if index == INSTALLMENT_CLIENT:
                largest = max((i for i in invoices[client["id"]] if i["open_minor"] > 0),
                              key=lambda i: i["open_minor"], default=None)
                if largest is not None:
                    expect(payments.post(f"/v1/clients/{client['id']}/installment-plans", json={
                        "invoice_id": largest["invoice_id"], "payment_method_id": method["id"], "parts": 3}),
                        "the installment plan")
                continue
            expect(payments.put(f"/v1/clients/{client['id']}/autopay",
                                json={"payment_method_id": method["id"], "rule": "on_due"}), "enrolling")
            enrolled += 1
    if enrolled:
        demo.say(f"auto-pay by card for {enrolled} clients (one card declines and is retried), "
                 f"an installment plan for {chosen[INSTALLMENT_CLIENT]['data']['name']}")


def client_invoices(payments: httpx.Client, client_id: str) -> list[dict] | None:
    response = payments.get(f"/v1/clients/{client_id}/invoices")
    return response.json() if response.status_code == 200 and response.json() else None


def save_card(demo: Demo, payments: httpx.Client, client_id: str, card: str) -> dict:
    """What the browser does with Stripe.js: confirm the SetupIntent at Stripe, then register the method."""
    stripe = demo.platform.env["PAYLOOP_STRIPE_API_BASE"]
    setup = expect(payments.post(f"/v1/clients/{client_id}/setup-intents", json={"type": "card"}),
                   "creating a SetupIntent")
    expect(httpx.post(f"{stripe}/v1/setup_intents/{setup['setup_intent_id']}/confirm",
                      data={"payment_method": card}, timeout=10,
                      headers={"Authorization": f"Bearer {demo.platform.env.get('PAYLOOP_STRIPE_API_KEY', DEV_STRIPE_KEY)}"}),
           "confirming the SetupIntent at localstripe")
    return expect(payments.post(f"/v1/clients/{client_id}/payment-methods",
                                json={"setup_intent_id": setup["setup_intent_id"]}), "saving the card")


def mirror_into_quickbooks(demo: Demo, clients: list[dict], invoices: dict[str, list[dict]]) -> None:
    qbo = simulator_url(demo.platform, "quickbooks")
    books = httpx.get(f"{qbo}/_sim/companies/{QUICKBOOKS_REALM}", timeout=10)
    if books.status_code != 200:
        return  # no QuickBooks: payments simply are not posted
    known = {i["DocNumber"] for i in books.json()["entities"].get("Invoice", [])}
    for client in clients:
        for invoice in invoices[client["id"]]:
            if invoice["open_minor"] > 0 and invoice["number"] not in known:
                expect(httpx.post(f"{qbo}/_sim/companies/{QUICKBOOKS_REALM}/invoices", timeout=10, json={
                    "doc_number": invoice["number"], "customer": client["data"]["name"],
                    "amount": f"{invoice['open_minor'] // 100}.{invoice['open_minor'] % 100:02d}",
                    "txn_date": invoice["issued_on"]}), f"copying invoice {invoice['number']} into QuickBooks")


def what_to_open(platform: "DevPlatform") -> str:
    dashboard = f"http://127.0.0.1:{platform.service_port(service('reporting'))}"
    token = mint_token(DEMO_TENANT, ["ar:read"])
    return "\n".join([
        "what to open (docs/demo.md says what to expect in the first minute):",
        f"  dashboard       {dashboard}/#token={token}",
        f"  reminder email  {simulator_url(platform, 'smtp-sink')}/",
        f"  ConnectWise     {simulator_url(platform, 'connectwise')}/v4_6_release/apis/3.0/finance/invoices "
        "(Basic payloopdemo+demo-public-key:demo-private-key, clientId header)",
        f"  QuickBooks      {simulator_url(platform, 'quickbooks')}/_sim/companies/{QUICKBOOKS_REALM}",
    ])
