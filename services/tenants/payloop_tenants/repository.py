"""Every query of the tenant profile, and the `tenant.updated` it owes for each change."""
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from payloop import outbox
from payloop.events import new_event

from payloop_tenants.models import Tenant
from payloop_tenants.schemas import TenantWrite

PRODUCER = "tenants"


async def get(session: AsyncSession, tenant_id: str) -> Tenant | None:
    return await session.get(Tenant, tenant_id)


async def upsert(session: AsyncSession, tenant_id: str, body: TenantWrite) -> tuple[Tenant, list[str]]:
    """Create or replace the profile; returns it and the names of the fields that changed."""
    tenant = await session.get(Tenant, tenant_id, with_for_update=True)
    values: dict[str, Any] = body.model_dump(mode="json")
    if tenant is None:
        tenant = Tenant(id=tenant_id, **values)
        session.add(tenant)
        changed = sorted(values)
    else:
        changed = sorted(k for k, v in values.items() if getattr(tenant, k) != v)
        if not changed:
            return tenant, []  # nothing changed: publish nothing
        for key in changed:
            setattr(tenant, key, values[key])
    await session.flush()
    await session.refresh(tenant)
    await outbox.publish(session, new_event(
        "tenant.updated", tenant_id=tenant_id, producer=PRODUCER,
        data={"tenant_id": tenant_id, **values},
    ))
    return tenant, changed
