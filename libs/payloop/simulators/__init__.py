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


# Ports from 8200 (DESIGN.md section 5). Add an entry when a simulator module lands.
SIMULATORS: tuple[SimulatorSpec, ...] = ()
