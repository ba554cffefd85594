"""Step two of an encryption key rotation: re-encrypt the tenant's stored PSA credentials with the
newest key of `PAYLOOP_ENCRYPTION_KEYS`, so the old key can then be dropped."""
from __future__ import annotations

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from payloop import audit
from payloop.auth import Principal, require
from payloop.db import db_session
from payloop.problems import PROBLEM_RESPONSES
from payloop.secrets import rotate_column
from payloop_psa_ingest.models import Connection
from payloop_psa_ingest.sync import PRODUCER

router = APIRouter(prefix="/v1/admin", tags=["admin"], responses=PROBLEM_RESPONSES)


class RotationResult(BaseModel):
    rotated: int = Field(description="How many stored credentials were re-encrypted with the newest key")


@router.post("/rotate-secrets", response_model=RotationResult,
             summary="Re-encrypt this tenant's stored PSA credentials with the newest key")
async def rotate_secrets(principal: Principal = require("admin"),
                         session: AsyncSession = Depends(db_session)) -> RotationResult:
    rotated = await rotate_column(session, Connection.__table__, "credentials_encrypted",
                                  tenant_id=principal.tenant_id)
    await audit.record(session, principal, "secrets.rotated", ("psa_connection", principal.tenant_id),
                       {"rotated": rotated}, producer=PRODUCER)
    return RotationResult(rotated=rotated)
