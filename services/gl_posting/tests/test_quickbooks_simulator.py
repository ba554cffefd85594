"""The QuickBooks simulator keeps Intuit's rules, and what we send it uses the XSD's field names."""
import xml.etree.ElementTree as ET
from pathlib import Path

import httpx
import pytest

SPECS = Path(__file__).resolve().parents[3] / "specs" / "quickbooks"
XS = "{http://www.w3.org/2001/XMLSchema}"


def xsd_fields(type_name: str) -> set[str]:
    """Element names of a complexType in Intuit's XSD, including those of the types it extends."""
    types = {}
    for path in SPECS.glob("*.xsd"):
        for node in ET.parse(path).getroot().iter(f"{XS}complexType"):
            if node.get("name"):
                types[node.get("name")] = node
    names: set[str] = set()
    pending = [type_name]
    while pending:
        node = types[pending.pop()]
        names |= {e.get("name") for e in node.iter(f"{XS}element") if e.get("name")}
        pending += [x.get("base").split(":")[-1] for x in node.iter(f"{XS}extension")
                    if x.get("base", "").split(":")[-1] in types]
    return names


async def tokens_for(qbo, realm: str) -> dict:
    code = await qbo.consent(realm)
    answer = await qbo.http.post("/oauth2/v1/tokens/bearer", auth=("payloop-dev", "payloop-dev-secret"),
                                 data={"grant_type": "authorization_code", "code": code,
                                       "redirect_uri": "http://127.0.0.1/callback"})
    assert answer.status_code == 200, answer.text
    return answer.json()


async def test_refresh_tokens_rotate_and_a_spent_one_is_refused(qbo):
    realm = (await qbo.company())["realm_id"]
    first = await tokens_for(qbo, realm)

    async def refresh(token: str) -> httpx.Response:
        return await qbo.http.post("/oauth2/v1/tokens/bearer", auth=("payloop-dev", "payloop-dev-secret"),
                                   data={"grant_type": "refresh_token", "refresh_token": token})
    second = await refresh(first["refresh_token"])
    assert second.status_code == 200 and second.json()["refresh_token"] != first["refresh_token"]
    spent = await refresh(first["refresh_token"])
    assert spent.status_code == 400 and spent.json() == {"error": "invalid_grant"}
    wrong_client = await qbo.http.post("/oauth2/v1/tokens/bearer", auth=("payloop-dev", "nope"),
                                       data={"grant_type": "refresh_token", "refresh_token": second.json()["refresh_token"]})
    assert wrong_client.status_code == 401


async def test_same_requestid_gives_the_same_payment_once(qbo):
    realm = (await qbo.company())["realm_id"]
    invoice = await qbo.invoice(realm, "3001", "Echo Labs", "100.00")
    headers = {"Authorization": f"Bearer {(await tokens_for(qbo, realm))['access_token']}"}
    body = {"CustomerRef": {"value": invoice["CustomerRef"]["value"]}, "TotalAmt": 40.25,
            "DepositToAccountRef": {"value": "1"},
            "Line": [{"Amount": 40.25, "LinkedTxn": [{"TxnId": invoice["Id"], "TxnType": "Invoice"}]}]}
    url = f"/v3/company/{realm}/payment"
    first = await qbo.http.post(url, params={"requestid": "r-1", "minorversion": 75}, json=body, headers=headers)
    again = await qbo.http.post(url, params={"requestid": "r-1", "minorversion": 75}, json=body, headers=headers)
    assert first.status_code == 200 and again.json()["Payment"]["Id"] == first.json()["Payment"]["Id"]
    state = await qbo.state(realm)
    assert len(state["entities"]["Payment"]) == 1
    assert str(state["entities"]["Invoice"][0]["Balance"]) == "59.75"
    # Paging: one row per page.
    page = await qbo.http.get(f"/v3/company/{realm}/query", headers=headers,
                              params={"query": "select * from Account STARTPOSITION 2 MAXRESULTS 1"})
    assert page.json()["QueryResponse"]["startPosition"] == 2 and len(page.json()["QueryResponse"]["Account"]) == 1
    unknown = await qbo.http.post(url, params={"requestid": "r-2"}, json={**body, "Bogus": 1}, headers=headers)
    assert unknown.status_code == 400 and unknown.json()["Fault"]["Error"][0]["element"] == "Bogus"
    no_token = await qbo.http.get(f"/v3/company/{realm}/query", params={"query": "select * from Account"})
    assert no_token.status_code == 401 and no_token.json()["Fault"]["type"] == "AUTHENTICATION"


def test_every_field_the_simulator_accepts_is_in_intuits_xsd():
    from payloop.simulators.quickbooks import ACCEPTED_FIELDS
    for entity, fields in ACCEPTED_FIELDS.items():
        declared = xsd_fields(entity) | {"Id", "SyncToken", "MetaData", "domain", "sparse"}
        assert fields <= declared, f"{entity}: {sorted(fields - declared)} not in the XSD"
    line = xsd_fields("Line")
    for nested in ("LinkedTxn", "DepositLineDetail", "SalesItemLineDetail", "Amount", "DetailType", "Description"):
        assert nested in line, nested
    assert {"AccountRef"} <= xsd_fields("DepositLineDetail") and {"TxnId", "TxnType"} <= xsd_fields("LinkedTxn")


async def test_a_journal_entry_typed_by_hand_moves_balances_and_must_balance(qbo):
    realm = (await qbo.company())["realm_id"]
    accounts = {a["Name"]: a["Id"] for a in (await qbo.state(realm))["entities"]["Account"]}
    await qbo.journal_entry(realm, [("Debit", accounts["Checking"], "12.34"),
                                    ("Credit", accounts["Undeposited Funds"], "12.34")])
    headers = {"Authorization": f"Bearer {(await tokens_for(qbo, realm))['access_token']}"}
    query = f"select * from Account where Id in ('{accounts['Checking']}', '{accounts['Undeposited Funds']}')"
    found = (await qbo.http.get(f"/v3/company/{realm}/query", headers=headers, params={"query": query})).json()
    assert {a["Name"]: str(a["CurrentBalance"]) for a in found["QueryResponse"]["Account"]} == \
        {"Checking": "12.34", "Undeposited Funds": "-12.34"}
    unbalanced = await qbo.http.post(f"/_sim/companies/{realm}/journal-entries", json={"Line": [
        {"Amount": 1, "DetailType": "JournalEntryLineDetail",
         "JournalEntryLineDetail": {"PostingType": "Debit", "AccountRef": {"value": accounts["Checking"]}}}]})
    assert unbalanced.status_code == 400 and "not in balance" in unbalanced.json()["Fault"]["Error"][0]["Detail"]
    assert "JournalEntryLineDetail" in xsd_fields("Line") and {"PostingType", "AccountRef"} <= xsd_fields("JournalEntryLineDetail")
