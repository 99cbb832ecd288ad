"""/v1/webhooks: a tenant's signed webhook endpoints and their deliveries."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Response

from app.core.auth import SessionDep, TenantDep
from app.core.config import get_settings
from app.core.limits import rate_limit
from app.webhooks import service
from app.webhooks.schemas import (
    DeliveryList,
    WebhookCreate,
    WebhookCreated,
    WebhookList,
    WebhookRead,
)

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"], dependencies=[Depends(rate_limit)])


@router.post("", status_code=201, response_model=WebhookCreated)
def create_webhook(
    body: WebhookCreate, response: Response, session: SessionDep, tenant: TenantDep
) -> WebhookCreated:
    """Register an endpoint. The answer carries its signing secret, the only time it is shown."""
    row = service.create_webhook(session=session, settings=get_settings(), tenant=tenant, body=body)
    session.commit()
    response.headers["Location"] = f"/v1/webhooks/{row.id}"
    return service.to_created(row)


@router.get("", response_model=WebhookList)
def list_webhooks(
    session: SessionDep,
    tenant: TenantDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
) -> WebhookList:
    rows, next_cursor = service.list_webhooks(
        session=session, tenant=tenant, limit=limit, cursor=cursor
    )
    return WebhookList(items=[service.to_read(r) for r in rows], next_cursor=next_cursor)


@router.get("/{webhook_id}", response_model=WebhookRead)
def get_webhook(webhook_id: str, session: SessionDep, tenant: TenantDep) -> WebhookRead:
    return service.to_read(
        service.get_webhook(session=session, tenant=tenant, webhook_id=webhook_id)
    )


@router.delete("/{webhook_id}", status_code=204)
def delete_webhook(webhook_id: str, session: SessionDep, tenant: TenantDep) -> Response:
    service.delete_webhook(session=session, tenant=tenant, webhook_id=webhook_id)
    session.commit()
    return Response(status_code=204)


@router.get("/{webhook_id}/deliveries", response_model=DeliveryList)
def list_deliveries(
    webhook_id: str,
    session: SessionDep,
    tenant: TenantDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    status: Annotated[Literal["pending", "delivered", "failed"] | None, Query()] = None,
) -> DeliveryList:
    """The endpoint's deliveries, newest first: status, attempts (each with its time, HTTP
    status and error), the next attempt's time and the event's payload."""
    items, next_cursor = service.list_deliveries(
        session=session,
        tenant=tenant,
        webhook_id=webhook_id,
        limit=limit,
        cursor=cursor,
        status=status,
    )
    return DeliveryList(items=items, next_cursor=next_cursor)
