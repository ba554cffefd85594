"""Routes of the tenants service."""
from fastapi import APIRouter, Depends, Path
from sqlalchemy.ext.asyncio import AsyncSession

from payloop import audit
from payloop.auth import Principal, require
from payloop.db import db_session
from payloop.problems import PROBLEM_RESPONSES, NotFound

from payloop_tenants import repository
from payloop_tenants.schemas import TenantOut, TenantWrite

router = APIRouter(prefix="/v1/tenants", tags=["tenants"], responses=PROBLEM_RESPONSES)

TenantId = Path(pattern=r"^[A-Za-z0-9_-]{1,64}$")


@router.get("/{tenant_id}", response_model=TenantOut, summary="Read the tenant's profile")
async def get_tenant(tenant_id: str = TenantId, principal: Principal = require("ar:read"),
                     session: AsyncSession = Depends(db_session)) -> TenantOut:
    principal.owns(tenant_id)
    tenant = await repository.get(session, tenant_id)
    if tenant is None:
        raise NotFound("tenant")
    return TenantOut.model_validate(tenant)


@router.put("/{tenant_id}", response_model=TenantOut, summary="Create or replace the tenant's profile",
            description="Publishes `tenant.updated` (through the outbox) when anything changed.")
async def put_tenant(body: TenantWrite, tenant_id: str = TenantId, principal: Principal = require("tenants:write"),
                     session: AsyncSession = Depends(db_session)) -> TenantOut:
    principal.owns(tenant_id)
    tenant, changed = await repository.upsert(session, tenant_id, body)
    if changed:
        await audit.record(session, principal, "tenant.updated", ("tenant", tenant_id),
                           {"fields": changed}, producer=repository.PRODUCER)
    return TenantOut.model_validate(tenant)
