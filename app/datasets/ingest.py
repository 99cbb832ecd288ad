"""Remote references are fetched and validated after the answer, in a small thread pool of the
API process, never inside a database transaction nor on the event loop (issue 15, defect 4).

A dataset row is `validating` (its `uri` still the reference) until the thread records `ready`
or `failed`. Jobs that refer to it wait (queued, stage `waiting_for_datasets`, not sent to the
workers, so they hold no GPU); each settled dataset releases its tenant's waiting jobs: sent to
the workers when all their datasets are ready, failed (`invalid_dataset`) when one failed.

If the API process dies mid-validation, the row stays `validating`: every API process runs a
sweeper (started by the app's lifespan) that takes over a row whose run began more than
STALE_SECONDS ago (a conditional UPDATE: one process wins) and validates it again, at most
MAX_ATTEMPTS times; it also releases waiting jobs whose datasets settled meanwhile.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from app.core.artifacts import remove_dataset
from app.core.config import Settings, get_settings
from app.core.db import get_sessionmaker
from app.core.errors import ApiError
from app.core.models import (
    Dataset,
    DatasetStatus,
    Job,
    JobEvent,
    JobStage,
    JobStatus,
    Tenant,
    utcnow,
)
from app.core.queue import publish_job
from app.datasets.quota import check_storage
from app.datasets.references import failed_detail
from app.datasets.service import Prepared, prepare_reference
from app.webhooks.outbox import job_ended

logger = logging.getLogger(__name__)

STALE_SECONDS = 900.0  # a run older than this is taken to be dead (fetches end within 120 s)
MAX_ATTEMPTS = 3  # validation runs of one dataset (each take-over counts)
SWEEP_SECONDS = 30.0  # how often each API process looks for stale runs and waiting jobs
WORKERS = 4  # concurrent validations per API process

_pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="ingest")


def start(dataset_ids: Iterable[str]) -> None:
    """Validate these committed `validating` rows in the background."""
    for dataset_id in dataset_ids:
        _pool.submit(_guarded, dataset_id)


def _guarded(dataset_id: str) -> None:
    try:
        validate_now(dataset_id, get_settings())
    except Exception:  # the sweeper retries it once it is stale
        logger.exception("validating dataset %s crashed", dataset_id)


def validate_now(dataset_id: str, settings: Settings) -> None:
    """Fetch and validate one `validating` row, then record the outcome and release waiting
    jobs. Sessions are held only for the short reads and writes, never across the fetch."""
    sessions = get_sessionmaker()
    with sessions() as session:
        dataset = session.get(Dataset, dataset_id)
        if dataset is None or dataset.status != DatasetStatus.VALIDATING:
            return
        tenant = session.get(Tenant, dataset.tenant_id)
        assert tenant is not None
        run, uri, name = dataset.validation_started_at, dataset.uri, dataset.name
    prepared: Prepared | None = None
    refusal: ApiError | None = None
    try:
        prepared = prepare_reference(
            uri, settings=settings, tenant=tenant, name=name, check_quota=_quota(settings, tenant)
        )
    except ApiError as exc:
        refusal = exc
    except Exception as exc:
        logger.exception("validating dataset %s failed unexpectedly", dataset_id)
        refusal = ApiError(f"internal error while fetching ({type(exc).__name__})")
    with sessions() as session:
        recorded = _record(session, dataset_id, run, prepared, refusal)
        to_send = settle_waiting_jobs(session, tenant.id)
        session.commit()
    if not recorded and prepared is not None and prepared.uploaded:
        remove_dataset(prepared.uri, settings)  # another run took over: its copy counts
    send(to_send)


def _quota(settings: Settings, tenant: Tenant) -> Callable[[int], None]:
    """The storage quota check for a copy's size, in a short session of its own."""

    def check(size: int) -> None:
        with get_sessionmaker()() as session:
            check_storage(session, settings, tenant, size)

    return check


def _record(
    session: Session,
    dataset_id: str,
    run: Any,
    prepared: Prepared | None,
    refusal: ApiError | None,
) -> bool:
    """Write the outcome if this run still owns the row (no sweeper took it over)."""
    if prepared is not None:
        summary = prepared.summary
        values: dict[str, Any] = {
            "status": DatasetStatus.READY.value,
            "uri": prepared.uri,
            "uploaded": prepared.uploaded,
            "file_format": summary.file_format,
            "row_format": summary.row_format,
            "rows": summary.rows,
            "size_bytes": summary.size_bytes,
            "sha256": summary.sha256,
            "columns": summary.columns,
        }
    else:
        assert refusal is not None
        values = {
            "status": DatasetStatus.FAILED.value,
            "error": refusal.detail,
            "errors": refusal.errors,
        }
    changed = session.execute(
        update(Dataset)
        .where(
            Dataset.id == dataset_id,
            Dataset.status == DatasetStatus.VALIDATING,
            Dataset.validation_started_at == run,
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    ).rowcount  # type: ignore[attr-defined]  # an UPDATE gives a CursorResult
    return bool(changed)


def _job_refs(job: Job) -> list[tuple[str, str]]:
    """(field name, dataset id) for each dataset the job reads, pool first."""
    targets = list(job.validation_dataset_ids or [job.validation_dataset_id])
    names = ["validation"] if len(targets) == 1 else [f"targets[{k}]" for k in range(len(targets))]
    decontaminate = list((job.params or {}).get("decontaminate_against") or [])
    return [
        ("pool", job.pool_dataset_id),
        *zip(names, targets, strict=True),
        *((f"decontaminate_against[{i}]", d) for i, d in enumerate(decontaminate)),
    ]


def settle_waiting_jobs(session: Session, tenant_id: str) -> list[str]:
    """Release the tenant's waiting jobs whose datasets all settled: ready ones go back to
    plain `queued` (returned, to send after the commit), a failed dataset fails its job."""
    jobs = session.scalars(
        select(Job)
        .where(
            Job.tenant_id == tenant_id,
            Job.status == JobStatus.QUEUED,
            Job.stage == JobStage.WAITING_FOR_DATASETS,
        )
        .with_for_update(skip_locked=True)
    ).all()
    if not jobs:
        return []
    ids = {dataset_id for job in jobs for _, dataset_id in _job_refs(job)}
    datasets = {d.id: d for d in session.scalars(select(Dataset).where(Dataset.id.in_(ids)))}
    released = []
    for job in jobs:
        refs = [(field, datasets[dataset_id]) for field, dataset_id in _job_refs(job)]
        failed = [(field, d) for field, d in refs if d.status == DatasetStatus.FAILED]
        if failed:
            field, dataset = failed[0]
            job.status, job.finished_at, job.stage = JobStatus.FAILED, utcnow(), None
            job.error_code = "invalid_dataset"
            job.error = f"{field}: {failed_detail(dataset)}"
            session.add(JobEvent(job_id=job.id, kind="failed", message=job.error[:2000]))
            job_ended(session, job.id)
        elif all(d.status == DatasetStatus.READY for _, d in refs):
            job.stage, job.message = None, None
            job.rows_total = refs[0][1].rows
            session.add(JobEvent(job_id=job.id, kind="datasets_ready", message="datasets ready"))
            released.append(job.id)
    session.flush()
    return released


def send(job_ids: list[str]) -> None:
    """Send released jobs to the workers; one not sent keeps `published_at` empty, so the
    workers' reaper sends it."""
    sent = [job_id for job_id in job_ids if publish_job(job_id)]
    if not sent:
        return
    with get_sessionmaker()() as session:
        session.execute(update(Job).where(Job.id.in_(sent)).values(published_at=utcnow()))
        session.commit()


def resume_stale(settings: Settings) -> list[str]:
    """Take over `validating` rows whose run began STALE_SECONDS ago (its process died), fail
    those past MAX_ATTEMPTS, release waiting jobs that can go; returns the rows to validate."""
    with get_sessionmaker()() as session:
        taken = _take_over(session)
        session.commit()
        tenants = session.scalars(
            select(Job.tenant_id)
            .where(Job.status == JobStatus.QUEUED, Job.stage == JobStage.WAITING_FOR_DATASETS)
            .distinct()
        ).all()
        to_send = [job for tenant in tenants for job in settle_waiting_jobs(session, tenant)]
        session.commit()
    send(to_send)
    return taken


def _take_over(session: Session) -> list[str]:
    """Restart the stale runs' clocks (a conditional UPDATE: one process wins each row)."""
    now = utcnow()
    stale = session.execute(
        select(Dataset.id, Dataset.validation_started_at, Dataset.validation_attempts)
        .where(
            Dataset.status == DatasetStatus.VALIDATING,
            Dataset.validation_started_at < now - timedelta(seconds=STALE_SECONDS),
        )
        .limit(50)
    ).all()
    taken = []
    for dataset_id, started, attempts in stale:
        values: dict[str, Any] = {"validation_started_at": now, "validation_attempts": attempts + 1}
        if attempts >= MAX_ATTEMPTS:
            values = {
                "status": DatasetStatus.FAILED.value,
                "error": f"validation was interrupted {attempts} times (the API process "
                "stopped while fetching it); register the reference again",
            }
        changed = session.execute(
            update(Dataset)
            .where(Dataset.id == dataset_id, Dataset.validation_started_at == started)
            .values(**values)
        ).rowcount  # type: ignore[attr-defined]  # an UPDATE gives a CursorResult
        if changed and attempts < MAX_ATTEMPTS:
            taken.append(dataset_id)
    return taken


def _sweep(stop: threading.Event) -> None:
    while not stop.wait(SWEEP_SECONDS):
        try:
            start(resume_stale(get_settings()))
        except Exception:
            logger.warning("dataset sweep failed", exc_info=True)


@asynccontextmanager
async def lifespan(_: object) -> AsyncIterator[None]:
    """The app's lifespan: the stale-validation sweeper runs while the API does."""
    stop = threading.Event()
    threading.Thread(target=_sweep, args=(stop,), name="ingest-sweeper", daemon=True).start()
    try:
        yield
    finally:
        stop.set()
