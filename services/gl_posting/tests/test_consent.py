"""The OAuth consent walked end to end: our consent URL, the simulator's consent screen and redirect, our
callback, the code exchanged by the posting loop; and the state's protections (forged, expired, reused)."""
from urllib.parse import parse_qs, urlparse

from gl_activity import tenant, wait_for

from payloop.testing.plugin import running_service
from payloop_gl_posting.service import SERVICE


async def start(client, headers, system: str) -> tuple[str, dict]:
    answer = await client.post("/v1/gl/connection/consent", headers=headers, json={"system": system})
    assert answer.status_code == 200, answer.text
    url = answer.json()["authorize_url"]
    return url, {k: v[0] for k, v in parse_qs(urlparse(url).query).items()}


async def consent_screen(sim_http, authorize_url: str) -> str:
    """The MSP's browser at the vendor: the simulator answers "Connect" at once and redirects back to us."""
    answer = await sim_http.get(authorize_url)
    assert answer.status_code == 302, answer.text
    back = urlparse(answer.headers["location"])
    assert back.path == "/gl/oauth/callback"
    return f"{back.path}?{back.query}"


async def connected(client, headers):
    view = (await client.get("/v1/gl/connection", headers=headers)).json()
    return view if view["status"] in ("connected", "failed") else None


async def test_quickbooks_consent_connects_the_tenant_that_started_it_once(infra, qbo, token):
    t, other = tenant(), tenant()
    headers = token(t, "admin")
    realm = (await qbo.company())["realm_id"]
    async with running_service(infra, SERVICE, consumers=False) as client:
        url, query = await start(client, headers, "quickbooks")
        assert url.startswith(f"{qbo.url}/connect/oauth2?")
        assert query["client_id"] == "payloop-dev" and query["response_type"] == "code"
        assert query["scope"] == "com.intuit.quickbooks.accounting"
        assert query["redirect_uri"].endswith("/gl/oauth/callback") and query["state"]

        callback = await consent_screen(qbo.http, url)
        answer = await client.get(callback)  # the browser, without our token
        assert answer.status_code == 202, answer.text
        view = await wait_for(lambda: connected(client, headers))
        assert (view["status"], view["system"], view["company_id"]) == ("connected", "quickbooks", realm)
        assert (await client.get("/v1/gl/connection", headers=token(other, "admin"))).json()["status"] == "not_connected"

        # The same callback again (a reload, a replay): refused, the connection untouched.
        again = await client.get(callback)
        assert again.status_code == 409
        assert (await client.get("/v1/gl/connection", headers=headers)).json()["status"] == "connected"

        # A state we did not issue, or altered: 401, nothing changes.
        forged = callback.replace("state=", "state=x")
        assert (await client.get(forged)).status_code == 401
        # The MSP said no on the vendor's screen.
        _, fresh = await start(client, headers, "quickbooks")
        refused = await client.get("/gl/oauth/callback",
                                   params={"state": fresh["state"], "error": "access_denied"})
        assert refused.status_code == 400 and "access_denied" in refused.json()["detail"]
        assert (await client.get("/v1/gl/connection", headers=headers)).json()["status"] == "connected"


async def test_an_expired_state_is_refused(infra, qbo, token, monkeypatch):
    headers = token(tenant(), "admin")
    await qbo.company()
    monkeypatch.setenv("PAYLOOP_GL_CONSENT_TTL_S", "0")
    async with running_service(infra, SERVICE, consumers=False) as client:
        url, _ = await start(client, headers, "quickbooks")
        answer = await client.get(await consent_screen(qbo.http, url))
        assert answer.status_code == 401 and "expired" in answer.json()["detail"]
        assert (await client.get("/v1/gl/connection", headers=headers)).json()["status"] == "not_connected"


async def test_xero_consent_learns_the_organisation_and_may_read_reports(infra, xero_sim, token):
    headers = token(tenant(), "admin")
    organisation = await xero_sim.organisation()
    async with running_service(infra, SERVICE, consumers=False) as client:
        url, query = await start(client, headers, "xero")
        assert url.startswith(f"{xero_sim.url}/identity/connect/authorize?")
        assert query["scope"].split() == ["offline_access", "accounting.transactions", "accounting.settings",
                                          "accounting.reports.read"]
        answer = await client.get(await consent_screen(xero_sim.http, url))
        assert answer.status_code == 202, answer.text
        view = await wait_for(lambda: connected(client, headers))
        assert (view["status"], view["company_id"]) == ("connected", organisation)

        accounts = {a["Name"]: a["AccountID"] for a in (await xero_sim.state(organisation))["Accounts"]}
        mapped = await client.put("/v1/gl/account-mapping", headers=headers, json={
            "clearing_account_id": accounts["Stripe Clearing"], "bank_account_id": accounts["Business Bank Account"],
            "fee_account_id": accounts["Merchant Processing Fees"],
            "refunds_account_id": accounts["Refunds and Chargebacks"]})
        assert mapped.status_code == 200, mapped.text
        report = (await client.get("/v1/gl/reconciliation", headers=headers)).json()
        assert report["ledger"]["system"] == "xero" and report["mismatches"] == []
