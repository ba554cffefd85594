"""Step two of an encryption key rotation: re-encrypt the tenant's stored webhook signing secrets
with the newest key of `PAYLOOP_ENCRYPTION_KEYS`, so the old key can then be dropped.

(Rotating a partner's signing secret itself is another thing: `POST /v1/webhook-endpoints/{id}/rotate-secret`.)"""
from __future__ import annotations

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncSession

from payloop import audit
from payloop.auth import Principal, require
from payloop.db import db_session
from payloop.problems import PROBLEM_RESPONSES
from payloop.secrets import rotate_column
from payloop_tenants.models import WebhookEndpoint
from payloop_tenants.webhooks.service import PRODUCER

SECRET_COLUMNS = ("secret_encrypted", "previous_secret_encrypted")

router = APIRouter(prefix="/v1/admin", tags=["admin"], responses=PROBLEM_RESPONSES)


class RotationResult(BaseModel):
    rotated: int = Field(description="How many stored secrets were re-encrypted with the newest key")


async def rotate_stored_secrets(session: AsyncSession, tenant_id: str) -> int:
    return sum([await rotate_column(session, WebhookEndpoint.__table__, column, tenant_id=tenant_id)
                for column in SECRET_COLUMNS])


@router.post("/rotate-secrets", response_model=RotationResult,
             summary="Re-encrypt this tenant's stored webhook signing secrets with the newest key")
async def rotate_secrets(principal: Principal = require("admin"),
                         session: AsyncSession = Depends(db_session)) -> RotationResult:
    rotated = await rotate_stored_secrets(session, principal.tenant_id)
    await audit.record(session, principal, "secrets.rotated", ("tenant", principal.tenant_id),
                       {"rotated": rotated}, producer=PRODUCER)
    return RotationResult(rotated=rotated)
