"""Oversized bodies are refused with 413 whether declared or streamed, before the route sees them."""
from payloop.body_limit import MAX_BODY_BYTES
from payloop.testing.plugin import running_service
from payloop_tenants.service import SERVICE as TENANTS


async def test_declared_and_streamed_oversized_bodies_get_413(infra, token):
    headers = token("limit-tenant", "admin")
    async with running_service(infra, TENANTS, consumers=False, relay=False) as client:
        big = b'{"name": "' + b"x" * (MAX_BODY_BYTES + 10) + b'"}'
        declared = await client.put("/v1/tenants/limit-tenant", content=big,
                                    headers={**headers, "content-type": "application/json"})
        assert declared.status_code == 413
        assert declared.headers["content-type"] == "application/problem+json"

        async def chunks():
            for start in range(0, len(big), 64 * 1024):
                yield big[start:start + 64 * 1024]

        streamed = await client.put("/v1/tenants/limit-tenant", content=chunks(),
                                    headers={**headers, "content-type": "application/json"})
        assert streamed.status_code == 413
        assert "limited to" in streamed.json()["detail"]
        missing = await client.get("/v1/tenants/limit-tenant", headers=headers)
        assert missing.status_code == 404  # nothing was written

        small = await client.put("/v1/tenants/limit-tenant", json={"name": "Small MSP"}, headers=headers)
        assert small.status_code == 200


async def test_text_with_nul_characters_is_refused_with_422_not_500(infra, token):
    headers = token("nul-tenant", "admin")
    async with running_service(infra, TENANTS, consumers=False, relay=False) as client:
        response = await client.put("/v1/tenants/nul-tenant", json={"name": "Bad\u0000Name"}, headers=headers)
        assert response.status_code == 422, response.text
        assert "NUL" in response.json()["detail"]
        assert (await client.get("/v1/tenants/nul-tenant", headers=headers)).status_code == 404
