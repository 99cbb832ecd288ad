"""Webhook endpoints of a tenant: create (the secret shown once), list, read, delete, and the
deliveries of one endpoint. Services only flush: the request owns the transaction."""

from __future__ import annotations

import base64
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.core.errors import NotFound
from app.core.models import Tenant, Webhook, WebhookDelivery, WebhookEvent, new_id
from app.core.paging import keyset_page
from app.webhooks.outbox import EVENT_TYPES
from app.webhooks.schemas import DeliveryRead, WebhookCreate, WebhookCreated, WebhookRead
from app.webhooks.urls import check_receiver

SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    """A Standard Webhooks secret: whsec_ and 32 random bytes in base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def create_webhook(
    *, session: Session, settings: Settings, tenant: Tenant, body: WebhookCreate
) -> Webhook:
    check_receiver(body.url, settings, field="url")
    row = Webhook(
        tenant_id=tenant.id,
        url=body.url,
        event_types=list(dict.fromkeys(body.event_types)),
        secret=new_secret(),
        description=body.description,
    )
    session.add(row)
    session.flush()
    return row


def create_job_endpoint(*, session: Session, tenant_id: str, job_id: str, url: str) -> Webhook:
    """A job's notify_url (checked by the caller: check_receiver): an endpoint of its own, with
    its own secret, for all its events."""
    row = Webhook(
        id=new_id("wh"),
        tenant_id=tenant_id,
        job_id=job_id,
        url=url,
        event_types=list(EVENT_TYPES),
        secret=new_secret(),
        description=f"notify_url of job {job_id}",
    )
    session.add(row)
    session.flush()
    return row


def job_endpoint(session: Session, job_id: str) -> Webhook | None:
    return session.scalar(select(Webhook).where(Webhook.job_id == job_id))


def get_webhook(*, session: Session, tenant: Tenant, webhook_id: str) -> Webhook:
    row = session.scalar(
        select(Webhook).where(Webhook.id == webhook_id, Webhook.tenant_id == tenant.id)
    )
    if row is None:
        raise NotFound(f"Webhook '{webhook_id}' does not exist.")
    return row


def list_webhooks(
    *, session: Session, tenant: Tenant, limit: int, cursor: str | None
) -> tuple[list[Webhook], str | None]:
    """The tenant's endpoints (not the jobs' notify_url ones), newest first."""
    query = select(Webhook).where(Webhook.tenant_id == tenant.id, Webhook.job_id.is_(None))
    return keyset_page(
        session, query, Webhook, limit=limit, cursor=cursor, issuer="GET /v1/webhooks"
    )


def delete_webhook(*, session: Session, tenant: Tenant, webhook_id: str) -> None:
    """Remove the endpoint and its deliveries (pending ones are never sent)."""
    row = get_webhook(session=session, tenant=tenant, webhook_id=webhook_id)
    session.delete(row)
    session.flush()


def list_deliveries(
    *,
    session: Session,
    tenant: Tenant,
    webhook_id: str,
    limit: int,
    cursor: str | None,
    status: str | None = None,
) -> tuple[list[DeliveryRead], str | None]:
    """The endpoint's deliveries, newest first, with their attempts."""
    row = get_webhook(session=session, tenant=tenant, webhook_id=webhook_id)
    query = select(WebhookDelivery).where(WebhookDelivery.webhook_id == row.id)
    if status:
        query = query.where(WebhookDelivery.status == status)
    page, next_cursor = keyset_page(
        session,
        query,
        WebhookDelivery,
        limit=limit,
        cursor=cursor,
        issuer=f"GET /v1/webhooks/{row.id}/deliveries",
    )
    ids = {d.event_id for d in page}
    events = {
        e.id: e for e in session.scalars(select(WebhookEvent).where(WebhookEvent.id.in_(ids)))
    }
    return [delivery_read(d, events[d.event_id]) for d in page], next_cursor


def delivery_read(row: WebhookDelivery, event: WebhookEvent) -> DeliveryRead:
    return DeliveryRead(
        id=row.id,
        event_id=row.event_id,
        event_type=event.type,
        job_id=event.job_id,
        status=row.status,
        attempts=row.attempts,
        next_attempt_at=row.next_attempt_at,
        last_status_code=row.last_status_code,
        last_error=row.last_error,
        delivered_at=row.delivered_at,
        created_at=row.created_at,
        attempt_log=list(row.attempt_log or []),
        payload=event.payload,
    )


def to_read(row: Webhook) -> WebhookRead:
    return WebhookRead(
        id=row.id,
        url=row.url,
        event_types=list(row.event_types),
        description=row.description,
        job_id=row.job_id,
        created_at=row.created_at,
        links={
            "self": f"/v1/webhooks/{row.id}",
            "deliveries": f"/v1/webhooks/{row.id}/deliveries",
        },
    )


def to_created(row: Webhook) -> WebhookCreated:
    return WebhookCreated(**to_read(row).model_dump(), secret=row.secret)
