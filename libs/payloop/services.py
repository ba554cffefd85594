"""Where each service runs: names, ports and modules, for the CLI and `payloop dev`.

This is configuration, not an import of the services: the CLI starts them as processes
(`python -m payloop_<name>`), so no service code is loaded by libs.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    port: int

    @property
    def module(self) -> str:
        return f"payloop_{self.name}"

    @property
    def database(self) -> str:
        return f"payloop_{self.name}"

    @property
    def database_url_env(self) -> str:
        return f"PAYLOOP_{self.name.upper()}_DATABASE_URL"


SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("tenants", 8100),
    ServiceSpec("psa_ingest", 8101),
    ServiceSpec("payments", 8102),
    ServiceSpec("collections", 8103),
    ServiceSpec("gl_posting", 8104),
    ServiceSpec("reporting", 8105),
)


def service(name: str) -> ServiceSpec:
    for spec in SERVICES:
        if spec.name == name:
            return spec
    raise KeyError(f"unknown service {name!r}; known: {', '.join(s.name for s in SERVICES)}")
