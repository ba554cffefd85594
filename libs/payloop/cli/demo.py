"""The demo MSP that `payloop dev` seeds, through the services' own APIs (never their databases)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import httpx

from payloop.auth import mint_token
from payloop.cli.errors import CliError
from payloop.services import service

if TYPE_CHECKING:
    from payloop.cli.dev import DevPlatform

DEMO_TENANT = "demo-msp"


def api(platform: "DevPlatform", service_name: str) -> httpx.Client:
    token = mint_token(DEMO_TENANT, ["admin"])
    return httpx.Client(base_url=f"http://127.0.0.1:{platform.service_port(service(service_name))}",
                        headers={"Authorization": f"Bearer {token}"}, timeout=30)


def expect(response: httpx.Response, what: str) -> dict:
    if response.status_code >= 400:
        raise CliError(f"seeding the demo failed at {what}: {response.status_code} {response.text[:500]}")
    return response.json() if response.content else {}


def seed_demo(platform: "DevPlatform") -> None:
    with api(platform, "tenants") as tenants:
        expect(tenants.put(f"/v1/tenants/{DEMO_TENANT}", json={
            "name": "Demo MSP", "timezone": "America/Chicago", "currency": "USD",
            "branding": {"primary_color": "#0f766e", "sender_name": "Demo MSP Billing"},
        }), "the tenant profile")
    platform.say(f"seeded tenant {DEMO_TENANT!r}")
