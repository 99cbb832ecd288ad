"""Jobs: create (idempotently), read, cancel, delete, events; workers move them by conditional
UPDATEs. Services only flush: the request owns the transaction."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from sqlalchemy import case, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.catalog.service import require_known_model
from app.core.artifacts import artifact_store, job_key
from app.core.config import Settings
from app.core.db import get_sessionmaker
from app.core.errors import Conflict, InvalidInput, NotFound, job_error_code
from app.core.models import (
    TERMINAL_STATUSES,
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
from app.datasets.references import prepare_local_refs, resolve_reference
from app.jobs.schemas import (
    JobCreate,
    JobError,
    JobNotify,
    JobRead,
    LeakageParams,
    Progress,
    VerifyRead,
)
from app.webhooks.outbox import job_ended
from app.webhooks.service import create_job_endpoint, job_endpoint
from app.webhooks.urls import check_receiver


def _later_defaults() -> dict[str, object]:
    """Fields added after the first release, at the value a body that omits them gets."""
    return {
        "targets": None,
        "precision": "auto",
        "gradient_checkpointing": "auto",
        "notify_url": None,
        "dry_run": False,
        "decontaminate_against": [],
        "leakage": LeakageParams().model_dump(mode="json"),
        "verify": None,
    }


LATER_TOV_DEFAULTS = {"train_tokens_per_micro_batch": 4096}


def request_hash(body: JobCreate) -> str:
    """The body's digest. A field added after the first release counts only when it differs
    from its default, so an Idempotency-Key retried across an upgrade still matches (`targets`
    counts in order when given)."""
    dumped = body.model_dump(mode="json")
    for name, default in _later_defaults().items():
        if name in dumped and dumped[name] == default:
            del dumped[name]
    tov = dumped.get("tov", {})
    for name, default in LATER_TOV_DEFAULTS.items():
        if tov.get(name) == default:
            del tov[name]
    canonical = json.dumps(dumped, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def target_dataset_ids(job: Job) -> list[str]:
    """The job's validation dataset ids in target order; K = len(...) (1 for most jobs)."""
    return list(job.validation_dataset_ids or [job.validation_dataset_id])


def decontaminate_ids(job: Job) -> list[str]:
    """The job's decontamination datasets (`decontaminate_against`), in the order named."""
    return list(job.params.get("decontaminate_against") or [])


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
    require_known_model(body.model or settings.default_model, settings)  # 422, not a late fail
    if body.notify_url is not None:  # the SSRF rules, before anything is written
        check_receiver(body.notify_url, settings, field="notify_url")
    job = _new_job(session=session, settings=settings, tenant=tenant, body=body)
    job.idempotency_key, job.request_hash = idempotency_key, digest
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
    if body.notify_url is not None:
        endpoint = create_job_endpoint(
            session=session, tenant_id=tenant.id, job_id=job.id, url=body.notify_url
        )
        job.params = {**job.params, "notify": {"url": endpoint.url, "webhook_id": endpoint.id}}
    return job, True


def _new_job(*, session: Session, settings: Settings, tenant: Tenant, body: JobCreate) -> Job:
    """The job row for `body`, its dataset references resolved (pool first, then each target)."""
    refs = body.target_refs()
    named = [("pool", body.pool)] + [
        ("validation" if body.targets is None else f"targets[{k}]", ref)
        for k, ref in enumerate(refs)
    ]
    named += [(f"decontaminate_against[{i}]", r) for i, r in enumerate(body.decontaminate_against)]
    # file:// references are validated first, with no transaction open; remote ones are added
    # `validating` and fetched after the commit (app.datasets.ingest): the job waits for them.
    prepared = prepare_local_refs(session=session, settings=settings, tenant=tenant, refs=named)
    pool, *resolved = [
        resolve_reference(
            session=session,
            settings=settings,
            tenant=tenant,
            ref=ref,
            field_name=field_name,
            prepared=ready,
        )
        for (field_name, ref), ready in zip(named, prepared, strict=True)
    ]
    validations, decontaminate = resolved[: len(refs)], resolved[len(refs) :]
    waiting = [d.id for d in (pool, *resolved) if d.status == DatasetStatus.VALIDATING]
    return Job(
        stage=JobStage.WAITING_FOR_DATASETS if waiting else None,
        message=f"waiting for datasets {', '.join(waiting)}" if waiting else None,
        tenant_id=tenant.id,
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
            "precision": body.precision,
            "gradient_checkpointing": body.gradient_checkpointing,
            **_leakage_params(body, [d.id for d in decontaminate]),
            **({"verify": body.verify.model_dump(mode="json")} if body.verify else {}),
        },
        seed=body.seed,
        job_metadata=body.metadata,
        rows_total=pool.rows,
    )


def _leakage_params(body: JobCreate, decontaminate: list[str]) -> dict[str, object]:
    """The leakage check's stored settings: only what the body set (older jobs have none)."""
    params: dict[str, object] = {}
    if decontaminate:
        params["decontaminate_against"] = decontaminate
    if body.leakage != LeakageParams():
        params["leakage"] = body.leakage.model_dump(mode="json")
    return params


def waiting_datasets(session: Session, job: Job) -> list[str]:
    """The `validating` datasets a waiting job reads (none: it may be sent)."""
    if job.stage != JobStage.WAITING_FOR_DATASETS:
        return []
    ids = {job.pool_dataset_id, *target_dataset_ids(job), *decontaminate_ids(job)}
    return list(
        session.scalars(
            select(Dataset.id).where(
                Dataset.id.in_(ids), Dataset.status == DatasetStatus.VALIDATING
            )
        )
    )


def enqueue(job: Job) -> bool:
    """Send a committed job to the workers (after the commit, so a worker always finds the row);
    stamps `published_at` when sent. True when sent: the stamp then needs a commit. A job
    waiting for its datasets is not sent: app.datasets.ingest sends it once they are ready."""
    if job.stage == JobStage.WAITING_FOR_DATASETS:
        return False
    if not publish_job(job.id):
        return False
    job.published_at = utcnow()
    return True


def get_job(*, session: Session, tenant: Tenant, job_id: str) -> Job:
    job = session.scalar(select(Job).where(Job.id == job_id, Job.tenant_id == tenant.id))
    if job is None:
        raise NotFound(f"Job '{job_id}' does not exist.")
    return job


def read_job(*, tenant: Tenant, job_id: str) -> JobRead:
    """The job as the API shows it, in a session of its own: the polling hot path (L1) needs
    one thread hop for the one query and no request-scoped session."""
    with get_sessionmaker()() as session:
        return to_read(get_job(session=session, tenant=tenant, job_id=job_id))


EVENTS_PAGE, MAX_EVENTS_PAGE = 100, 1000  # GET /v1/jobs/{id}/events: default and largest `limit`


def list_events(
    *, session: Session, tenant: Tenant, job_id: str, after: int = 0, limit: int = EVENTS_PAGE
) -> list[dict[str, object]]:
    """The job's events with an id above `after`, oldest first, at most `limit` of them: the next
    page starts after the last event's `id`; a page shorter than `limit` is the last."""
    job = get_job(session=session, tenant=tenant, job_id=job_id)
    events = session.scalars(
        select(JobEvent)
        .where(JobEvent.job_id == job.id, JobEvent.id > after)
        .order_by(JobEvent.id)
        .limit(limit)
    ).all()
    return [
        {
            "id": e.id,
            "at": e.at.isoformat(),
            "kind": e.kind,
            "attempt": e.attempt,
            "message": e.message,
        }
        for e in events
    ]


def request_cancel(*, session: Session, tenant: Tenant, job_id: str) -> Job:
    """A queued job is cancelled at once (no worker holds it); a running one is `cancelling`
    until its attempt stops at its next heartbeat, then `cancelled` (the reaper settles it if
    the worker died). One UPDATE, so a reaper re-queueing the job meanwhile cannot lose it."""
    job = get_job(session=session, tenant=tenant, job_id=job_id)
    if job.status in TERMINAL_STATUSES or job.status == JobStatus.CANCELLING:
        return job
    queued = Job.status == JobStatus.QUEUED
    changed = session.execute(
        update(Job)
        .where(Job.id == job.id, Job.status.in_((JobStatus.QUEUED, JobStatus.RUNNING)))
        .values(
            cancel_requested=True,
            status=case((queued, JobStatus.CANCELLED.value), else_=JobStatus.CANCELLING.value),
            finished_at=case((queued, utcnow()), else_=Job.finished_at),
        )
    ).rowcount  # type: ignore[attr-defined]  # an UPDATE gives a CursorResult
    if changed:
        session.add(JobEvent(job_id=job.id, kind="cancel_requested", message="cancel requested"))
        job_ended(session, job.id)  # a queued job is cancelled now: its event (none if cancelling)
    session.flush()
    session.refresh(job)
    return job


def created_read(session: Session, job: Job) -> JobRead:
    """The job as the answer that created it (or its idempotent replay) shows it: with the
    notify_url endpoint's signing secret, which no other answer carries."""
    read = to_read(job)
    if read.notify is not None:
        endpoint = job_endpoint(session, job.id)
        if endpoint is not None:
            read.notify.secret = endpoint.secret
    return read


def eta_seconds(job: Job) -> float | None:
    if job.status != JobStatus.RUNNING or job.started_at is None or job.progress <= 0.01:
        return None
    started = (
        job.started_at if job.started_at.tzinfo else job.started_at.replace(tzinfo=utcnow().tzinfo)
    )
    elapsed = (utcnow() - started).total_seconds()
    return max(0.0, elapsed * (1 - job.progress) / job.progress)


# JobRead's fields that are the job row's columns of the same name.
COPIED_FIELDS: tuple[str, ...] = ("id", "status", "model", "task", "method", "params", "seed")
COPIED_FIELDS += ("attempt", "stats", "created_at", "started_at", "finished_at")


def to_read(job: Job) -> JobRead:
    base = f"/v1/jobs/{job.id}"
    targets = target_dataset_ids(job)
    links = {"self": base, "selection": f"{base}/selection", "scores": f"{base}/scores"}
    links["leaks"] = f"{base}/leaks"
    for k in range(1, len(targets)):  # target 0 is the plain links above
        links[f"selection_{k}"] = f"{base}/selection?target={k}"
        links[f"scores_{k}"] = f"{base}/scores?target={k}"
    error = JobError(code=job_error_code(job.error_code), detail=job.error) if job.error else None
    progress = Progress(
        stage=job.stage,
        fraction=round(job.progress, 4),
        rows_done=job.rows_done,
        rows_total=job.rows_total,
        eta_seconds=eta_seconds(job),
        message=job.message,
    )
    copied = {name: getattr(job, name) for name in COPIED_FIELDS}
    return JobRead(
        **copied,
        progress=progress,
        pool=job.pool_dataset_id,
        validation=job.validation_dataset_id,
        targets=targets,
        k=len(targets),
        metadata=job.job_metadata,
        error=error,
        links=links,
        leak_count=job.leak_count or 0,
        notify=JobNotify(**job.params["notify"]) if job.params.get("notify") else None,
        verify=verify_read(job),
    )


def verify_read(job: Job) -> VerifyRead | None:
    """The job's `verify`: the request, plus the report (or its error) once published."""
    asked = job.params.get("verify")
    if not asked:
        return None
    report = {k: v for k, v in (job.verify_report or {}).items() if k in VerifyRead.model_fields}
    return VerifyRead(**{**report, **asked})


def delete_job(*, session: Session, settings: Settings, tenant: Tenant, job_id: str) -> None:
    """Remove the job, its scores, selections, events and files. A running attempt then stops:
    its next conditional write finds no row."""
    job = get_job(session=session, tenant=tenant, job_id=job_id)
    session.execute(delete(Job).where(Job.id == job.id))
    session.flush()
    shutil.rmtree(Path(settings.artifact_root) / "jobs" / job.id, ignore_errors=True)
    artifact_store(settings).delete_tree(job_key(job.id))  # staged rounds and shards, if shared
