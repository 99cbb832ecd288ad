"""New selections from a job's stored scores: another budget, strategy or binning, no GPU."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.core.errors import Conflict, NotFound
from app.core.models import Job, JobStatus, Selection, Tenant, utcnow
from app.schemas import SelectionCreate
from app.services.jobs import check_target, get_job


def request_selection(
    *, session: Session, tenant: Tenant, job_id: str, body: SelectionCreate
) -> Selection:
    """A pending selection row; a worker on the select queue fills it in."""
    job = get_job(session=session, tenant=tenant, job_id=job_id)
    check_target(job, body.target)
    if job.status != JobStatus.SUCCEEDED:
        raise Conflict(f"Job '{job.id}' is {job.status}; new selections need its scores.")
    if job.method == "random":
        raise Conflict(f"Job '{job.id}' used the random method and stored no scores.")
    if body.budget >= 1 and body.budget > job.rows_total:
        raise Conflict(
            f"selection.budget {int(body.budget)} exceeds the pool's {job.rows_total} rows."
        )
    row = Selection(
        job_id=job.id,
        target=body.target,
        budget=body.budget,
        strategy=body.strategy,
        num_bins=body.num_bins,
        min_per_bin=body.min_per_bin,
        seed=job.seed if body.seed is None else body.seed,
        size=0,
        indices=b"",
        scores=b"",
        from_random=b"",
        is_default=False,
        status="pending",
        published_at=utcnow(),  # the route sends it right after the commit
    )
    session.add(row)
    session.flush()
    return row


def list_selections(*, session: Session, tenant: Tenant, job_id: str) -> list[Selection]:
    job = get_job(session=session, tenant=tenant, job_id=job_id)
    return list(
        session.scalars(
            select(Selection)
            .where(Selection.job_id == job.id)
            .order_by(Selection.target, Selection.created_at, Selection.id)
        )
    )


def get_selection(*, session: Session, tenant: Tenant, job_id: str, selection_id: str) -> Selection:
    job: Job = get_job(session=session, tenant=tenant, job_id=job_id)
    row = session.scalar(
        select(Selection).where(Selection.job_id == job.id, Selection.id == selection_id)
    )
    if row is None:
        raise NotFound(f"Selection '{selection_id}' does not exist for job '{job.id}'.")
    return row
