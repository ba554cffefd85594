"""Local stand-ins for outside systems (PSAs, accounting, SMTP), following the vendors' documented
formats (`../shared/specs/`), for `payloop dev` and for tests. Never imported by services.

Each simulator is a module runnable as `python -m payloop.simulators.<module> --port N`; `payloop dev`
starts every one listed in `SIMULATORS` (on `port + --port-offset`) and prints where it runs.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SimulatorSpec:
    name: str
    module: str
    port: int
    description: str
    # Further listening ports as (option, base port); `payloop dev` offsets them like `port`.
    extra_ports: tuple[tuple[str, int], ...] = ()
    # A PSA serving the MSP book: `payloop dev` dates it around the demo's first day (`--today`).
    dated_book: bool = False


# Ports from 8200 (DESIGN.md section 5). Add an entry when a simulator module lands.
SIMULATORS: tuple[SimulatorSpec, ...] = (
    SimulatorSpec("connectwise", "connectwise", 8200, "ConnectWise PSA (Manage REST API 3.0) at /v4_6_release/apis/3.0",
                  dated_book=True),
    SimulatorSpec("autotask", "autotask", 8201, "Autotask PSA (REST API v1.0) at /ATServicesRest/V1.0",
                  dated_book=True),
    SimulatorSpec("halopsa", "halopsa", 8202, "HaloPSA (OAuth2 client credentials at /auth/token, API at /api)",
                  dated_book=True),
    SimulatorSpec("superops", "superops", 8203, "SuperOps (GraphQL at /msp, API token + CustomerSubDomain)",
                  dated_book=True),
    SimulatorSpec("smtp-sink", "smtp_sink", 8220, "SMTP sink on :1025; sent email at /messages",
                  extra_ports=(("--smtp-port", 1025),)),
    SimulatorSpec("quickbooks", "quickbooks", 8210, "QuickBooks Online (Accounting API v3, OAuth 2.0); demo realm 9130350000000001"),
    SimulatorSpec("xero", "xero", 8211, "Xero (Accounting API 2.0 at /api.xro/2.0, OAuth 2.0); demo tenant 5b3c2e7a-0d8f-4c1e-9a6b-3f2d1c0b9a87"),
)
