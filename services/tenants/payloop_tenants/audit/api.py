"""Route of the audit log: the tenant's sensitive actions, newest first."""
from fastapi import APIRouter, Depends, Query
from pydantic import AwareDatetime
from sqlalchemy.ext.asyncio import AsyncSession

from payloop.auth import Principal, require
from payloop.db import db_session
from payloop.problems import PROBLEM_RESPONSES

from payloop_tenants.audit import repository
from payloop_tenants.audit.schemas import AuditEntryOut, AuditPage

router = APIRouter(prefix="/v1/audit-events", tags=["audit log"], responses=PROBLEM_RESPONSES)


@router.get("", response_model=AuditPage, summary="The tenant's audit log (every service's sensitive actions)")
async def list_audit_events(action: str | None = Query(None, max_length=100),
                            target_type: str | None = Query(None, max_length=64),
                            target_id: str | None = Query(None, max_length=200),
                            since: AwareDatetime | None = Query(None),
                            cursor: str | None = Query(None, pattern=r"^[0-9]{1,18}$"),
                            limit: int = Query(50, ge=1, le=200),
                            principal: Principal = require("audit:read"),
                            session: AsyncSession = Depends(db_session)) -> AuditPage:
    rows = await repository.page(session, principal.tenant_id, action=action, target_type=target_type,
                                 target_id=target_id, since=since,
                                 before_seq=int(cursor) if cursor else None, limit=limit)
    return AuditPage(items=[AuditEntryOut.model_validate(r, from_attributes=True) for r in rows],
                     next_cursor=str(rows[-1].seq) if len(rows) == limit else None)
