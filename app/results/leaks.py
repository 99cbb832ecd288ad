"""The leakage check's findings: stored when a job is published, listed by GET /v1/jobs/{id}/leaks,
read back by re-selection (the excluded pool rows of a target are never selected).

A leak is plain data here (the API never imports the engine): the worker hands over dicts with the
fields of `tov_engine.Leak` plus the target and the matched dataset's id.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from sqlalchemy import and_, delete, func, insert, or_, select
from sqlalchemy.orm import Session

from app.core.errors import InvalidInput
from app.core.models import JobLeak, Tenant
from app.jobs.service import check_target, get_job

LEAKS_PAGE, MAX_LEAKS_PAGE = 100, 1000  # GET /v1/jobs/{id}/leaks: default and largest `limit`
PREVIEW_CHARS = 200


def write_leaks(session: Session, job_id: str, leaks: Iterable[Mapping[str, Any]]) -> int:
    """Replace the job's stored leaks; returns how many were written."""
    session.execute(delete(JobLeak).where(JobLeak.job_id == job_id))
    rows = [
        {
            "job_id": job_id,
            "target": int(leak["target"]),
            "pool_index": int(leak["pool_index"]),
            "source": str(leak["source"]),
            "dataset_id": str(leak["dataset_id"])[:40],
            "match_index": int(leak["match_index"]),
            "similarity": float(leak["similarity"]),
            "kind": str(leak["kind"]),
            "excluded": bool(leak["excluded"]),
            "pool_preview": str(leak.get("pool_preview", ""))[:PREVIEW_CHARS],
            "match_preview": str(leak.get("match_preview", ""))[:PREVIEW_CHARS],
        }
        for leak in leaks
    ]
    if rows:
        session.execute(insert(JobLeak), rows)
    return len(rows)


def excluded_rows(session: Session, job_id: str, target: int, size: int) -> np.ndarray | None:
    """(size,) bool: the pool rows of `target` never to select, or None when there are none."""
    indices = session.scalars(
        select(JobLeak.pool_index).where(
            JobLeak.job_id == job_id, JobLeak.target == target, JobLeak.excluded.is_(True)
        )
    ).all()
    if not indices:
        return None
    mask = np.zeros(size, dtype=bool)
    mask[np.asarray(indices, dtype=np.int64)] = True
    return mask


def _cursor(leak: JobLeak) -> str:
    return base64.urlsafe_b64encode(f"leak|{leak.pool_index}|{leak.id}".encode()).decode()


def _decode(cursor: str) -> tuple[int, int]:
    try:
        kind, pool_index, leak_id = base64.urlsafe_b64decode(cursor.encode()).decode().split("|")
        if kind != "leak":
            raise ValueError(kind)
        return int(pool_index), int(leak_id)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInput("cursor: not a cursor returned by GET /v1/jobs/{id}/leaks.") from exc


def as_item(leak: JobLeak) -> dict[str, Any]:
    """One leak as the API shows it (the shape /work/notes/leakage.md documents)."""
    return {
        "pool_index": leak.pool_index,
        "target": leak.target,
        "source": leak.source,
        "dataset": leak.dataset_id,
        "match_index": leak.match_index,
        "similarity": leak.similarity,
        "kind": leak.kind,
        "excluded": leak.excluded,
        "pool_preview": leak.pool_preview,
        "match_preview": leak.match_preview,
    }


def list_leaks(
    *,
    session: Session,
    tenant: Tenant,
    job_id: str,
    target: int = 0,
    limit: int = LEAKS_PAGE,
    cursor: str | None = None,
    excluded: bool | None = None,
) -> dict[str, Any]:
    """One page of a target's leaks in pool order, the next page's cursor and the totals."""
    job = get_job(session=session, tenant=tenant, job_id=job_id)
    check_target(job, target)
    where = [JobLeak.job_id == job.id, JobLeak.target == target]
    if excluded is not None:
        where.append(JobLeak.excluded.is_(excluded))
    query = select(JobLeak).where(*where)
    if cursor:
        pool_index, leak_id = _decode(cursor)
        query = query.where(
            or_(
                JobLeak.pool_index > pool_index,
                and_(JobLeak.pool_index == pool_index, JobLeak.id > leak_id),
            )
        )
    rows = list(session.scalars(query.order_by(JobLeak.pool_index, JobLeak.id).limit(limit + 1)))
    counts = session.execute(
        select(func.count(), func.count().filter(JobLeak.excluded.is_(True))).where(
            JobLeak.job_id == job.id, JobLeak.target == target
        )
    ).one()
    return {
        "items": [as_item(r) for r in rows[:limit]],
        "next_cursor": _cursor(rows[limit - 1]) if len(rows) > limit else None,
        "total": int(counts[0]),
        "excluded_total": int(counts[1]),
    }
