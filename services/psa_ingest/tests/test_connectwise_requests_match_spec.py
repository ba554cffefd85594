"""Every request our ConnectWise connector sends, over a full sync, a write-back and a callback registration, uses
paths, condition fields and body fields that ConnectWise's API defines (specs/connectwise/connectwise-fields.json,
extracted from the vendor's OpenAPI, version 2025.1)."""
import json
import re
from pathlib import Path
from urllib.parse import parse_qs

import pytest_asyncio

from payloop.embedded import free_port
from payloop.simulators.connectwise import API_ROOT, ConnectWiseSimulator
from payloop.testing.plugin import running_service
from payloop_psa_ingest.writeback import process_due_writebacks

SPEC = json.loads((Path(__file__).resolve().parents[3] / "specs" / "connectwise" / "connectwise-fields.json").read_text())
# The model each resource path lists or takes.
MODELS = {"/company/companies": "Company", "/finance/agreements": "Agreement",
          "/finance/agreements/{parentId}/additions": "Addition", "/finance/invoices": "Invoice",
          "/finance/invoices/{parentId}/payments": "InvoicePayment", "/service/tickets": "Ticket",
          "/system/callbacks": "CallbackEntry"}
# Resources the extract does not cover (product and time lines, the signing key, the version probe): we use them
# as ConnectWise documents them, but can only check that no other uncovered path creeps in.
OUTSIDE_THE_EXTRACT = {"/procurement/products", "/time/entries", "/system/info"}
CONDITION_FIELD = re.compile(r"([A-Za-z_][\w/]*)\s*(?:>=|<=|!=|=|<|>|\s+in\s+|\s+like\s+)", re.IGNORECASE)


class RecordBodies:
    """ASGI middleware in front of the simulator: what arrived, body included, before the simulator saw it."""

    def __init__(self, app, seen: list):
        self.app, self.seen = app, seen

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        chunks, more = [], True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        self.seen.append({"method": scope["method"], "path": scope["path"],
                          "query": parse_qs(scope["query_string"].decode()), "body": body})
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await self.app(scope, replay, send)


@pytest_asyncio.fixture
async def recorded_cw():
    sim = ConnectWiseSimulator()
    sim.seen = []
    sim.app.add_middleware(RecordBodies, seen=sim.seen)
    await sim.start(free_port())
    try:
        yield sim
    finally:
        await sim.stop()


def fields_of(model: str) -> dict[str, str]:
    return {f["json"]: f["go_type"] for f in SPEC["models"][model]}


def referenced(go_type: str) -> str | None:
    name = go_type.lstrip("*").removeprefix("Nullable")
    return name if name in SPEC["models"] else None


def spec_path(path: str) -> str | None:
    for template in SPEC["paths"]:
        if re.fullmatch(re.sub(r"\{[^}]+\}", r"[^/]+", template), path):
            return template
    return None


def check_field(model: str, dotted: str) -> None:
    """`a/b/c` names fields of `model` and of the models its fields refer to (as far as the extract has them).
    `lastUpdated` is ConnectWise's condition name for `_info/lastUpdated`, on every model that has `_info`."""
    first, *rest = dotted.split("/")
    fields = fields_of(model)
    if first == "lastUpdated" and not rest:
        assert "_info" in fields, f"{model} has no _info to filter lastUpdated on"
        return
    assert first in fields, f"{first!r} is not a field of ConnectWise's {model}"
    nested = referenced(fields[first])
    if rest and nested:
        check_field(nested, "/".join(rest))


def check_body(model: str, body: dict) -> None:
    fields = fields_of(model)
    for key, value in body.items():
        assert key in fields, f"{key!r} is not a field of ConnectWise's {model}"
        nested = referenced(fields[key])
        if isinstance(value, dict) and nested:
            check_body(nested, value)


async def test_every_request_of_a_sync_a_write_back_and_a_registration_is_in_the_spec(infra, token, recorded_cw, psa):
    headers = token(psa.TENANT, "psa:write", "ar:read")
    cw = recorded_cw
    async with running_service(infra, psa.SERVICE_WITHOUT_POLLER, consumers=False, relay=False) as client:
        connection_id = await psa.connect(client, headers, cw)
        run = (await client.post(f"/v1/psa/connections/{connection_id}/sync", json={"full": True}, headers=headers)).json()
        assert run["status"] == "succeeded", run
        again = (await client.post(f"/v1/psa/connections/{connection_id}/sync", json={}, headers=headers)).json()
        assert again["status"] == "succeeded" and not again["full"], "an incremental read: lastUpdated conditions"
        registered = await client.post(f"/v1/psa/connections/{connection_id}/webhooks",
                                       json={"public_url": "https://payloop.example"}, headers=headers)
        assert registered.status_code == 200, registered.text
        invoice = next(e["data"] for e in await psa.outbox_events(client, "invoice.created")
                       if e["tenant_id"] == psa.TENANT and e["data"]["status"] == "open"
                       and e["data"]["psa"]["source"] == "connectwise")
        await psa.settle(client, psa.TENANT, invoice["invoice_id"], invoice["balance_minor"], "pay_spec")
        await process_due_writebacks(client.app.state.session_factory)
        rows = (await client.get("/v1/psa/payment-writebacks", headers=headers)).json()["items"]
        assert any(r["status"] == "recorded" and r["payment_id"] == "pay_spec" for r in rows), rows

    outside, checked_conditions, checked_bodies = set(), 0, 0
    for request in cw.seen:
        path = request["path"].removeprefix(API_ROOT)
        if path in OUTSIDE_THE_EXTRACT or path.startswith("/system/callbackEntry/key/"):
            outside.add(re.sub(r"/key/.*", "/key/{id}", path))
            continue
        template = spec_path(path)
        assert template, f"{path} is not a ConnectWise path"
        assert request["method"] in SPEC["paths"][template], f"{request['method']} {template}"
        model = MODELS[template]
        for field in ("fields", "orderBy"):
            for value in request["query"].get(field, []):
                for name in re.findall(r"[A-Za-z_][\w/]*", value.replace(" asc", "").replace(" desc", "")):
                    check_field(model, name)
        for conditions in request["query"].get("conditions", []):
            names = CONDITION_FIELD.findall(conditions)
            assert names, conditions
            for name in names:
                check_field(model, name)
            checked_conditions += 1
        if request["body"]:
            check_body(model, json.loads(request["body"]))
            checked_bodies += 1
    assert outside <= OUTSIDE_THE_EXTRACT | {"/system/callbackEntry/key/{id}"}
    assert checked_conditions >= 5, "both syncs filter: tickets by type, the second every kind by lastUpdated"
    posted = {spec_path(r["path"].removeprefix(API_ROOT)) for r in cw.seen if r["method"] == "POST"}
    assert posted == {"/finance/invoices/{parentId}/payments", "/system/callbacks"}
    assert checked_bodies == sum(1 for r in cw.seen if r["method"] == "POST")
