"""Listing datasets: keyset pagination on (created_at, id), newest first (app.core.paging)."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.models import Dataset, Tenant
from app.core.paging import keyset_page

DATASETS_PAGE, MAX_DATASETS_PAGE = 100, 500  # GET /v1/datasets: default and largest `limit`


def list_datasets(
    *, session: Session, tenant: Tenant, limit: int = DATASETS_PAGE, cursor: str | None = None
) -> tuple[list[Dataset], str | None]:
    """One page of the tenant's datasets, newest first, and the cursor of the next page (None
    on the last)."""
    query = select(Dataset).where(Dataset.tenant_id == tenant.id)
    return keyset_page(
        session, query, Dataset, limit=limit, cursor=cursor, issuer="GET /v1/datasets"
    )
