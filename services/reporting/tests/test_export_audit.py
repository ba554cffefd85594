"""CSV exports take a tenant's client list out of Payloop: each one is audited with who exported what
and with which filters; reading the same report as JSON is not an export and records nothing."""
import json
import uuid

import jwt
from sqlalchemy import text

from payloop.testing.plugin import running_service
from payloop_reporting.service import SERVICE


async def test_csv_exports_are_audited_and_json_reads_are_not(infra, token):
    tenant = f"export-{uuid.uuid4().hex[:8]}"
    headers = token(tenant, "ar:read")
    async with running_service(infra, SERVICE, consumers=False, relay=False) as client:
        for path, params in [("/v1/aging", {}), ("/v1/aging/invoices", {}),
                             ("/v1/aging", {"format": "csv", "bucket": "d90_plus", "currency": "USD"}),
                             ("/v1/aging/invoices", {"format": "csv", "client_id": "acme"})]:
            answer = await client.get(path, params=params, headers=headers)
            assert answer.status_code == 200, answer.text
        async with client.app.state.session_factory() as session:
            rows = (await session.execute(text("SELECT payload FROM outbox WHERE topic = 'audit.recorded'"
                                               " ORDER BY seq"))).scalars().all()
    entries = [e for e in (json.loads(bytes(r)) for r in rows) if e["tenant_id"] == tenant]
    assert [(e["data"]["action"], e["data"]["target"]["id"]) for e in entries] == [
        ("report.exported", "aging"), ("report.exported", "open_invoices")]
    assert entries[0]["data"]["details"] | {"as_of": None} == {
        "format": "csv", "bucket": "d90_plus", "currency": "USD", "rows": 0, "as_of": None}
    assert entries[1]["data"]["details"] == {"format": "csv", "client_id": "acme"}
    sub = jwt.decode(headers["Authorization"].removeprefix("Bearer "), options={"verify_signature": False})["sub"]
    assert {e["data"]["actor"]["subject"] for e in entries} == {sub}
    assert {e["producer"] for e in entries} == {"reporting"}
    assert headers["Authorization"].removeprefix("Bearer ") not in json.dumps(entries)
