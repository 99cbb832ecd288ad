"""The progress watchdog: an attempt that stops making progress, or runs too long, is ended.

The heartbeat renews the lease whatever the engine does, so without this a hung engine (a
deadlocked data loader, a stuck kernel) would hold its job `running` forever. The heartbeat
thread asks the watchdog at every beat:
- no progress change for `progress_timeout_seconds` (TOV_PROGRESS_TIMEOUT_SECONDS): the attempt is
  ended and the job re-queued for another attempt, or failed (`stalled`) past `max_attempts`;
- an attempt running longer than `max_run_seconds` (TOV_MAX_RUN_SECONDS): the job fails
  (`run_timeout`); another attempt would run as long.
The verdict is written by a conditional UPDATE that carries the attempt's ownership, so the
attempt can no longer write anything. An engine that still polls `should_cancel` stops by
itself; one that is truly hung has its process ended after a grace period (exit_if_hung).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from app.core.config import Settings
from app.core.models import Job, JobEvent, JobStatus, utcnow
from app.webhooks.outbox import job_ended

logger = logging.getLogger(__name__)

STALLED, RUN_TIMEOUT = "stalled", "run_timeout"


@dataclass(frozen=True)
class Verdict:
    """Why the watchdog ends an attempt; `retry`: another attempt may succeed."""

    code: str
    detail: str
    retry: bool


class Watchdog:
    """Tracks the attempt's last progress change and its start (monotonic clock)."""

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        self.progress_timeout = settings.progress_timeout_seconds
        self.max_run = settings.max_run_seconds
        self.clock = clock
        self.started = self.last_progress = clock()

    def touch(self) -> None:
        """The attempt's progress changed (called by its progress writer)."""
        self.last_progress = self.clock()

    def check(self) -> Verdict | None:
        """A verdict when the attempt must end, else None."""
        now = self.clock()
        if self.max_run > 0 and now - self.started > self.max_run:
            detail = (
                f"the attempt ran longer than the maximum run time of {self.max_run:g} s "
                "(TOV_MAX_RUN_SECONDS)"
            )
            return Verdict(RUN_TIMEOUT, detail, retry=False)
        if self.progress_timeout > 0 and now - self.last_progress > self.progress_timeout:
            detail = (
                f"the engine reported no progress for {self.progress_timeout:g} s "
                "(TOV_PROGRESS_TIMEOUT_SECONDS): hung?"
            )
            return Verdict(STALLED, detail, retry=True)
        return None


def end_attempt(
    session: Session,
    *,
    owned: ColumnElement[bool],
    job_id: str,
    attempt: int,
    verdict: Verdict,
    max_attempts: int,
) -> bool:
    """Record the verdict if the attempt still owns the job: re-queued (published_at cleared, so
    the reaper sends it at its next sweep), failed, or cancelled when a cancel is pending.
    `owned` is the attempt's ownership clause (worker.lease.owned). Returns False when the
    attempt had already lost the job."""
    job = session.scalar(select(Job).where(owned).with_for_update())
    if job is None:
        session.rollback()
        return False
    now = utcnow()
    job.lease_expires_at, job.worker = None, None
    if job.cancel_requested:
        job.status, job.finished_at = JobStatus.CANCELLED, now
        job.message = f"cancelled: {verdict.detail}"
        kind, message = "cancelled", job.message
    elif verdict.retry and attempt < max_attempts:
        job.status, job.published_at = JobStatus.QUEUED, None
        job.message = f"attempt {attempt} ended: {verdict.detail}; re-queued"
        kind, message = verdict.code, job.message
    else:
        job.status, job.finished_at, job.error_code = JobStatus.FAILED, now, verdict.code
        tried = f"; gave up after {attempt} attempt(s)" if verdict.retry else ""
        job.error = job.message = f"{verdict.detail}{tried}"
        kind, message = "failed", job.error
    session.add(JobEvent(job_id=job_id, kind=kind, attempt=attempt, message=message))
    job_ended(session, job_id)  # nothing when re-queued
    session.commit()
    logger.warning("job %s attempt %d: %s", job_id, attempt, message)
    return True


def in_pool_child() -> bool:
    """True in a Celery prefork child: the only process the watchdog may end (never the API,
    a test runner or an embedded process that hosts more than this attempt)."""
    try:
        from billiard.process import current_process
    except ImportError:  # pragma: no cover - billiard comes with Celery
        return False
    return "PoolWorker" in current_process().name


def exit_if_hung(done: threading.Event, grace: float, job_id: str) -> None:
    """Wait `grace` seconds for the ended attempt to unwind; a still running one is hung: end its
    process (in a pool child only) so the worker forks a fresh child and frees the GPU."""
    if done.wait(grace) or not in_pool_child():
        return
    logger.error("job %s: the engine is hung; ending process %d", job_id, os.getpid())
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(70)
