"""The outbox: an event row and its deliveries, added in the transaction of the state change.

Every place a job reaches a terminal state (worker.publish, worker.lease, worker.reaper,
worker.watchdog, app.jobs.service's cancel, app.datasets.ingest) and a re-selection becomes
ready (worker.reselect) calls one function here with its own session before its commit, so an
event exists exactly when the change does: a rolled-back change leaves no event, a committed one
always has its event. Sending is worker.webhooks' job.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from app.core.models import (
    Job,
    JobStatus,
    Selection,
    Webhook,
    WebhookDelivery,
    WebhookEvent,
    new_id,
    utcnow,
)

logger = logging.getLogger(__name__)

JOB_EVENTS = {
    JobStatus.SUCCEEDED: "job.succeeded",
    JobStatus.FAILED: "job.failed",
    JobStatus.CANCELLED: "job.cancelled",
}
SELECTION_SUCCEEDED = "selection.succeeded"
EVENT_TYPES = (*JOB_EVENTS.values(), SELECTION_SUCCEEDED)


def job_links(job_id: str) -> dict[str, str]:
    base = f"/v1/jobs/{job_id}"
    return {"job": base, "selection": f"{base}/selection", "scores": f"{base}/scores"}


def job_ended(session: Session, job_id: str) -> WebhookEvent | None:
    """Record the job's terminal event (its status as it stands in `session`, which must hold
    the change). None when the job is gone or not terminal. Call before the commit."""
    job = session.get(Job, job_id)
    if job is None:
        return None
    session.flush()
    session.refresh(job)  # the status as written, also by a bulk UPDATE in this transaction
    event_type = JOB_EVENTS.get(JobStatus(job.status)) if job.status in JOB_EVENTS else None
    if event_type is None:
        return None
    error = {"code": job.error_code, "detail": job.error} if job.error else None
    data: dict[str, Any] = {
        "job_id": job.id,
        "status": job.status,
        "task": job.task,
        "method": job.method,
        "attempt": job.attempt,
        "message": job.message,
        "error": error,
        "metadata": job.job_metadata,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "links": job_links(job.id),
    }
    return _record(session, job.tenant_id, job.id, event_type, data)


def selection_ready(session: Session, selection: Selection) -> WebhookEvent | None:
    """Record `selection.succeeded` for a re-selection that became ready. Call before the commit."""
    job = session.get(Job, selection.job_id)
    if job is None:
        return None
    links = job_links(job.id)
    links["selection"] = f"/v1/jobs/{job.id}/selections/{selection.id}"
    data: dict[str, Any] = {
        "job_id": job.id,
        "selection_id": selection.id,
        "status": "succeeded",
        "target": selection.target,
        "budget": selection.budget,
        "strategy": selection.strategy,
        "size": selection.size,
        "metadata": job.job_metadata,
        "links": links,
    }
    return _record(session, job.tenant_id, job.id, SELECTION_SUCCEEDED, data)


def _record(
    session: Session, tenant_id: str, job_id: str, event_type: str, data: dict[str, Any]
) -> WebhookEvent:
    """The event and one pending delivery per endpoint that wants it: the tenant's endpoints
    subscribed to the type, and the job's own notify_url endpoint (every type)."""
    now = utcnow()
    event_id = new_id("msg")
    payload = {"type": event_type, "timestamp": now.isoformat(), "data": data}
    event = WebhookEvent(
        id=event_id,
        tenant_id=tenant_id,
        type=event_type,
        job_id=job_id,
        payload=payload,
        created_at=now,
    )
    session.add(event)
    endpoints = session.scalars(
        select(Webhook).where(
            Webhook.tenant_id == tenant_id,
            or_(Webhook.job_id.is_(None), Webhook.job_id == job_id),
        )
    ).all()
    for endpoint in endpoints:
        if endpoint.job_id is None and event_type not in endpoint.event_types:
            continue
        session.add(
            WebhookDelivery(
                event_id=event_id,
                webhook_id=endpoint.id,
                attempt_log=[],
                next_attempt_at=now,
                created_at=now,
            )
        )
    session.flush()
    logger.info("webhook event %s %s for job %s", event_id, event_type, job_id)
    return event
