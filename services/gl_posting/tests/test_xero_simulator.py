"""The Xero simulator keeps Xero's rules: token rotation, tenant header, idempotency, the minute limit,
and request bodies held to Xero's OpenAPI schemas."""
import httpx

from payloop.simulators import xero

API = "/api.xro/2.0"


async def tokens_for(xero_sim, tenant: str) -> dict:
    code = await xero_sim.consent(tenant)
    answer = await xero_sim.http.post("/connect/token", auth=("payloop-dev", "payloop-dev-secret"),
                                      data={"grant_type": "authorization_code", "code": code,
                                            "redirect_uri": "http://127.0.0.1/callback"})
    assert answer.status_code == 200, answer.text
    return answer.json()


def api_headers(tokens: dict, tenant: str) -> dict:
    return {"Authorization": f"Bearer {tokens['access_token']}", "xero-tenant-id": tenant}


async def test_refresh_tokens_rotate_and_connections_name_the_organisation(xero_sim):
    tenant = await xero_sim.organisation()
    first = await tokens_for(xero_sim, tenant)
    assert first["expires_in"] == 1800 and first["token_type"] == "Bearer"

    async def refresh(token: str) -> httpx.Response:
        return await xero_sim.http.post("/connect/token", auth=("payloop-dev", "payloop-dev-secret"),
                                        data={"grant_type": "refresh_token", "refresh_token": token})
    second = await refresh(first["refresh_token"])
    assert second.status_code == 200 and second.json()["refresh_token"] != first["refresh_token"]
    spent = await refresh(first["refresh_token"])
    assert spent.status_code == 400 and spent.json() == {"error": "invalid_grant"}
    connections = await xero_sim.http.get("/connections", headers={"Authorization": f"Bearer {second.json()['access_token']}"})
    assert [c["tenantId"] for c in connections.json()] == [tenant]


async def test_tenant_header_token_and_minute_limit(xero_sim):
    tenant, other = await xero_sim.organisation(), await xero_sim.organisation()
    tokens = await tokens_for(xero_sim, tenant)
    no_token = await xero_sim.http.get(f"{API}/Accounts", headers={"xero-tenant-id": tenant})
    assert no_token.status_code == 401
    not_granted = await xero_sim.http.get(f"{API}/Accounts", headers=api_headers(tokens, other))
    assert not_granted.status_code == 403
    for _ in range(xero.RATE_LIMIT_PER_MINUTE):
        assert (await xero_sim.http.get(f"{API}/Accounts", headers=api_headers(tokens, tenant))).status_code == 200
    limited = await xero_sim.http.get(f"{API}/Accounts", headers=api_headers(tokens, tenant))
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) >= 1 and limited.headers["X-Rate-Limit-Problem"] == "minute"
    # The limit is per organisation.
    other_tokens = await tokens_for(xero_sim, other)
    assert (await xero_sim.http.get(f"{API}/Accounts", headers=api_headers(other_tokens, other))).status_code == 200


async def test_same_idempotency_key_pays_once_and_bodies_follow_the_schema(xero_sim):
    assert xero_sim.sim.validator is not None, "Xero's OpenAPI document was not found"
    tenant = await xero_sim.organisation()
    invoice = await xero_sim.invoice(tenant, "INV-7", "Echo Labs", "100.00")
    headers = api_headers(await tokens_for(xero_sim, tenant), tenant)
    clearing = next(a for a in (await xero_sim.state(tenant))["Accounts"] if a["Name"] == "Stripe Clearing")
    payment = {"Invoice": {"InvoiceID": invoice["InvoiceID"]}, "Account": {"AccountID": clearing["AccountID"]},
               "Date": "2026-11-02", "Amount": 40.25, "Reference": "PL-1"}
    first = await xero_sim.http.put(f"{API}/Payments", json={"Payments": [payment]},
                                    headers={**headers, "Idempotency-Key": "k-1"})
    again = await xero_sim.http.put(f"{API}/Payments", json={"Payments": [payment]},
                                    headers={**headers, "Idempotency-Key": "k-1"})
    assert first.status_code == 200, first.text
    assert again.json()["Payments"][0]["PaymentID"] == first.json()["Payments"][0]["PaymentID"]
    state = await xero_sim.state(tenant)
    assert len(state["Payments"]) == 1 and str(state["Invoices"][0]["AmountDue"]) == "59.75"
    assert str(state["balances"]["Stripe Clearing"]) == "40.25"

    found = await xero_sim.http.get(f"{API}/Payments", headers=headers, params={"where": 'Reference=="PL-1"'})
    assert [p["PaymentID"] for p in found.json()["Payments"]] == [first.json()["Payments"][0]["PaymentID"]]

    unknown = await xero_sim.http.put(f"{API}/Payments", json={"Payments": [{**payment, "Bogus": 1}]}, headers=headers)
    assert unknown.status_code == 400 and "Bogus" in unknown.text
    wrong_type = await xero_sim.http.put(f"{API}/Payments", json={"Payments": [{**payment, "Amount": "lots"}]},
                                         headers=headers)
    assert wrong_type.status_code == 400 and wrong_type.json()["Type"] == "ValidationException"
    too_much = await xero_sim.http.put(f"{API}/Payments", json={"Payments": [{**payment, "Amount": 60}]},
                                       headers=headers)
    assert "exceeds the amount outstanding" in too_much.text
    assert len((await xero_sim.state(tenant))["Payments"]) == 1


async def test_bank_summary_follows_the_report_schema_and_needs_the_reports_scope(xero_sim):
    tenant = await xero_sim.organisation()
    await xero_sim.manual_journal(tenant, [("090", "25.50"), ("200", "-25.50")])
    tokens = await tokens_for(xero_sim, tenant)
    answer = await xero_sim.http.get(f"{API}/Reports/BankSummary", headers=api_headers(tokens, tenant),
                                     params={"fromDate": "2000-01-01", "toDate": "2999-12-31"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    validator = xero.spec_validator(xero.find_spec())
    assert validator.errors("ReportWithRows", {"Reports": body["Reports"]}) == []
    section = next(r for r in body["Reports"][0]["Rows"] if r["RowType"] == "Section")
    closing = {row["Cells"][0]["Value"]: row["Cells"][4]["Value"] for row in section["Rows"] if row["RowType"] == "Row"}
    assert closing == {"Business Bank Account": "25.50", "Stripe Clearing": "0.00"}
    # Before the journal's day the account was empty: the report is as of its dates.
    before = await xero_sim.http.get(f"{API}/Reports/BankSummary", headers=api_headers(tokens, tenant),
                                     params={"fromDate": "2000-01-01", "toDate": "2000-01-31"})
    assert {c["Value"] for c in before.json()["Reports"][0]["Rows"][-1]["Rows"][0]["Cells"][1:]} == {"0.00"}

    code = await xero_sim.consent(tenant, scope="offline_access accounting.transactions accounting.settings")
    narrow = (await xero_sim.http.post("/connect/token", auth=("payloop-dev", "payloop-dev-secret"), data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": "http://127.0.0.1/callback"})).json()
    refused = await xero_sim.http.get(f"{API}/Reports/BankSummary", headers=api_headers(narrow, tenant))
    assert refused.status_code == 403
