"""Every query of the tenants service, and the `tenant.updated` it owes for each change."""
from sqlalchemy.ext.asyncio import AsyncSession

from payloop import outbox
from payloop.events import new_event

from payloop_tenants.models import Tenant
from payloop_tenants.schemas import TenantWrite

PRODUCER = "tenants"


async def get(session: AsyncSession, tenant_id: str) -> Tenant | None:
    return await session.get(Tenant, tenant_id)


async def upsert(session: AsyncSession, tenant_id: str, body: TenantWrite) -> Tenant:
    tenant = await session.get(Tenant, tenant_id, with_for_update=True)
    values = body.model_dump()
    if tenant is None:
        tenant = Tenant(id=tenant_id, **values)
        session.add(tenant)
    elif all(getattr(tenant, k) == v for k, v in values.items()):
        return tenant  # nothing changed: publish nothing
    else:
        for key, value in values.items():
            setattr(tenant, key, value)
    await session.flush()
    await session.refresh(tenant)
    await outbox.publish(session, new_event(
        "tenant.updated", tenant_id=tenant_id, producer=PRODUCER,
        data={"tenant_id": tenant_id, **values},
    ))
    return tenant
