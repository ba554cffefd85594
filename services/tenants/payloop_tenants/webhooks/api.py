"""Routes of partner webhooks: endpoints, the delivery log, secret rotation and replay."""
from datetime import timedelta
from typing import Literal
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Response
from sqlalchemy.ext.asyncio import AsyncSession

from payloop.auth import Principal, require
from payloop.db import db_session
from payloop.problems import PROBLEM_RESPONSES, NotFound, Problem

from payloop_tenants.webhooks import repository, service
from payloop_tenants.webhooks.schemas import (
    AttemptOut, DeliveryDetail, DeliveryOut, DeliveryPage, EndpointCreate, EndpointOut, EndpointUpdate,
    EndpointWithSecret, ReplayRange, ReplayResult, SecretRotation,
)

router = APIRouter(prefix="/v1/webhook-endpoints", tags=["partner webhooks"], responses=PROBLEM_RESPONSES)


@router.get("", response_model=list[EndpointOut], summary="The tenant's webhook endpoints")
async def list_endpoints(principal: Principal = require("ar:read"),
                         session: AsyncSession = Depends(db_session)) -> list[EndpointOut]:
    return [service.to_out(e) for e in await repository.endpoints_of(session, principal.tenant_id)]


@router.post("", response_model=EndpointWithSecret, status_code=201, summary="Add a webhook endpoint",
             description="The response carries the signing secret; it is never shown again (rotate to get a new one).")
async def create_endpoint(body: EndpointCreate, principal: Principal = require("tenants:write"),
                          session: AsyncSession = Depends(db_session)) -> EndpointOut:
    return await service.create(session, principal, body)


@router.get("/{endpoint_id}", response_model=EndpointOut, summary="One webhook endpoint")
async def get_endpoint(endpoint_id: UUID, principal: Principal = require("ar:read"),
                       session: AsyncSession = Depends(db_session)) -> EndpointOut:
    endpoint = await repository.endpoint(session, principal.tenant_id, endpoint_id)
    if endpoint is None:
        raise NotFound("webhook endpoint")
    return service.to_out(endpoint)


@router.patch("/{endpoint_id}", response_model=EndpointOut, summary="Change, disable or re-enable an endpoint")
async def update_endpoint(body: EndpointUpdate, endpoint_id: UUID, principal: Principal = require("tenants:write"),
                          session: AsyncSession = Depends(db_session)) -> EndpointOut:
    return await service.update(session, principal, endpoint_id, body)


@router.delete("/{endpoint_id}", status_code=204, response_class=Response, summary="Remove an endpoint")
async def delete_endpoint(endpoint_id: UUID, principal: Principal = require("tenants:write"),
                          session: AsyncSession = Depends(db_session)) -> Response:
    await service.delete(session, principal, endpoint_id)
    return Response(status_code=204)


@router.post("/{endpoint_id}/rotate-secret", response_model=EndpointWithSecret,
             summary="Replace the signing secret, keeping the old one valid for an overlap window")
async def rotate_secret(body: SecretRotation, endpoint_id: UUID, principal: Principal = require("tenants:write"),
                        session: AsyncSession = Depends(db_session)) -> EndpointOut:
    return await service.rotate_secret(session, principal, endpoint_id, timedelta(hours=body.overlap_hours))


@router.get("/{endpoint_id}/deliveries", response_model=DeliveryPage, summary="The endpoint's delivery log")
async def list_deliveries(endpoint_id: UUID,
                          status: Literal["pending", "succeeded", "failed"] | None = Query(None),
                          cursor: str | None = Query(None, pattern=r"^[0-9]{1,18}$"),
                          limit: int = Query(50, ge=1, le=200),
                          principal: Principal = require("ar:read"),
                          session: AsyncSession = Depends(db_session)) -> DeliveryPage:
    if await repository.endpoint(session, principal.tenant_id, endpoint_id) is None:
        raise NotFound("webhook endpoint")
    rows = await repository.deliveries_page(session, principal.tenant_id, endpoint_id, status=status,
                                            after_seq=int(cursor) if cursor else None, limit=limit)
    next_cursor = str(rows[-1].seq) if len(rows) == limit else None
    return DeliveryPage(items=[DeliveryOut.model_validate(r) for r in rows], next_cursor=next_cursor)


@router.get("/{endpoint_id}/deliveries/{delivery_id}", response_model=DeliveryDetail,
            summary="One delivery with every attempt's request and response summary")
async def get_delivery(endpoint_id: UUID, delivery_id: UUID, principal: Principal = require("ar:read"),
                       session: AsyncSession = Depends(db_session)) -> DeliveryDetail:
    delivery = await repository.delivery(session, principal.tenant_id, endpoint_id, delivery_id)
    if delivery is None:
        raise NotFound("webhook delivery")
    attempts = await repository.attempts(session, principal.tenant_id, delivery_id)
    return DeliveryDetail(**DeliveryOut.model_validate(delivery).model_dump(),
                          attempts_log=[AttemptOut.model_validate(a) for a in attempts])


@router.post("/{endpoint_id}/deliveries/{delivery_id}/replay", response_model=DeliveryOut, status_code=202,
             summary="Send one delivery's event again (same webhook-id), after the endpoint's pending ones")
async def replay_delivery(endpoint_id: UUID, delivery_id: UUID, principal: Principal = require("tenants:write"),
                          session: AsyncSession = Depends(db_session)) -> DeliveryOut:
    return DeliveryOut.model_validate(await service.replay_delivery(session, principal, endpoint_id, delivery_id))


@router.post("/{endpoint_id}/replay", response_model=ReplayResult, status_code=202,
             summary="Send again every subscribed event that occurred in a time range, in order")
async def replay_range(body: ReplayRange, endpoint_id: UUID, principal: Principal = require("tenants:write"),
                       session: AsyncSession = Depends(db_session)) -> ReplayResult:
    if body.until is not None and body.until <= body.since:
        raise Problem(422, "Invalid input", "`until` must be after `since`")
    count = await service.replay_range(session, principal, endpoint_id, body.since, body.until,
                                       body.only_undelivered)
    return ReplayResult(scheduled=count)
