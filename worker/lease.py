"""Claiming a job and holding it: a conditional UPDATE, then a lease renewed by a heartbeat that
also asks the progress watchdog (worker.watchdog) whether the attempt must end."""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from datetime import timedelta
from typing import Any

from sqlalchemy import and_, or_, update
from sqlalchemy.orm import Session, sessionmaker

from app.core.models import LIVE_STATUSES, Job, JobEvent, JobStatus, utcnow
from app.webhooks.outbox import job_ended
from worker.watchdog import Watchdog, end_attempt, exit_if_hung

logger = logging.getLogger(__name__)


def claim_job(
    session: Session, *, job_id: str, worker: str, lease_seconds: float, max_attempts: int
) -> int | None:
    """Take the job if it is queued, or running with an expired lease. Returns our attempt.

    Zero rows updated means another attempt owns the job (a duplicated delivery): the caller stops.
    """
    now = utcnow()
    result = session.execute(
        update(Job)
        .where(
            Job.id == job_id,
            Job.cancel_requested.is_(False),
            Job.attempt < max_attempts,  # past the cap the reaper fails the job
            or_(
                Job.status == JobStatus.QUEUED,
                and_(Job.status == JobStatus.RUNNING, Job.lease_expires_at < now),
            ),
        )
        .values(
            status=JobStatus.RUNNING,
            attempt=Job.attempt + 1,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            worker=worker,
            started_at=now,
            error=None,
            error_code=None,
        )
        .returning(Job.attempt)
    )
    attempt = result.scalar_one_or_none()
    if attempt is not None:
        session.add(
            JobEvent(
                job_id=job_id,
                kind="claimed",
                attempt=attempt,
                message=f"attempt {attempt} on {worker}",
            )
        )
    else:
        settle_cancel(session, job_id)
    session.commit()
    return attempt


def settle_cancel(session: Session, job_id: str) -> bool:
    """A pending cancel that no attempt will act on becomes `cancelled` (with an event): the job is
    queued, or its attempt's lease expired (the worker died). Left as it was, it would stay
    queued forever, re-sent at every sweep and counted against the tenant's quota."""
    now = utcnow()
    message = "cancelled: no live worker held it"
    attempt = session.execute(
        update(Job)
        .where(
            Job.id == job_id,
            Job.cancel_requested.is_(True),
            or_(
                Job.status == JobStatus.QUEUED,
                and_(Job.status.in_(LIVE_STATUSES), Job.lease_expires_at < now),
            ),
        )
        .values(
            status=JobStatus.CANCELLED,
            finished_at=now,
            lease_expires_at=None,
            worker=None,
            message=message,
        )
        .returning(Job.attempt)
        .execution_options(synchronize_session=False)  # the caller holds no Job to refresh
    ).scalar_one_or_none()
    if attempt is None:
        return False
    session.add(JobEvent(job_id=job_id, kind="cancelled", attempt=attempt, message=message))
    job_ended(session, job_id)
    return True


def owned(job_id: str, attempt: int) -> Any:
    """The WHERE clause that every write of an attempt carries (a cancelling job is still its
    attempt's until the attempt stops)."""
    return and_(Job.id == job_id, Job.attempt == attempt, Job.status.in_(LIVE_STATUSES))


class LeaseLost(Exception):
    """Another attempt owns the job now; this one must stop without writing."""


class RenewalThread(threading.Thread, ABC):
    """Calls `beat` every `period` seconds until stopped; a failed beat is logged, not fatal
    (the database may be briefly down; the lease has slack)."""

    def __init__(self, name: str, period: float, failure: str) -> None:
        super().__init__(name=name, daemon=True)
        self.period, self.failure = period, failure
        self._stop_event = threading.Event()
        self.done = threading.Event()  # the attempt is over (stop() was called)

    @abstractmethod
    def beat(self) -> None:
        """Renew the lease once."""

    def run(self) -> None:
        while not self._stop_event.wait(self.period):
            try:
                self.beat()
            except Exception:
                logger.warning(self.failure, exc_info=True)

    def stop(self) -> None:
        self._stop_event.set()
        self.done.set()


class Heartbeat(RenewalThread):
    """Renews the lease every `period` seconds; notices a lost lease or a cancel request, and asks
    the watchdog (when given) whether the attempt must end (no progress, run too long)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        job_id: str,
        attempt: int,
        lease_seconds: float,
        period: float,
        watchdog: Watchdog | None = None,
        max_attempts: int = 1,
    ) -> None:
        super().__init__(f"heartbeat-{job_id}", period, f"heartbeat for job {job_id} failed")
        self.sessions, self.job_id, self.attempt = sessions, job_id, attempt
        self.lease_seconds = lease_seconds
        self.watchdog, self.max_attempts = watchdog, max_attempts
        self.lost = threading.Event()
        self.cancel = threading.Event()

    def beat(self) -> None:
        if self._watchdog_ended():
            return
        with self.sessions() as session:
            row = session.execute(
                update(Job)
                .where(owned(self.job_id, self.attempt))
                .values(lease_expires_at=utcnow() + timedelta(seconds=self.lease_seconds))
                .returning(Job.cancel_requested)
            ).first()
            session.commit()
        if row is None:
            if not self._stop_event.is_set():  # not a beat that raced the attempt's own commit
                logger.warning("job %s attempt %d lost its lease", self.job_id, self.attempt)
            self.lost.set()
        elif row[0]:
            self.cancel.set()

    def _watchdog_ended(self) -> bool:
        """End the attempt on the watchdog's verdict: recorded in the database, beats stop, the
        engine's should_stop turns true, and a hung process is ended after a grace period."""
        verdict = self.watchdog.check() if self.watchdog is not None else None
        if verdict is None or self._stop_event.is_set():
            return False
        with self.sessions() as session:
            end_attempt(
                session,
                owned=owned(self.job_id, self.attempt),
                job_id=self.job_id,
                attempt=self.attempt,
                verdict=verdict,
                max_attempts=self.max_attempts,
            )
        self.lost.set()  # recorded or not, this attempt owns the job no more
        self._stop_event.set()
        threading.Thread(
            target=exit_if_hung,
            args=(self.done, max(self.lease_seconds, 2 * self.period), self.job_id),
            name=f"watchdog-{self.job_id}",
            daemon=True,
        ).start()
        return True

    def should_stop(self) -> bool:
        return self.lost.is_set() or self.cancel.is_set()
