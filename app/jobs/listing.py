"""Listing jobs: filters from the query and keyset pagination on (created_at, id)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.errors import InvalidInput
from app.core.models import Job, Tenant
from app.core.paging import keyset_page


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
    return keyset_page(session, query, Job, limit=limit, cursor=cursor, issuer="this API")
