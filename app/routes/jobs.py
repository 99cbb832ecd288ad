"""/v1/jobs: create, read, list, cancel, and download the results."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, Header, Query, Response
from fastapi.responses import StreamingResponse
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from app.core.auth import SessionDep, TenantDep
from app.core.config import get_settings
from app.core.db import get_sessionmaker
from app.core.errors import Conflict, InvalidInput
from app.core.limits import job_quota, rate_limit
from app.core.models import Dataset, JobEvent, JobStatus, Tenant, utcnow
from app.core.queue import publish_job, publish_reselect
from app.exporting import MEDIA_TYPES, ExportFormat, iter_export, iter_subset
from app.schemas import (
    MAX_TARGETS,
    JobCreate,
    JobList,
    JobRead,
    MetadataFilter,
    OptionalRfc3339,
    SelectionCreate,
    SelectionRead,
)
from app.services import jobs as service
from app.services import selections
from app.services.results import load_selection, read_scores

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=[Depends(rate_limit)])

FormatQuery = Annotated[ExportFormat, Query(alias="format")]
TargetQuery = Annotated[
    int | None,
    Query(
        ge=0,
        lt=MAX_TARGETS,
        description="which target (validation set) of a multi-target job, 0-based; default 0, "
        "or with selection_id the selection's own target",
    ),
]


def _name(job_id: str, target: int, what: str) -> str:
    """The download's file name; a multi-target job's later targets are named."""
    return f"{job_id}-{what}" if target == 0 else f"{job_id}-target{target}-{what}"


@router.post("", status_code=202, response_model=JobRead, dependencies=[Depends(job_quota)])
def create_job(
    body: JobCreate,
    response: Response,
    session: SessionDep,
    tenant: TenantDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> JobRead:
    job, created = service.create_job(
        session=session,
        settings=get_settings(),
        tenant=tenant,
        body=body,
        idempotency_key=idempotency_key,
    )
    session.commit()
    if created and publish_job(job.id):  # after commit: a worker always finds the row
        job.published_at = utcnow()
        session.commit()
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return service.to_read(job)


@router.get("", response_model=JobList)
def list_jobs(
    session: SessionDep,
    tenant: TenantDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    status: Annotated[JobStatus | None, Query()] = None,
    created_after: Annotated[
        OptionalRfc3339, Query(description="RFC 3339 with an offset, e.g. 2026-01-31T09:30:00Z")
    ] = None,
    created_before: Annotated[OptionalRfc3339, Query(description="exclusive; RFC 3339")] = None,
    metadata: Annotated[
        list[MetadataFilter] | None,
        Query(max_length=20, description="key:value, exact match; repeatable"),
    ] = None,
) -> JobList:
    pairs = [item.partition(":") for item in metadata or []]
    if any(not sep or not key for key, sep, _ in pairs):
        raise InvalidInput("metadata: each filter must look like key:value.")
    filters = service.JobFilters(
        status=status,
        created_after=created_after,
        created_before=created_before,
        metadata={key: value for key, _, value in pairs},
    )
    jobs, next_cursor = service.list_jobs(
        session=session, tenant=tenant, limit=limit, cursor=cursor, filters=filters
    )
    return JobList(items=[service.to_read(j) for j in jobs], next_cursor=next_cursor)


def _read_job(tenant: Tenant, job_id: str) -> JobRead:
    with get_sessionmaker()() as session:
        return service.to_read(service.get_job(session=session, tenant=tenant, job_id=job_id))


@router.get("/{job_id}", response_model=JobRead)
async def get_job(job_id: str, tenant: TenantDep) -> JobRead:
    # The polling hot path (L1): one thread hop for the one query, no request-scoped session.
    return await run_in_threadpool(_read_job, tenant, job_id)


@router.post("/{job_id}/cancel", response_model=JobRead)
def cancel_job(job_id: str, session: SessionDep, tenant: TenantDep) -> JobRead:
    job = service.request_cancel(session=session, tenant=tenant, job_id=job_id)
    session.commit()
    return service.to_read(job)


@router.delete("/{job_id}", status_code=204)
def delete_job(job_id: str, session: SessionDep, tenant: TenantDep) -> Response:
    service.delete_job(session=session, settings=get_settings(), tenant=tenant, job_id=job_id)
    session.commit()
    return Response(status_code=204)


@router.get("/{job_id}/events")
def job_events(job_id: str, session: SessionDep, tenant: TenantDep) -> list[dict[str, object]]:
    job = service.get_job(session=session, tenant=tenant, job_id=job_id)
    events = session.scalars(
        select(JobEvent).where(JobEvent.job_id == job.id).order_by(JobEvent.id)
    ).all()
    return [
        {"at": e.at.isoformat(), "kind": e.kind, "attempt": e.attempt, "message": e.message}
        for e in events
    ]


def _download(
    columns: dict[str, np.ndarray | list[object]], fmt: ExportFormat, name: str
) -> StreamingResponse:
    return StreamingResponse(
        iter_export(columns, fmt),
        media_type=MEDIA_TYPES[fmt],
        headers={"Content-Disposition": f'attachment; filename="{name}.{fmt}"'},
    )


@router.get("/{job_id}/selection")
def download_selection(
    job_id: str,
    session: SessionDep,
    tenant: TenantDep,
    fmt: FormatQuery = "jsonl",
    selection_id: Annotated[str | None, Query(max_length=60)] = None,
    target: TargetQuery = None,
) -> StreamingResponse:
    """One row per selected pool row: index, score, source (`score` or `random`)."""
    job = service.get_job(session=session, tenant=tenant, job_id=job_id)
    chosen = load_selection(session=session, job=job, selection_id=selection_id, target=target)
    sources = np.where(chosen.from_random, "random", "score")
    return _download(
        {"index": chosen.indices, "score": chosen.scores, "source": sources},
        fmt,
        _name(job.id, chosen.target, "selection"),
    )


@router.get("/{job_id}/scores")
def download_scores(
    job_id: str,
    session: SessionDep,
    tenant: TenantDep,
    fmt: FormatQuery = "jsonl",
    target: TargetQuery = None,
) -> StreamingResponse:
    """Every pool row's score for one target (null for the base subset, which is not scored)
    and its length."""
    job = service.get_job(session=session, tenant=tenant, job_id=job_id)
    target = target or 0
    # Checks the target exists and the job succeeded.
    load_selection(session=session, job=job, selection_id=None, target=target)
    scores, lengths = read_scores(session=session, job_id=job.id, target=target)
    return _download(
        {"index": np.arange(len(scores)), "score": scores, "length": lengths},
        fmt,
        _name(job.id, target, "scores"),
    )


@router.get("/{job_id}/subset")
def download_subset(
    job_id: str,
    session: SessionDep,
    tenant: TenantDep,
    fmt: FormatQuery = "jsonl",
    selection_id: Annotated[str | None, Query(max_length=60)] = None,
    target: TargetQuery = None,
) -> StreamingResponse:
    """The selected pool rows themselves, in the pool's own row format, in pool order."""
    job = service.get_job(session=session, tenant=tenant, job_id=job_id)
    chosen = load_selection(session=session, job=job, selection_id=selection_id, target=target)
    pool = session.get(Dataset, job.pool_dataset_id)
    if pool is None or not Path(pool.uri).is_file():
        raise Conflict(f"The pool of job '{job.id}' is no longer available.")
    name = _name(job.id, chosen.target, "subset")
    return StreamingResponse(
        iter_subset(Path(pool.uri), chosen.indices, fmt),
        media_type=MEDIA_TYPES[fmt],
        headers={"Content-Disposition": f'attachment; filename="{name}.{fmt}"'},
    )


@router.post("/{job_id}/selections", status_code=202, response_model=SelectionRead)
def create_selection(
    job_id: str, body: SelectionCreate, session: SessionDep, tenant: TenantDep
) -> SelectionRead:
    """A new selection from the stored scores (another budget, strategy or binning) of one target
    (`target`, default 0); no GPU."""
    row = selections.request_selection(session=session, tenant=tenant, job_id=job_id, body=body)
    session.commit()
    publish_reselect(row.id)
    return SelectionRead.model_validate(row)


@router.get("/{job_id}/selections", response_model=list[SelectionRead])
def list_selections(job_id: str, session: SessionDep, tenant: TenantDep) -> list[SelectionRead]:
    rows = selections.list_selections(session=session, tenant=tenant, job_id=job_id)
    return [SelectionRead.model_validate(r) for r in rows]


@router.get("/{job_id}/selections/{selection_id}", response_model=SelectionRead)
def get_selection(
    job_id: str, selection_id: str, session: SessionDep, tenant: TenantDep
) -> SelectionRead:
    row = selections.get_selection(
        session=session, tenant=tenant, job_id=job_id, selection_id=selection_id
    )
    return SelectionRead.model_validate(row)
