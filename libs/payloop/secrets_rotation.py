"""Step two of an encryption key rotation, the same in every service that stores secrets: re-encrypt
what is stored with the newest key of `PAYLOOP_ENCRYPTION_KEYS`, so the old key can be dropped.

A service declares its `StoredSecrets` once and gets both the per-tenant admin route
(`POST /v1/admin/rotate-secrets`, audited as `secrets.rotated`) and the operator command over every
tenant (`python -m payloop_<service> rotate-secrets`)."""
from __future__ import annotations

import argparse
import asyncio
from dataclasses import dataclass

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncSession

from payloop import audit
from payloop.auth import Principal, require
from payloop.db import db_session, make_engine, make_session_factory
from payloop.problems import PROBLEM_RESPONSES
from payloop.secrets import rotate_column
from payloop.settings import service_database_url


@dataclass(frozen=True)
class StoredSecrets:
    service: str  # also the producer of the audit event
    what: str  # e.g. "PSA credentials", for summaries and help
    audit_target: str  # the audit entry's target type
    columns: tuple[tuple[Table, str], ...]

    async def rotate(self, session: AsyncSession, tenant_id: str | None = None) -> dict[str, int]:
        return {f"{table.name}.{column}": await rotate_column(session, table, column, tenant_id=tenant_id)
                for table, column in self.columns}


class RotationResult(BaseModel):
    rotated: int = Field(description="How many stored secrets were re-encrypted with the newest key")


def rotation_router(secrets: StoredSecrets) -> APIRouter:
    router = APIRouter(prefix="/v1/admin", tags=["admin"], responses=PROBLEM_RESPONSES)

    @router.post("/rotate-secrets", response_model=RotationResult,
                 summary=f"Re-encrypt this tenant's stored {secrets.what} with the newest key")
    async def rotate_secrets(principal: Principal = require("admin"),
                             session: AsyncSession = Depends(db_session)) -> RotationResult:
        rotated = sum((await secrets.rotate(session, principal.tenant_id)).values())
        await audit.record(session, principal, "secrets.rotated", (secrets.audit_target, principal.tenant_id),
                           {"rotated": rotated}, producer=secrets.service)
        return RotationResult(rotated=rotated)

    return router


def rotation_command(secrets: StoredSecrets) -> tuple[str, object]:
    """The `rotate-secrets` entry of a ServiceDefinition's `commands`: every tenant, one transaction."""
    help_text = f"re-encrypt every tenant's {secrets.what} with the newest key of PAYLOOP_ENCRYPTION_KEYS"

    def command(argv: list[str]) -> None:
        argparse.ArgumentParser(prog=f"python -m payloop_{secrets.service} rotate-secrets",
                                description=help_text).parse_args(argv)

        async def run() -> None:
            engine = make_engine(service_database_url(secrets.service), pool_size=1)
            try:
                async with make_session_factory(engine)() as session, session.begin():
                    for column, count in (await secrets.rotate(session)).items():
                        print(f"{column}: re-encrypted {count} value(s)", flush=True)
            finally:
                await engine.dispose()

        asyncio.run(run())

    return help_text, command
