"""API schemas of the audit log."""
from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, Field


class AuditEntryOut(BaseModel):
    id: UUID
    occurred_at: datetime
    service: str
    action: str
    actor_subject: str
    actor_scopes: list[str]
    target_type: str
    target_id: str
    details: dict[str, Any]


class AuditPage(BaseModel):
    items: list[AuditEntryOut]
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next (older) page")
