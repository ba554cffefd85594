"""Each service's local copy of tenant profiles (timezone, currency, branding, settings).

Services never call the tenants service: they keep what `tenant.updated` says, newest event wins,
and expose what they hold at `GET /v1/tenant-profile` so an operator can see a change arrive.
"""
from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from payloop.auth import Principal, require
from payloop.db import db_session
from payloop.events.catalogue import EventData
from payloop.events.envelope import Envelope
from payloop.problems import PROBLEM_RESPONSES, NotFound

_UPSERT = text("""
INSERT INTO tenant_profiles (tenant_id, name, timezone, currency, branding, settings, event_id, occurred_at)
VALUES (:tenant_id, :name, :timezone, :currency, CAST(:branding AS jsonb), CAST(:settings AS jsonb),
        :event_id, :occurred_at)
ON CONFLICT (tenant_id) DO UPDATE SET
    name = EXCLUDED.name, timezone = EXCLUDED.timezone, currency = EXCLUDED.currency,
    branding = EXCLUDED.branding, settings = EXCLUDED.settings, event_id = EXCLUDED.event_id,
    occurred_at = EXCLUDED.occurred_at, updated_at = now()
WHERE tenant_profiles.occurred_at <= EXCLUDED.occurred_at
""")


async def apply_tenant_updated(session: AsyncSession, event: Envelope, data: EventData) -> None:
    values = data.model_dump(mode="json")
    await session.execute(_UPSERT, {
        "tenant_id": event.tenant_id, "name": values["name"], "timezone": values["timezone"],
        "currency": values["currency"], "branding": json.dumps(values.get("branding", {})),
        "settings": json.dumps(values.get("settings", {})), "event_id": event.id,
        "occurred_at": event.occurred_at,
    })


class TenantProfile(BaseModel):
    tenant_id: str
    name: str
    timezone: str
    currency: str
    branding: dict[str, Any]
    settings: dict[str, Any]
    updated_at: datetime


async def load_profile(session: AsyncSession, tenant_id: str) -> TenantProfile | None:
    row = (await session.execute(
        text("SELECT tenant_id, name, timezone, currency, branding, settings, updated_at "
             "FROM tenant_profiles WHERE tenant_id = :t"), {"t": tenant_id},
    )).mappings().first()
    return TenantProfile(**row) if row else None


router = APIRouter(tags=["tenant profile"], responses=PROBLEM_RESPONSES)


@router.get("/v1/tenant-profile", response_model=TenantProfile, summary="The caller's tenant as this service knows it")
async def get_tenant_profile(principal: Principal = require("ar:read"),
                             session: AsyncSession = Depends(db_session)) -> TenantProfile:
    profile = await load_profile(session, principal.tenant_id)
    if profile is None:
        raise NotFound("tenant profile (no tenant.updated received yet)")
    return profile
