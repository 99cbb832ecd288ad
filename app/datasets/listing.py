"""Listing datasets: keyset pagination on (created_at, id), newest first, like GET /v1/jobs.

A keyset cursor (not an offset) so that a page never repeats or skips a dataset when others are
uploaded or deleted between two requests; the id breaks ties between equal `created_at`s.
"""

from __future__ import annotations

import base64
from datetime import datetime

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from app.core.errors import InvalidInput
from app.core.models import Dataset, Tenant

DATASETS_PAGE, MAX_DATASETS_PAGE = 100, 500  # GET /v1/datasets: default and largest `limit`


def encode_cursor(dataset: Dataset) -> str:
    """The opaque cursor that resumes after `dataset` (same shape as the jobs' cursors)."""
    raw = f"{dataset.created_at.isoformat()}|{dataset.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode()


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """(created_at, id) of the last dataset of the page before; 422 for anything else."""
    try:
        created, dataset_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|", 1)
        at = datetime.fromisoformat(created)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput("cursor: not a cursor returned by GET /v1/datasets.") from exc
    if at.tzinfo is None or "\x00" in dataset_id:  # never in a cursor of ours
        raise InvalidInput("cursor: not a cursor returned by GET /v1/datasets.")
    return at, dataset_id


def list_datasets(
    *, session: Session, tenant: Tenant, limit: int = DATASETS_PAGE, cursor: str | None = None
) -> tuple[list[Dataset], str | None]:
    """One page of the tenant's datasets, newest first, and the cursor of the next page (None
    on the last). One row more than the page is read to know whether another page follows."""
    query = select(Dataset).where(Dataset.tenant_id == tenant.id)
    if cursor:
        created, dataset_id = decode_cursor(cursor)
        query = query.where(
            or_(
                Dataset.created_at < created,
                and_(Dataset.created_at == created, Dataset.id < dataset_id),
            )
        )
    query = query.order_by(Dataset.created_at.desc(), Dataset.id.desc()).limit(limit + 1)
    rows = list(session.scalars(query))
    next_cursor = encode_cursor(rows[limit - 1]) if len(rows) > limit else None
    return rows[:limit], next_cursor
