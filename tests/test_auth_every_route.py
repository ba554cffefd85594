"""Every /v1 route of every service, enumerated from its OpenAPI, keeps strangers out (issue 2).

New routes are covered automatically: nothing here names a route.
"""
import json
import re
import uuid
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from payloop.events import new_event
from payloop.settings import platform_settings
from payloop.tenant_replica import apply_tenant_updated
from payloop.embedded import free_port
from payloop.events.catalogue import CATALOGUE
from payloop.secrets import secret_box
from payloop.simulators.connectwise import CLIENT_ID as CW_CLIENT_ID, COMPANY_ID as CW_COMPANY_ID
from payloop.simulators.connectwise import PRIVATE_KEY as CW_PRIVATE_KEY, PUBLIC_KEY as CW_PUBLIC_KEY
from payloop.simulators.connectwise import ConnectWiseSimulator
from payloop.testing.plugin import running_service
from payloop_collections.service import SERVICE as COLLECTIONS
from payloop_gl_posting.service import SERVICE as GL_POSTING
from payloop_payments.service import SERVICE as PAYMENTS
from payloop_psa_ingest.models import Connection as PsaConnection
from payloop_psa_ingest.service import SERVICE as PSA_INGEST
from payloop_reporting.service import SERVICE as REPORTING
from payloop_tenants.service import SERVICE as TENANTS
from payloop_tenants.webhooks.fanout import fan_out

SERVICES = [TENANTS, PSA_INGEST, PAYMENTS, COLLECTIONS, GL_POSTING, REPORTING]
OWNER, STRANGER = "tenant-owner-a", "tenant-stranger-b"
METHODS = ("get", "post", "put", "patch", "delete")


def sign(claims: dict, secret: str | None = None, **overrides) -> str:
    s = platform_settings()
    now = datetime.now(UTC)
    body = {"sub": "t", "iss": s.jwt_issuer, "aud": s.jwt_audience, "iat": now,
            "exp": now + timedelta(minutes=5), **claims, **overrides}
    return jwt.encode(body, secret or s.jwt_secret, algorithm="HS256")


def example(schema: dict, spec: dict):
    """A minimal valid instance of an OpenAPI schema (required fields only)."""
    if "$ref" in schema:
        return example(spec["components"]["schemas"][schema["$ref"].split("/")[-1]], spec)
    if "default" in schema:
        return schema["default"]
    if schema.get("examples"):
        return schema["examples"][0]
    if schema.get("format") in FORMATS:
        return FORMATS[schema["format"]]
    if "anyOf" in schema:
        return example(schema["anyOf"][0], spec)
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        return {k: example(v, spec) for k, v in schema.get("properties", {}).items()
                if k in schema.get("required", [])}
    if kind == "array":
        return []
    if kind == "integer":
        return max(schema.get("minimum", 1), 1)
    if kind == "number":
        return 1
    if kind == "boolean":
        return False
    if "enum" in schema:
        return schema["enum"][0]
    return "x" if not schema.get("pattern") else _from_pattern(schema["pattern"])


FORMATS = {"date-time": "2026-01-01T00:00:00Z", "date": "2026-01-01", "uuid": "00000000-0000-7000-8000-000000000000",
           "email": "owner@example.com", "uri": "https://example.com/x"}


def _from_pattern(pattern: str) -> str:
    for candidate in ("USD", "x", "abc", "2026-01-01"):
        if re.fullmatch(pattern, candidate):
            return candidate
    raise AssertionError(f"extend the example generator for pattern {pattern!r}")


def routes(spec: dict):
    for path, operations in spec["paths"].items():
        if not path.startswith("/v1/"):
            continue
        for method, operation in operations.items():
            if method in METHODS:
                yield path, method, operation


async def seed_tenants(client) -> dict[str, str]:
    """Ids of the owner's own webhook endpoint and delivery, so the owner's calls reach real rows."""
    created = await client.post("/v1/webhook-endpoints", json={"url": "https://partner.example/hooks"},
                                headers=_admin(OWNER))
    assert created.status_code == 201, created.text
    endpoint_id = created.json()["id"]
    event = new_event("tenant.updated", tenant_id=OWNER, producer="tenants",
                      data={"tenant_id": OWNER, "name": "Owner MSP", "timezone": "UTC", "currency": "USD"})
    async with client.app.state.session_factory() as session, session.begin():
        await fan_out(session, event, CATALOGUE.parse("tenant.updated", 1, event.data))
    listed = await client.get(f"/v1/webhook-endpoints/{endpoint_id}/deliveries", headers=_admin(OWNER))
    return {"endpoint_id": endpoint_id, "delivery_id": listed.json()["items"][0]["id"]}


# Per service: the owner's ids for path parameters, made fresh before each route (a DELETE may
# remove them). A path parameter without a seed gets an unknown id, and then the owner may get 404
# too, as for ids in a request body of a service without a seeder: add a seeder when a service adds
# routes with ids, so the owner's success is checked as well.
_psa_simulator: list = []


async def seed_psa_ingest(client) -> dict[str, str]:
    """The owner's connection to an (empty) ConnectWise simulator, stored never due for polling, so the
    owner's test, sync and webhook calls reach a real PSA and run only when asked."""
    if not _psa_simulator:  # one per test session, on its event loop
        simulator = ConnectWiseSimulator(seeded=False)
        await simulator.start(free_port())
        _psa_simulator.append(simulator)
    credentials = {"company_id": CW_COMPANY_ID, "public_key": CW_PUBLIC_KEY, "private_key": CW_PRIVATE_KEY,
                   "client_id": CW_CLIENT_ID}
    connection_id = uuid.uuid4()
    async with client.app.state.session_factory() as session, session.begin():
        session.add(PsaConnection(
            id=connection_id, tenant_id=OWNER, source="connectwise", name="Seeded",
            base_url=_psa_simulator[0].api_url, credentials_encrypted=secret_box().encrypt(json.dumps(credentials)),
            credentials_hint={}, settings={"max_attempts": 1}, status="active", cursors={}, webhook_ids=[],
            poll_interval_s=3600, next_sync_at=None))
    return {"connection_id": str(connection_id)}


SEEDERS = {"tenants": seed_tenants, "psa_ingest": seed_psa_ingest}


def _admin(tenant: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {sign({'tenant_id': tenant, 'scopes': ['admin']})}"}


def request_for(path: str, operation: dict, spec: dict, tenant_value: str, ids: dict[str, str]):
    url = re.sub(r"\{tenant_id\}", tenant_value, path)
    url = re.sub(r"\{([^}]+)\}", lambda m: ids.get(m.group(1), "00000000-0000-7000-8000-000000000000"), url)
    body = None
    content = (operation.get("requestBody") or {}).get("content", {})
    if "application/json" in content:
        body = example(content["application/json"]["schema"], spec)
    return url, body


@pytest.mark.parametrize("service", SERVICES, ids=lambda s: s.name)
async def test_every_route_rejects_strangers(infra, service):
    async with running_service(infra, service, consumers=False, relay=False) as client:
        spec = client.app.openapi()
        # Give the owner data in this service, so a leak would have something to leak.
        async with client.app.state.session_factory() as session, session.begin():
            event = new_event("tenant.updated", tenant_id=OWNER, producer="tenants",
                              data={"tenant_id": OWNER, "name": "Owner MSP", "timezone": "UTC", "currency": "USD"})
            await apply_tenant_updated(session, event, CATALOGUE.parse("tenant.updated", 1, event.data))
        if service is TENANTS:
            owner_admin = {"Authorization": f"Bearer {sign({'tenant_id': OWNER, 'scopes': ['admin']})}"}
            created = await client.put(f"/v1/tenants/{OWNER}", json={"name": "Owner MSP"}, headers=owner_admin)
            assert created.status_code == 200, created.text

        checked = 0
        for path, method, operation in routes(spec):
            assert operation.get("security"), f"{method.upper()} {path} declares no bearer security"
            seeder = SEEDERS.get(service.name)
            ids = await seeder(client) if seeder and re.search(r"\{(?!tenant_id\})", path) else {}
            url, body = request_for(path, operation, spec, OWNER, ids)
            unseeded = set(re.findall(r"\{([^}]+)\}", path)) - set(ids) - {"tenant_id"}
            if seeder is None and isinstance(body, dict):
                # Ids in the body (a client to pay, an invoice to allocate) name rows the owner lacks.
                unseeded |= {k for k in body if k.endswith(("_id", "_ids"))}
            what = f"{service.name} {method.upper()} {path}"

            async def call(headers):
                return await client.request(method, url, json=body, headers=headers)

            bad_tokens = {
                "missing": {},
                "malformed": {"Authorization": "Bearer not-a-jwt"},
                "wrong scheme": {"Authorization": f"Basic {sign({'tenant_id': OWNER, 'scopes': ['admin']})}"},
                "expired": {"Authorization": "Bearer " + sign(
                    {"tenant_id": OWNER, "scopes": ["admin"]}, exp=datetime.now(UTC) - timedelta(minutes=1))},
                "wrong signature": {"Authorization": "Bearer " + sign(
                    {"tenant_id": OWNER, "scopes": ["admin"]}, secret="someone-elses-secret-0123456789abcdef")},
                "no tenant": {"Authorization": "Bearer " + sign({"scopes": ["admin"]})},
            }
            for label, headers in bad_tokens.items():
                response = await call(headers)
                assert response.status_code == 401, f"{what} with {label} token: {response.status_code}"
                assert response.headers["content-type"].startswith("application/problem+json")

            no_scope = {"Authorization": "Bearer " + sign({"tenant_id": OWNER, "scopes": []})}
            assert (await call(no_scope)).status_code == 403, f"{what} without scope"

            stranger = {"Authorization": "Bearer " + sign({"tenant_id": STRANGER, "scopes": ["admin"]})}
            response = await call(stranger)
            if "{" in path:
                assert response.status_code in (403, 404), f"{what} as another tenant: {response.status_code}"
            # The problem's `instance` echoes the caller's own URL; nothing else may name the owner.
            answer = response.json() if response.content else {}
            if isinstance(answer, dict):
                answer.pop("instance", None)
            assert OWNER not in str(answer) and "Owner MSP" not in str(answer), f"{what} leaks: {answer}"

            # After the stranger's attempt, so a stranger's DELETE or change that went through shows here.
            owner = {"Authorization": "Bearer " + sign({"tenant_id": OWNER, "scopes": ["admin"]})}
            reachable = await call(owner)
            allowed = (404,) if unseeded else ()
            assert reachable.status_code < 400 or reachable.status_code in allowed, \
                f"{what} as its owner: {reachable.status_code} {reachable.text}"
            checked += 1
        assert checked >= 1, f"{service.name} has no /v1 routes to check"
