"""The reaper: recovers jobs from Postgres, not from the broker (RELIABILITY.md, design item 5).

- a running job whose lease expired (its worker died) is sent again, or failed past the cap;
- a queued job never published (broker down at submit) or lost by the broker is sent again.
Duplicated sends are harmless: they die at the claim.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from app.config import Settings, get_settings
from app.db import get_sessionmaker
from app.models import Job, JobEvent, JobStatus, Selection, utcnow
from app.queue import publish_job, publish_reselect

logger = logging.getLogger(__name__)


def reap_once(session: Session, settings: Settings) -> dict[str, int]:
    """One sweep. Returns counts of jobs re-sent and failed."""
    now = utcnow()
    stale = now - timedelta(seconds=settings.republish_seconds)
    lost_lease = and_(
        Job.status == JobStatus.RUNNING,
        Job.lease_expires_at < now,
        or_(
            Job.published_at.is_(None),
            Job.published_at < now - timedelta(seconds=settings.lease_seconds),
        ),
    )
    unpublished = and_(
        Job.status == JobStatus.QUEUED, or_(Job.published_at.is_(None), Job.published_at < stale)
    )
    jobs = session.scalars(
        select(Job)
        .where(or_(lost_lease, unpublished))
        .order_by(Job.created_at)
        .limit(100)
        .with_for_update(skip_locked=True)
    ).all()
    counts = {"resent": 0, "failed": 0}
    for job in jobs:
        if job.status == JobStatus.RUNNING and job.attempt >= settings.max_attempts:
            job.status, job.finished_at = JobStatus.FAILED, now
            job.error_code = "attempts_exhausted"
            job.error = (
                f"gave up after {job.attempt} attempts: the worker was lost each time "
                "(out of memory or killed?)"
            )
            session.add(
                JobEvent(job_id=job.id, kind="failed", attempt=job.attempt, message=job.error)
            )
            counts["failed"] += 1
            continue
        job.published_at = now
        session.add(
            JobEvent(
                job_id=job.id,
                kind="republished",
                attempt=job.attempt,
                message="re-sent by the reaper",
            )
        )
        counts["resent"] += 1
    session.commit()
    for job in jobs:
        if job.status != JobStatus.FAILED and not publish_job(job.id):
            logger.warning("reaper could not re-send job %s", job.id)
    counts["selections"] = _resend_pending_selections(session, now)
    if any(counts.values()):
        logger.info("reaper: %s", counts)
    return counts


def _resend_pending_selections(session: Session, now: datetime) -> int:
    """Re-selections whose message was lost: pending for a minute means lost (they take ms)."""
    ids = session.scalars(
        select(Selection.id)
        .where(Selection.status == "pending", Selection.created_at < now - timedelta(seconds=60))
        .limit(100)
    ).all()
    for selection_id in ids:
        publish_reselect(selection_id)
    return len(ids)


def _loop(stop: threading.Event) -> None:
    settings = get_settings()
    sessions = get_sessionmaker()
    while not stop.wait(settings.reaper_seconds):
        try:
            with sessions() as session:
                reap_once(session, settings)
        except Exception:
            logger.warning("reaper sweep failed", exc_info=True)


def start_reaper_thread() -> threading.Event:
    stop = threading.Event()
    threading.Thread(target=_loop, args=(stop,), name="reaper", daemon=True).start()
    return stop
