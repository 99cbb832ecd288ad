"""The reaper: recovers jobs from Postgres, not from the broker (RELIABILITY.md, design item 5).

- a running job whose lease expired (its worker died) goes back to the queue and is sent again, or
  is failed past the attempt cap;
- a queued job never published (broker down at submit) or lost by the broker is sent again
  (see _lost_messages: a job merely waiting in a long queue is not);
- a job with a pending cancel and no live attempt (queued, or its worker died) is cancelled:
  re-sent, it would only be refused at the claim, forever;
- a pending re-selection whose message was lost is sent again, and failed once it has been tried
  `reselect_max_attempts` times.
Duplicated sends are harmless: they die at the claim.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, false, func, or_, select, update
from sqlalchemy.orm import Session

from app.core.config import Settings, get_settings
from app.core.db import get_sessionmaker
from app.core.models import LIVE_STATUSES, Job, JobEvent, JobStage, JobStatus, Selection, utcnow
from app.core.queue import (
    publish_job,
    publish_reselect,
    publish_webhook_delivery,
    queue_depth,
)
from app.webhooks.outbox import job_ended
from worker.webhooks import due_count

logger = logging.getLogger(__name__)


CLAIM_GRACE_SECONDS = 10.0  # a delivered message is claimed within seconds (a pool child starts)

# The reaper thread runs in the worker's main process, which forks a pool child for every job. A
# fork taken mid-sweep would copy the database pool's locks held by this thread into the child,
# where nobody releases them: the child hangs at its first query. Forks wait for a sweep to end.
_SWEEP = threading.Lock()
os.register_at_fork(
    before=_SWEEP.acquire, after_in_parent=_SWEEP.release, after_in_child=_SWEEP.release
)


def _lost_messages(session: Session, settings: Settings, now: datetime) -> ColumnElement[bool]:
    """Queued jobs whose message the broker lost, without re-sending the ones waiting in line.

    Re-sending every job queued for longer than republish_seconds would pile copies of a long
    backlog into the queue, each costing a worker a pool child. Instead:
    - the queue is FIFO: a queued job sent before a job that a worker claimed more than
      CLAIM_GRACE_SECONDS ago should have been claimed by now, so its message is gone (a wiped or
      restored broker);
    - with the broker's queue empty and no job running, started or finished for
      republish_seconds (and at least CLAIM_GRACE_SECONDS), a job queued for that long has lost
      its message too (idle workers would have taken it). While messages wait in the queue the
      workers are absent or reconnecting, and another copy would only wait behind them.
    """
    queued = Job.status == JobStatus.QUEUED
    sent = session.scalar(
        select(func.count()).select_from(Job).where(queued, Job.published_at.is_not(None))
    )
    if not sent:
        return false()
    grace = now - timedelta(seconds=max(settings.lease_seconds, CLAIM_GRACE_SECONDS))
    # Claims older than the grace only: another worker may still hold the earlier message while
    # its pool child starts, so a later job can be claimed a few seconds before an earlier one.
    newest_claimed = session.scalar(
        select(func.max(Job.published_at)).where(
            Job.status != JobStatus.QUEUED,
            Job.started_at < now - timedelta(seconds=CLAIM_GRACE_SECONDS),
        )
    )
    rules = []
    if newest_claimed is not None:
        rules.append(and_(queued, Job.published_at < newest_claimed))
    stale = now - timedelta(seconds=settings.republish_seconds)
    # A worker may hold a message a few seconds before claiming it (while its pool child starts):
    # idle means no activity for longer than that, too.
    quiet = min(stale, grace)
    busy = session.scalar(
        select(func.count())
        .select_from(Job)
        .where(
            or_(
                and_(Job.status.in_(LIVE_STATUSES), Job.lease_expires_at >= now),
                Job.started_at >= quiet,  # workers between two jobs are not idle
                Job.finished_at >= quiet,
            )
        )
    )
    if not busy:
        waiting = queue_depth()  # None: the transport cannot tell
        if not waiting:
            rules.append(and_(queued, Job.published_at < quiet))
    return or_(false(), *rules)


def reap_once(session: Session, settings: Settings) -> dict[str, int]:
    """One sweep. Returns counts of jobs re-sent, failed and cancelled, and selections re-sent."""
    now = utcnow()
    jobs = _jobs_to_reap(session, settings, now)
    counts = {"resent": 0, "failed": 0, "cancelled": 0}
    for job in jobs:
        if job.cancel_requested:
            _cancel_orphan(session, job, now)
            counts["cancelled"] += 1
        elif job.status in LIVE_STATUSES and job.attempt >= settings.max_attempts:
            _fail_exhausted(session, job, now)
            counts["failed"] += 1
        else:
            _requeue(session, job, now)
            counts["resent"] += 1
    session.commit()
    counts["resent"] -= _send(
        session, [job.id for job in jobs if job.status == JobStatus.QUEUED], now
    )
    counts["selections"] = _resend_pending_selections(session, settings, now)
    counts["webhooks"] = _ask_for_webhooks(session)
    if any(counts.values()):
        logger.info("reaper: %s", counts)
    return counts


def _jobs_to_reap(session: Session, settings: Settings, now: datetime) -> Sequence[Job]:
    """Running (or cancelling) jobs whose lease expired, queued jobs whose message is missing and
    jobs with a pending cancel that no live attempt will act on (locked)."""
    lost_lease = and_(
        Job.status.in_(LIVE_STATUSES),
        Job.lease_expires_at < now,
        or_(
            Job.published_at.is_(None),
            Job.published_at < now - timedelta(seconds=settings.lease_seconds),
        ),
    )
    unpublished = and_(
        or_(
            and_(Job.status == JobStatus.QUEUED, Job.published_at.is_(None)),
            _lost_messages(session, settings, now),
        ),
        # Waiting for its datasets: not lost, and not to be sent (app.datasets.ingest sends it).
        or_(Job.stage.is_(None), Job.stage != JobStage.WAITING_FOR_DATASETS),
    )
    orphan_cancel = and_(  # no attempt will act on the cancel: settle it now
        Job.cancel_requested.is_(True),
        or_(
            Job.status == JobStatus.QUEUED,
            and_(Job.status.in_(LIVE_STATUSES), Job.lease_expires_at < now),
        ),
    )
    return session.scalars(
        select(Job)
        .where(or_(lost_lease, unpublished, orphan_cancel))
        .order_by(Job.created_at)
        .limit(100)
        .with_for_update(skip_locked=True)
    ).all()


def _fail_exhausted(session: Session, job: Job, now: datetime) -> None:
    """A job whose worker was lost on every allowed attempt fails."""
    job.status, job.finished_at = JobStatus.FAILED, now
    job.error_code = "attempts_exhausted"
    job.error = (
        f"gave up after {job.attempt} attempts: the worker was lost each time "
        "(out of memory or killed?)"
    )
    session.add(JobEvent(job_id=job.id, kind="failed", attempt=job.attempt, message=job.error))
    job_ended(session, job.id)


def _cancel_orphan(session: Session, job: Job, now: datetime) -> None:
    """A pending cancel with no attempt to act on it (the worker died, or the job is queued)."""
    was = job.status
    job.status, job.finished_at = JobStatus.CANCELLED, now
    job.lease_expires_at, job.worker = None, None
    job.message = (
        "cancelled: its worker was lost before it could stop"
        if was != JobStatus.QUEUED
        else "cancelled: no worker was running it"
    )
    session.add(JobEvent(job_id=job.id, kind="cancelled", attempt=job.attempt, message=job.message))
    job_ended(session, job.id)


def _requeue(session: Session, job: Job, now: datetime) -> None:
    """Mark the job for sending now (a running one goes back to the queue first)."""
    lost = job.status in LIVE_STATUSES
    if lost:
        # Back to the queue: sent once now, then again only if still unclaimed after
        # republish_seconds, like any queued job. Left RUNNING, it would be re-sent at every
        # lease period while its copy waits behind a backlog: duplicates pile up in the queue.
        job.status, job.lease_expires_at, job.worker = JobStatus.QUEUED, None, None
    job.published_at = now
    message = "worker lost: re-queued by the reaper" if lost else "re-sent by the reaper"
    session.add(JobEvent(job_id=job.id, kind="republished", attempt=job.attempt, message=message))


def _send(session: Session, job_ids: list[str], now: datetime) -> int:
    """Send the jobs' messages; returns how many could not be sent (their mark is cleared)."""
    unsent: list[str] = []
    for job_id in job_ids:
        if unsent or not publish_job(job_id):  # the broker is down: don't wait on it per job
            unsent.append(job_id)
    if unsent:
        # Not sent after all: clear the mark so the next sweep retries, instead of a queued job
        # waiting republish_seconds (10 minutes by default) for a broker that is back in seconds.
        logger.warning("reaper could not re-send %d job(s); the next sweep retries", len(unsent))
        session.execute(
            update(Job).where(Job.id.in_(unsent), Job.published_at == now).values(published_at=None)
        )
        session.commit()
    return len(unsent)


def _resend_pending_selections(session: Session, settings: Settings, now: datetime) -> int:
    """Re-selections whose message was lost: pending `reselect_resend_seconds` (a minute by
    default) after their last send (they take milliseconds). Each is re-sent at most that often,
    so a selector that is down for an hour finds 60 copies of nothing, not one per sweep. One
    already tried `reselect_max_attempts` times (each run counts, worker.reselect) fails
    instead: a selection that crashes the selector is not re-sent forever."""
    stale = now - timedelta(seconds=settings.reselect_resend_seconds)
    rows = session.execute(
        select(Selection.id, Selection.attempts)
        .where(
            Selection.status == "pending",
            Selection.created_at < stale,
            or_(Selection.published_at.is_(None), Selection.published_at < stale),
        )
        .limit(100)
        .with_for_update(skip_locked=True)
    ).all()
    cap = settings.reselect_max_attempts
    spent = [row.id for row in rows if row.attempts >= cap]
    if spent:
        error = (
            f"gave up after {cap} attempts (TOV_RESELECT_MAX_ATTEMPTS): the selector failed "
            "each time; see the worker's log"
        )
        session.execute(
            update(Selection)
            .where(Selection.id.in_(spent), Selection.status == "pending")
            .values(status="failed", error=error)
        )
    ids = [row.id for row in rows if row.attempts < cap]
    sent = [selection_id for selection_id in ids if publish_reselect(selection_id)]
    if sent:
        session.execute(update(Selection).where(Selection.id.in_(sent)).values(published_at=now))
    session.commit()
    return len(sent)


def _ask_for_webhooks(session: Session) -> int:
    """Ask for a delivery run when some webhook delivery is due (a retry whose time came, or one
    whose worker died mid-send): 1 when asked, else 0."""
    due = due_count(session)
    session.rollback()
    return 1 if due and publish_webhook_delivery("sweep") else 0


def _loop(stop: threading.Event) -> None:
    settings = get_settings()
    sessions = get_sessionmaker()
    while not stop.wait(settings.reaper_seconds):
        try:
            with _SWEEP, sessions() as session:
                reap_once(session, settings)
        except Exception:
            logger.warning("reaper sweep failed", exc_info=True)


def start_reaper_thread() -> threading.Event:
    stop = threading.Event()
    threading.Thread(target=_loop, args=(stop,), name="reaper", daemon=True).start()
    return stop
