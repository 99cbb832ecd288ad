"""/v1/jobs: create, read, list, cancel and delete jobs, and read their events."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from app.core.auth import SessionDep, TenantDep
from app.core.config import get_settings
from app.core.limits import job_quota, rate_limit
from app.core.models import JobStage, JobStatus
from app.core.queue import publish_webhook_delivery
from app.datasets import ingest
from app.jobs import dry_run, listing, service
from app.jobs.schemas import DryRunRead, JobCreate, JobList, JobRead
from app.schemas import MetadataFilter, OptionalRfc3339

router = APIRouter(prefix="/v1/jobs", tags=["jobs"], dependencies=[Depends(rate_limit)])


@router.post(
    "",
    status_code=202,
    response_model=JobRead,
    dependencies=[Depends(job_quota)],
    responses={200: {"model": DryRunRead, "description": "`dry_run: true`: the estimate, no job"}},
)
def create_job(
    body: JobCreate,
    response: Response,
    session: SessionDep,
    tenant: TenantDep,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> JobRead | JSONResponse:
    if body.dry_run:  # nothing written, nothing queued (app/jobs/dry_run.py)
        settings = get_settings()
        answer = dry_run.estimate(session=session, settings=settings, tenant=tenant, body=body)
        return JSONResponse(DryRunRead(**answer).model_dump(mode="json"), status_code=200)
    job, created = service.create_job(
        session=session,
        settings=get_settings(),
        tenant=tenant,
        body=body,
        idempotency_key=idempotency_key,
    )
    session.commit()
    if created and service.enqueue(job):  # after the commit: a worker always finds the row
        session.commit()
    elif created and job.stage == JobStage.WAITING_FOR_DATASETS:
        named = {body.pool, *body.target_refs()}  # ids named in the body are validated already
        ingest.start(d for d in service.waiting_datasets(session, job) if d not in named)
        released = ingest.settle_waiting_jobs(session, tenant.id)  # settled meanwhile?
        session.commit()
        ingest.send(released)
        session.refresh(job)
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return service.created_read(session, job)


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
    filters = listing.JobFilters(
        status=status,
        created_after=created_after,
        created_before=created_before,
        metadata=listing.metadata_filters(metadata),
    )
    jobs, next_cursor = listing.list_jobs(
        session=session, tenant=tenant, limit=limit, cursor=cursor, filters=filters
    )
    return JobList(items=[service.to_read(j) for j in jobs], next_cursor=next_cursor)


@router.get("/{job_id}", response_model=JobRead)
async def get_job(job_id: str, tenant: TenantDep) -> JobRead:
    # The polling hot path (L1): one thread hop for the one query, no request-scoped session.
    return await run_in_threadpool(service.read_job, tenant=tenant, job_id=job_id)


@router.post("/{job_id}/cancel", response_model=JobRead)
def cancel_job(job_id: str, session: SessionDep, tenant: TenantDep) -> JobRead:
    """A queued job answers `cancelled`; a running one `cancelling` until its worker stops it."""
    job = service.request_cancel(session=session, tenant=tenant, job_id=job_id)
    session.commit()
    if job.status == JobStatus.CANCELLED:
        publish_webhook_delivery("job cancelled")  # after the commit; the reaper also asks
    return service.to_read(job)


@router.delete("/{job_id}", status_code=204)
def delete_job(job_id: str, session: SessionDep, tenant: TenantDep) -> Response:
    service.delete_job(session=session, settings=get_settings(), tenant=tenant, job_id=job_id)
    session.commit()
    return Response(status_code=204)


@router.get("/{job_id}/events")
def job_events(
    job_id: str,
    session: SessionDep,
    tenant: TenantDep,
    after: Annotated[
        int,
        Query(ge=0, description="only events with a larger `id`: the last `id` of the page before"),
    ] = 0,
    limit: Annotated[
        int,
        Query(
            ge=1,
            le=service.MAX_EVENTS_PAGE,
            description=f"at most this many events (default {service.EVENTS_PAGE}, "
            f"at most {service.MAX_EVENTS_PAGE}); a shorter page is the last",
        ),
    ] = service.EVENTS_PAGE,
) -> list[dict[str, object]]:
    """The job's events, oldest first: created, claimed, stage changes (resolve, train, score,
    select), re-sent, cancel requested, succeeded/failed/cancelled. Page with `after`/`limit`."""
    return service.list_events(
        session=session, tenant=tenant, job_id=job_id, after=after, limit=limit
    )
