"""Listing jobs: filters from the query and keyset pagination on (created_at, id)."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from app.core.errors import InvalidInput
from app.core.models import Job, Tenant


@dataclass(frozen=True)
class JobFilters:
    status: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    metadata: dict[str, str] = field(default_factory=dict)  # string values, exact match


def metadata_filters(items: list[str] | None) -> dict[str, str]:
    """`key:value` query items as a dict (422 for an item without a key or a colon)."""
    pairs = [item.partition(":") for item in items or []]
    if any(not sep or not key for key, sep, _ in pairs):
        raise InvalidInput("metadata: each filter must look like key:value.")
    return {key: value for key, _, value in pairs}


def _cursor_encode(job: Job) -> str:
    raw = f"{job.created_at.isoformat()}|{job.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode()


def _cursor_decode(cursor: str) -> tuple[datetime, str]:
    try:
        created, job_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|", 1)
        return datetime.fromisoformat(created), job_id
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput("cursor: not a cursor returned by this API.") from exc


def list_jobs(
    *,
    session: Session,
    tenant: Tenant,
    limit: int,
    cursor: str | None,
    filters: JobFilters,
) -> tuple[list[Job], str | None]:
    """Newest first, keyset-paginated on (created_at, id)."""
    query = select(Job).where(Job.tenant_id == tenant.id)
    if filters.status:
        query = query.where(Job.status == filters.status)
    if filters.created_after:
        query = query.where(Job.created_at >= filters.created_after)
    if filters.created_before:
        query = query.where(Job.created_at < filters.created_before)
    for key, value in filters.metadata.items():
        query = query.where(Job.job_metadata[key].as_string() == value)
    if cursor:
        created, job_id = _cursor_decode(cursor)
        query = query.where(
            or_(Job.created_at < created, and_(Job.created_at == created, Job.id < job_id))
        )
    rows = list(
        session.scalars(query.order_by(Job.created_at.desc(), Job.id.desc()).limit(limit + 1))
    )
    next_cursor = _cursor_encode(rows[limit - 1]) if len(rows) > limit else None
    return rows[:limit], next_cursor
