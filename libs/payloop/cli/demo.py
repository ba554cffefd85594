"""The demo MSP that `payloop dev` seeds, through the services' own APIs (never their databases).

What it sets up, in order, so that the first minute shows the whole loop (docs/demo.md):
the tenant profile; a collection policy that sends at any hour; a QuickBooks connection to the
simulator's demo realm with its account mapping; a ConnectWise connection to the simulator's demo
company and a first sync (40 clients, a year of invoices dated around today by `payloop dev`: the
history paid on the PSA's own dates, one client paying later and later, the current invoices due
today or over the next weeks); saved cards with auto-pay for the first clients (one card that
declines), an installment plan, and two clients on ACH auto-pay (processing, settled four banking
days later on the sandbox's calendar). Auto-pay charges what is due today at once and the rest on
its due date as the services' clocks run (`--speed`).
Then a second MSP, `demo-msp-xero`, on the other PSA and ledger: the HaloPSA simulator's company,
connected to the Xero simulator's demo organisation through the consent step, with auto-pay cards
so its settled payments are posted to Xero too. Twenty seconds later Stripe pays out each MSP's
settled charges (a thread), and the deposits are posted to QuickBooks and Xero.

Only the tenant profile is essential to `payloop dev`: any later step that fails is reported with
its reason and skipped, so a broken demo never stops the platform from running.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import parse_qs, urlparse
from zoneinfo import ZoneInfo

import httpx

from payloop.auth import mint_token
from payloop.cli.errors import CliError
from payloop.services import service
from payloop.simulators import SIMULATORS

if TYPE_CHECKING:
    from payloop.cli.dev import DevPlatform

DEMO_TENANT = "demo-msp"
DEMO_TIMEZONE = "America/Chicago"

# The simulators' demo accounts (libs/payloop/simulators/connectwise.py and quickbooks.py).
CONNECTWISE_CREDENTIALS = {"company_id": "payloopdemo", "public_key": "demo-public-key",
                           "private_key": "demo-private-key", "client_id": "00000000-demo-4000-8000-clientid0001"}
QUICKBOOKS_REALM = "9130350000000001"
XERO_DEMO_TENANT = "demo-msp-xero"
XERO_ORGANISATION = "5b3c2e7a-0d8f-4c1e-9a6b-3f2d1c0b9a87"  # payloop.simulators.xero.DEMO_TENANT_ID
HALO_CREDENTIALS = {"client_id": "payloop-demo-halo-client", "client_secret": "demo-halo-secret"}
XERO_AUTOPAY_CLIENTS = 3  # few: Xero allows 60 calls a minute per organisation
# localstripe accepts any `sk_test_` key; the payments service uses this one in dev unless told otherwise.
DEV_STRIPE_KEY = "sk_test_payloop_dev"
# Stripe's test payment methods: a card that succeeds and one whose off-session charges decline.
GOOD_CARD, DECLINING_CARD = "pm_card_visa", "pm_card_chargeCustomerFail"

# Roles by the PSA's order of clients, as the simulators' book (psa_book.EARLY_DUE_IN) dates their invoices.
AUTOPAY_CLIENTS = 6  # the first clients of the PSA's list pay by card on auto-pay; the last of them declines
INSTALLMENT_CLIENT = AUTOPAY_CLIENTS  # the next one pays its largest invoice in three parts
ACH_CLIENTS = 2  # the two after it pay by bank account (ACH): processing, settled four banking days later
ACH_ACCOUNT = "000123456789"  # Stripe's test account that settles (docs/vendors/stripe.md)
PAYOUT_AFTER_S = 20.0  # the first payout gathers what settled by then
WAIT_S = 30.0
SYNC_WAIT_S = 120.0  # a first sync of the demo book takes seconds; on a loaded machine, more


class DemoStepFailed(Exception):
    pass


def demo_today() -> date:
    """The demo's first day in its tenant's timezone: the day the services' clocks start from."""
    return datetime.now(ZoneInfo(DEMO_TIMEZONE)).date()


def api(platform: "DevPlatform", service_name: str, tenant: str = DEMO_TENANT) -> httpx.Client:
    token = mint_token(tenant, ["admin"])
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
            "name": "Demo MSP", "timezone": DEMO_TIMEZONE, "currency": "USD",
            "branding": {"primary_color": "#0f766e", "sender_name": "Demo MSP Billing"},
        })
        if response.status_code >= 400:
            raise CliError(f"seeding the demo failed at the tenant profile: {response.status_code} "
                           f"{response.text[:500]}")
    platform.say(f"seeded tenant {DEMO_TENANT!r}")
    demo = Demo(platform)
    for what, step in (("collection policy", seed_policy), ("QuickBooks connection", seed_quickbooks),
                       ("ConnectWise connection", seed_connectwise), ("auto-pay", seed_autopay),
                       ("ACH auto-pay", seed_ach)):
        try:
            step(demo)
        except (DemoStepFailed, httpx.HTTPError) as exc:
            demo.say(f"WARNING: {what} not set up ({exc}); the platform runs on without it")
            if step is seed_connectwise:
                break  # auto-pay needs the PSA's clients
    seed_xero_demo(platform)
    # Stripe pays out what settled, as it does daily; a thread, so the platform is usable meanwhile.
    threading.Thread(target=pay_out, args=(demo, [DEMO_TENANT, XERO_DEMO_TENANT]), daemon=True,
                     name="demo-payout").start()
    platform.say(what_to_open(platform))


def seed_policy(demo: Demo) -> None:
    """Reminders at any hour and day, so a newcomer sees one whatever the time; no hand-off step, so every
    overdue invoice gets an email rather than a task."""
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
            "convenience_fee_account_id": accounts["Card Convenience Fees"],
            "refund_item_id": state["entities"]["Item"][0]["Id"]}), "mapping the accounts")
    demo.say(f"QuickBooks realm {QUICKBOOKS_REALM} connected and mapped")


def seed_connectwise(demo: Demo) -> None:
    """Connect the simulator's demo company and run the first sync now (then every 30 s by itself)."""
    base_url = simulator_url(demo.platform, "connectwise") + "/v4_6_release/apis/3.0"
    # `paid_dates`: the PSA's own payment dates, so reporting's days-to-pay and drift read the client's history.
    run = connect_psa(demo, DEMO_TENANT, {"source": "connectwise", "name": "ConnectWise (simulator)",
                                          "base_url": base_url, "credentials": CONNECTWISE_CREDENTIALS,
                                          "settings": {"paid_dates": True}})
    demo.say(f"ConnectWise connected; first sync: {run['counts']}")


def connect_psa(demo: Demo, tenant: str, connection: dict) -> dict:
    """Connect a PSA (once), run its first sync now (then every 30 s by itself), learn its clients."""
    with api(demo.platform, "psa_ingest", tenant) as psa:
        existing = expect(psa.get("/v1/psa/connections"), "listing connections")["items"]
        found = next((c for c in existing if c["base_url"] == connection["base_url"]), None)
        if found is None:  # a restarted `payloop dev` keeps its databases: connect once
            found = expect(psa.post("/v1/psa/connections", json={**connection, "poll_interval_s": 30}),
                           f"connecting {connection['name']}")
        answer = psa.post(f"/v1/psa/connections/{found['id']}/sync", json={})
        if answer.status_code == 409:  # psa_ingest's poller took the new connection first: its run is the first
            run = wait_until(lambda: finished_run(psa, found["id"]), "the first sync", timeout_s=SYNC_WAIT_S)
        else:
            run = expect(answer, "the first sync")
        if run["status"] != "succeeded":
            raise DemoStepFailed(f"the first sync {run['status']}: {run.get('error')}")
        clients = expect(psa.get("/v1/psa/records", params={"kind": "client", "limit": 100}), "listing clients")
        # In the PSA's order (its ids), which the book's roles follow: our ids are hashes.
        demo.clients = sorted(clients["items"], key=lambda c: (len(c["external_id"]), c["external_id"]))
    return run


def finished_run(psa: httpx.Client, connection_id: str) -> dict | None:
    """The connection's latest sync run once it has finished, else None."""
    runs = expect(psa.get(f"/v1/psa/connections/{connection_id}/sync-runs"), "the sync runs")["items"]
    return runs[0] if runs and runs[0]["status"] != "running" else None


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


def seed_ach(demo: Demo) -> None:
    """Bank accounts entered by hand and verified by microdeposits, then auto-pay: the debits go
    `processing` and settle four banking days later on the sandbox's calendar (`--speed` shortens it)."""
    chosen = demo.clients[INSTALLMENT_CLIENT + 1:INSTALLMENT_CLIENT + 1 + ACH_CLIENTS]
    with api(demo.platform, "payments") as payments:
        invoices = {c["id"]: wait_until(lambda c=c: client_invoices(payments, c["id"]),
                                        f"payments to learn of {c['data']['name']}'s invoices") for c in chosen}
        mirror_into_quickbooks(demo, chosen, invoices)
        enrolled = []
        for client in chosen:
            if payments.get(f"/v1/clients/{client['id']}/payment-methods").json():
                continue  # seeded by an earlier run
            method = save_bank_account(demo, payments, client["id"])
            expect(payments.put(f"/v1/clients/{client['id']}/autopay",
                                json={"payment_method_id": method["id"], "rule": "on_due"}), "enrolling")
            enrolled.append(client["data"]["name"])
    if enrolled:
        demo.say(f"auto-pay by ACH for {', '.join(enrolled)} (processing, then settled four banking days later)")


def stripe_client(demo: Demo) -> httpx.Client:
    key = demo.platform.env.get("PAYLOOP_STRIPE_API_KEY", DEV_STRIPE_KEY)
    return httpx.Client(base_url=demo.platform.env["PAYLOOP_STRIPE_API_BASE"], timeout=10,
                        headers={"Authorization": f"Bearer {key}"})


def save_bank_account(demo: Demo, payments: httpx.Client, client_id: str) -> dict:
    setup = expect(payments.post(f"/v1/clients/{client_id}/setup-intents", json={"type": "ach"}),
                   "creating a SetupIntent")
    with stripe_client(demo) as stripe:
        expect(stripe.post(f"/v1/setup_intents/{setup['setup_intent_id']}/confirm", data={
            "payment_method_data[type]": "us_bank_account",
            "payment_method_data[us_bank_account][routing_number]": "110000000",
            "payment_method_data[us_bank_account][account_number]": ACH_ACCOUNT,
            "payment_method_data[us_bank_account][account_holder_type]": "company",
            "payment_method_data[billing_details][name]": "Accounts Payable",
            "mandate_data[customer_acceptance][type]": "offline"}), "confirming the bank account")
        expect(stripe.post(f"/v1/setup_intents/{setup['setup_intent_id']}/verify_microdeposits",
                           data={"amounts[]": ["32", "45"]}), "verifying the microdeposits")
    return expect(payments.post(f"/v1/clients/{client_id}/payment-methods",
                                json={"setup_intent_id": setup["setup_intent_id"]}), "saving the bank account")


def pay_out(demo: Demo, tenants: list[str]) -> None:
    """After PAYOUT_AFTER_S, the declined card's client retries with a new card, then Stripe pays out each
    demo MSP's settled charges less their fees; the payout event goes to payments as Stripe sends it
    (signed), and gl_posting books the deposit."""
    time.sleep(PAYOUT_AFTER_S)
    try:
        recover_declined(demo)
    except (DemoStepFailed, httpx.HTTPError) as exc:
        demo.say(f"WARNING: the declined card's client did not retry ({exc})")
    try:
        catch_up_quickbooks(demo)
    except (DemoStepFailed, httpx.HTTPError) as exc:
        demo.say(f"WARNING: QuickBooks did not catch up with the charged invoices ({exc})")
    for tenant in tenants:
        try:
            count, net = pay_out_tenant(demo, tenant)
            if count:
                demo.say(f"Stripe paid out {count} charges of {tenant} ({major(net)} USD): a deposit follows "
                         "in the books")
        except (DemoStepFailed, httpx.HTTPError) as exc:
            demo.say(f"WARNING: no payout for {tenant} ({exc})")


def recover_declined(demo: Demo) -> None:
    """The client whose card declined saves a new card and pays now (a client's retry, which uses none of
    the dunning budget): the failed charge is retried and settles before the payout."""
    with api(demo.platform, "payments") as payments:
        failed = [p for p in expect(payments.get("/v1/payments", params={"limit": 200}), "listing payments")["items"]
                  if p["status"] == "failed" and p["origin"] == "autopay"]
        for payment in failed[:1]:
            method = save_card(demo, payments, payment["client_id"], GOOD_CARD)
            retried = expect(payments.post(f"/v1/payments/{payment['id']}/retry",
                                           json={"payment_method_id": method["id"]},
                                           headers={"Idempotency-Key": f"demo-retry-{payment['id']}"}),
                             "retrying the declined payment")
            demo.say(f"the declined card's client saved a new card and retried: payment {retried['status']}")


def catch_up_quickbooks(demo: Demo) -> None:
    """The seeding copied each client's invoices into QuickBooks as soon as payments knew some of them;
    invoices that reached payments later were charged all the same. Copy every charged invoice the books
    lack (the MSP's own PSA-to-books sync would have) and have gl_posting retry what it could not post."""
    with api(demo.platform, "payments") as payments:
        charged: dict[str, set[str]] = {}
        for payment in expect(payments.get("/v1/payments", params={"limit": 200}), "listing payments")["items"]:
            if payment["status"] == "succeeded":
                charged.setdefault(payment["client_id"], set()).update(a["invoice_id"] for a in payment["allocations"])
        invoices = {client_id: [i for i in client_invoices(payments, client_id) or [] if i["invoice_id"] in ids]
                    for client_id, ids in charged.items()}
    names = {c["id"]: c for c in demo.clients}
    clients = [names[client_id] for client_id in invoices if client_id in names]
    mirror_into_quickbooks(demo, clients, invoices, charged=True)
    with api(demo.platform, "gl_posting") as gl:
        expect(gl.post("/v1/gl/retries", json={}), "retrying the postings")


def pay_out_tenant(demo: Demo, tenant: str) -> tuple[int, int]:
    with api(demo.platform, "payments", tenant) as payments, stripe_client(demo) as stripe:
        settled = [p for p in expect(payments.get("/v1/payments", params={"limit": 200}), "listing payments")["items"]
                   if p["status"] == "succeeded" and p["stripe_payment_intent_id"]]
        transactions = []
        for payment in settled:
            intent = expect(stripe.get(f"/v1/payment_intents/{payment['stripe_payment_intent_id']}"), "reading a charge")
            charge = intent.get("latest_charge") or (intent.get("charges") or {}).get("data", [{}])[0].get("id")
            if charge:
                transactions.append({"type": "charge", "source": charge, "amount": payment["amount_minor"],
                                     "fee": payment["fee_minor"] or stripe_card_fee(payment["amount_minor"])})
        if not transactions:
            return 0, 0
        payout = expect(stripe.post("/_sim/payouts", json={"currency": "usd", "arrival_date": int(time.time()),
                                                           "transactions": transactions}), "booking the payout")
    body = json.dumps(payout["event"]).encode()
    stamp = int(time.time())
    secret = demo.platform.env["PAYLOOP_STRIPE_WEBHOOK_SECRET"]
    signature = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    payments_url = f"http://127.0.0.1:{demo.platform.service_port(service('payments'))}"
    expect(httpx.post(f"{payments_url}/webhooks/stripe", content=body, timeout=30, headers={
        "Content-Type": "application/json", "Stripe-Signature": f"t={stamp},v1={signature}"}), "delivering payout.paid")
    return len(transactions), sum(t["amount"] - t["fee"] for t in transactions)


def major(amount_minor: int) -> str:
    """Minor units as the decimal string the simulators take ("1234.05"), exactly."""
    return f"{amount_minor // 100}.{amount_minor % 100:02d}"


def stripe_card_fee(amount_minor: int) -> int:
    """Stripe's standard US card price, 2.9% + 30 cents, when the charge carried no fee."""
    return amount_minor * 29 // 1000 + 30


def client_invoices(payments: httpx.Client, client_id: str) -> list[dict] | None:
    response = payments.get(f"/v1/clients/{client_id}/invoices")
    return response.json() if response.status_code == 200 and response.json() else None


def save_card(demo: Demo, payments: httpx.Client, client_id: str, card: str) -> dict:
    """What the browser does with Stripe.js: confirm the SetupIntent at Stripe, then register the method."""
    setup = expect(payments.post(f"/v1/clients/{client_id}/setup-intents", json={"type": "card"}),
                   "creating a SetupIntent")
    with stripe_client(demo) as stripe:
        expect(stripe.post(f"/v1/setup_intents/{setup['setup_intent_id']}/confirm", data={"payment_method": card}),
               "confirming the SetupIntent at the Stripe sandbox")
    return expect(payments.post(f"/v1/clients/{client_id}/payment-methods",
                                json={"setup_intent_id": setup["setup_intent_id"]}), "saving the card")


def mirror_into_quickbooks(demo: Demo, clients: list[dict], invoices: dict[str, list[dict]], *,
                           charged: bool = False) -> None:
    """Copy the clients' open invoices (or, with `charged`, the given invoices at their total) into the books."""
    qbo = simulator_url(demo.platform, "quickbooks")
    books = httpx.get(f"{qbo}/_sim/companies/{QUICKBOOKS_REALM}", timeout=10)
    if books.status_code != 200:
        return  # no QuickBooks: payments simply are not posted
    known = {i["DocNumber"] for i in books.json()["entities"].get("Invoice", [])}
    for client in clients:
        for invoice in invoices[client["id"]]:
            amount = invoice["total_minor"] if charged else invoice["open_minor"]
            if amount > 0 and invoice["number"] not in known:
                expect(httpx.post(f"{qbo}/_sim/companies/{QUICKBOOKS_REALM}/invoices", timeout=10, json={
                    "doc_number": invoice["number"], "customer": client["data"]["name"],
                    "amount": major(amount),
                    "txn_date": invoice["issued_on"]}), f"copying invoice {invoice['number']} into QuickBooks")


# --- the second MSP: HaloPSA and Xero ----------------------------------------------------------------

def seed_xero_demo(platform: "DevPlatform") -> None:
    """`demo-msp-xero`: its profile, Xero through the consent step, HaloPSA and a first sync, auto-pay.
    Each step that fails is reported and the rest of that tenant skipped; the first demo is unaffected."""
    demo = Demo(platform)
    try:
        with api(platform, "tenants", XERO_DEMO_TENANT) as tenants:
            expect(tenants.put(f"/v1/tenants/{XERO_DEMO_TENANT}", json={
                "name": "Demo MSP (Xero)", "timezone": "America/New_York", "currency": "USD",
                "branding": {"primary_color": "#1d4ed8", "sender_name": "Demo MSP (Xero) Billing"}}),
                "the second tenant's profile")
        for step in (seed_xero, seed_halopsa, seed_xero_autopay):
            step(demo)
    except (DemoStepFailed, httpx.HTTPError) as exc:
        demo.say(f"WARNING: {XERO_DEMO_TENANT} not fully set up ({exc}); the platform runs on without it")


def seed_xero(demo: Demo) -> None:
    """The consent step as the MSP walks it: our consent URL, Xero's screen (the simulator's says yes at
    once and redirects), our callback; then the account mapping."""
    xero = simulator_url(demo.platform, "xero")
    with api(demo.platform, "gl_posting", XERO_DEMO_TENANT) as gl:
        started = expect(gl.post("/v1/gl/connection/consent", json={"system": "xero", "company_id": XERO_ORGANISATION}),
                         "starting the Xero consent")
        screen = httpx.get(started["authorize_url"], timeout=10)
        if screen.status_code != 302:
            raise DemoStepFailed(f"the Xero simulator's consent answered {screen.status_code}")
        back = urlparse(screen.headers["location"])
        # The redirect names gl_posting's configured callback; this run's gl_posting may sit on another port.
        expect(gl.get(f"{back.path}?{back.query}"), "the consent callback")

        def connected() -> dict | None:
            view = expect(gl.get("/v1/gl/connection"), "reading the connection")
            if view["status"] == "failed":
                raise DemoStepFailed(f"gl_posting could not connect Xero: {view['last_error']}")
            return view if view["status"] == "connected" else None
        wait_until(connected, "gl_posting to exchange the Xero authorization code")
        state = expect(httpx.get(f"{xero}/_sim/organisations/{XERO_ORGANISATION}", timeout=10), "reading the books")
        accounts = {a["Name"]: a["AccountID"] for a in state["Accounts"]}
        expect(gl.put("/v1/gl/account-mapping", json={
            "clearing_account_id": accounts["Stripe Clearing"], "bank_account_id": accounts["Business Bank Account"],
            "fee_account_id": accounts["Merchant Processing Fees"],
            "refunds_account_id": accounts["Refunds and Chargebacks"],
            "convenience_fee_account_id": accounts["Card Convenience Fees"]}), "mapping the Xero accounts")
    demo.say(f"Xero organisation {XERO_ORGANISATION} connected (consent step) and mapped for {XERO_DEMO_TENANT}")


def seed_halopsa(demo: Demo) -> None:
    run = connect_psa(demo, XERO_DEMO_TENANT, {"source": "halopsa", "name": "HaloPSA (simulator)",
                                               "base_url": simulator_url(demo.platform, "halopsa"),
                                               "credentials": HALO_CREDENTIALS})
    demo.say(f"HaloPSA connected for {XERO_DEMO_TENANT}; first sync: {run['counts']}")


def seed_xero_autopay(demo: Demo) -> None:
    """Good cards on auto-pay for a few HaloPSA clients; their open invoices copied into Xero first."""
    chosen = demo.clients[:XERO_AUTOPAY_CLIENTS]
    with api(demo.platform, "payments", XERO_DEMO_TENANT) as payments:
        invoices = {c["id"]: wait_until(lambda c=c: client_invoices(payments, c["id"]),
                                        f"payments to learn of {c['data']['name']}'s invoices") for c in chosen}
        mirror_into_xero(demo, chosen, invoices)
        enrolled = 0
        for client in chosen:
            if payments.get(f"/v1/clients/{client['id']}/payment-methods").json():
                continue  # seeded by an earlier run
            method = save_card(demo, payments, client["id"], GOOD_CARD)
            expect(payments.put(f"/v1/clients/{client['id']}/autopay",
                                json={"payment_method_id": method["id"], "rule": "on_due"}), "enrolling")
            enrolled += 1
    if enrolled:
        demo.say(f"auto-pay by card for {enrolled} HaloPSA clients of {XERO_DEMO_TENANT}")


def mirror_into_xero(demo: Demo, clients: list[dict], invoices: dict[str, list[dict]]) -> None:
    xero = simulator_url(demo.platform, "xero")
    books = expect(httpx.get(f"{xero}/_sim/organisations/{XERO_ORGANISATION}", timeout=10), "reading the Xero books")
    known = {i["InvoiceNumber"] for i in books["Invoices"]}
    for client in clients:
        for invoice in invoices[client["id"]]:
            if invoice["open_minor"] > 0 and invoice["number"] not in known:
                expect(httpx.post(f"{xero}/_sim/organisations/{XERO_ORGANISATION}/invoices", timeout=10, json={
                    "invoice_number": invoice["number"], "contact": client["data"]["name"],
                    "amount": major(invoice["open_minor"])}),
                    f"copying invoice {invoice['number']} into Xero")


def what_to_open(platform: "DevPlatform") -> str:
    dashboard = f"http://127.0.0.1:{platform.service_port(service('reporting'))}"
    token = mint_token(DEMO_TENANT, ["ar:read"])
    return "\n".join([
        "what to open (docs/demo.md says what to expect in the first minute):",
        f"  dashboard       {dashboard}/#token={token}",
        f"  drift           {dashboard}/v1/drift (that token as Bearer): the client paying later and later",
        f"  reminder email  {simulator_url(platform, 'smtp-sink')}/",
        f"  ConnectWise     {simulator_url(platform, 'connectwise')}/v4_6_release/apis/3.0/finance/invoices "
        "(Basic payloopdemo+demo-public-key:demo-private-key, clientId header)",
        f"  QuickBooks      {simulator_url(platform, 'quickbooks')}/_sim/companies/{QUICKBOOKS_REALM}",
        f"  second MSP      {dashboard}/#token={mint_token(XERO_DEMO_TENANT, ['ar:read'])} ({XERO_DEMO_TENANT}: "
        "HaloPSA and Xero)",
        f"  Xero            {simulator_url(platform, 'xero')}/_sim/organisations/{XERO_ORGANISATION}",
    ])
