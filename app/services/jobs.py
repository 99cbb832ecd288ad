"""Jobs: create (idempotently), read, list, cancel; workers move them by conditional UPDATEs."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.core.errors import Conflict, InvalidInput, NotFound
from app.core.models import TERMINAL_STATUSES, Job, JobEvent, JobStatus, Tenant, utcnow
from app.schemas import JobCreate, JobError, JobRead, Progress
from app.services.datasets import resolve_reference


def request_hash(body: JobCreate) -> str:
    """The body's digest; `targets` counts (in order) but a single-target body hashes as before
    targets existed, so an Idempotency-Key retried across the upgrade still matches."""
    dumped = body.model_dump(mode="json")
    if dumped.get("targets") is None:
        dumped.pop("targets", None)
    canonical = json.dumps(dumped, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def target_dataset_ids(job: Job) -> list[str]:
    """The job's validation dataset ids in target order; K = len(...) (1 for most jobs)."""
    return list(job.validation_dataset_ids or [job.validation_dataset_id])


def check_target(job: Job, target: int) -> int:
    """`target` if the job has it, else a 404 naming the job's range (the schema allows any
    0..15: how many targets a job has is known only once it is found)."""
    k = len(target_dataset_ids(job))
    if not 0 <= target < k:
        valid = "0 (it has one target)" if k == 1 else f"0 to {k - 1} (it has {k} targets)"
        raise NotFound(f"target: job '{job.id}' has no target {target}; use {valid}.")
    return target


def _existing(session: Session, tenant: Tenant, key: str, digest: str) -> Job | None:
    job = session.scalar(select(Job).where(Job.tenant_id == tenant.id, Job.idempotency_key == key))
    if job is not None and job.request_hash != digest:
        raise Conflict(f"Idempotency-Key '{key}' was used with a different request body.")
    return job


def create_job(
    *,
    session: Session,
    settings: Settings,
    tenant: Tenant,
    body: JobCreate,
    idempotency_key: str | None,
) -> tuple[Job, bool]:
    """Insert a queued job. Returns (job, created); the same key and body return the same job."""
    digest = request_hash(body)
    if idempotency_key:
        if len(idempotency_key) > 200:
            raise InvalidInput("Idempotency-Key is longer than 200 characters.")
        found = _existing(session, tenant, idempotency_key, digest)
        if found is not None:
            return found, False
    pool = resolve_reference(
        session=session, settings=settings, tenant=tenant, ref=body.pool, field_name="pool"
    )
    refs = body.target_refs()
    validations = [
        resolve_reference(
            session=session,
            settings=settings,
            tenant=tenant,
            ref=ref,
            field_name="validation" if body.targets is None else f"targets[{k}]",
        )
        for k, ref in enumerate(refs)
    ]
    job = Job(
        tenant_id=tenant.id,
        idempotency_key=idempotency_key,
        request_hash=digest,
        pool_dataset_id=pool.id,
        validation_dataset_id=validations[0].id,
        validation_dataset_ids=[v.id for v in validations],
        model=body.model or settings.default_model,
        task=body.task,
        method=body.method,
        params={
            "tov": body.tov.model_dump(mode="json"),
            "selection": body.selection.model_dump(mode="json"),
            "max_length": body.max_length,
        },
        seed=body.seed,
        job_metadata=body.metadata,
        rows_total=pool.rows,
    )
    session.add(job)
    try:
        session.flush()
    except IntegrityError:  # a concurrent request with the same key won the race
        session.rollback()
        found = _existing(session, tenant, idempotency_key or "", digest)
        if found is None:
            raise
        return found, False
    session.add(JobEvent(job_id=job.id, kind="created", message="job accepted"))
    return job, True


def get_job(*, session: Session, tenant: Tenant, job_id: str) -> Job:
    job = session.scalar(select(Job).where(Job.id == job_id, Job.tenant_id == tenant.id))
    if job is None:
        raise NotFound(f"Job '{job_id}' does not exist.")
    return job


@dataclass(frozen=True)
class JobFilters:
    status: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    metadata: dict[str, str] = field(default_factory=dict)  # string values, exact match


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


def request_cancel(*, session: Session, tenant: Tenant, job_id: str) -> Job:
    """A queued job is cancelled at once; a running one stops at its next heartbeat."""
    job = get_job(session=session, tenant=tenant, job_id=job_id)
    if job.status in TERMINAL_STATUSES:
        return job
    session.execute(
        update(Job)
        .where(Job.id == job.id, Job.status == JobStatus.QUEUED)
        .values(status=JobStatus.CANCELLED, finished_at=utcnow(), cancel_requested=True)
    )
    session.execute(
        update(Job)
        .where(Job.id == job.id, Job.status == JobStatus.RUNNING)
        .values(cancel_requested=True)
    )
    session.add(JobEvent(job_id=job.id, kind="cancel_requested", message="cancel requested"))
    session.flush()
    session.refresh(job)
    return job


def eta_seconds(job: Job) -> float | None:
    if job.status != JobStatus.RUNNING or job.started_at is None or job.progress <= 0.01:
        return None
    started = (
        job.started_at if job.started_at.tzinfo else job.started_at.replace(tzinfo=utcnow().tzinfo)
    )
    elapsed = (utcnow() - started).total_seconds()
    return max(0.0, elapsed * (1 - job.progress) / job.progress)


def to_read(job: Job) -> JobRead:
    base = f"/v1/jobs/{job.id}"
    targets = target_dataset_ids(job)
    links = {"self": base, "selection": f"{base}/selection", "scores": f"{base}/scores"}
    for k in range(1, len(targets)):  # target 0 is the plain links above
        links[f"selection_{k}"] = f"{base}/selection?target={k}"
        links[f"scores_{k}"] = f"{base}/scores?target={k}"
    error = JobError(code=job.error_code, detail=job.error) if job.error else None
    return JobRead(
        id=job.id,
        status=job.status,
        progress=Progress(
            stage=job.stage,
            fraction=round(job.progress, 4),
            rows_done=job.rows_done,
            rows_total=job.rows_total,
            eta_seconds=eta_seconds(job),
            message=job.message,
        ),
        pool=job.pool_dataset_id,
        validation=job.validation_dataset_id,
        targets=targets,
        k=len(targets),
        model=job.model,
        task=job.task,
        method=job.method,
        params=job.params,
        seed=job.seed,
        metadata=job.job_metadata,
        attempt=job.attempt,
        error=error,
        stats=job.stats,
        created_at=job.created_at,
        started_at=job.started_at,
        finished_at=job.finished_at,
        links=links,
    )


def delete_job(*, session: Session, settings: Settings, tenant: Tenant, job_id: str) -> None:
    """Remove the job, its scores, selections, events and files. A running attempt then stops:
    its next conditional write finds no row."""
    job = get_job(session=session, tenant=tenant, job_id=job_id)
    session.execute(delete(Job).where(Job.id == job.id))
    session.flush()
    shutil.rmtree(Path(settings.artifact_root) / "jobs" / job.id, ignore_errors=True)
