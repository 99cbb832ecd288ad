"""Scoring a staged job's shards: claim one, hold its lease, score it, record it; repeat.

The job's own worker runs a ShardScorer after training (worker.runners.staged); any other worker
runs one for a `tov.score_shards` message (help_with_shards).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from app.core.config import Settings, get_settings
from app.core.db import get_sessionmaker
from app.core.models import Job, JobShard, utcnow
from app.core.observability import current_job_id
from tov_engine import Cancelled, ProgressEvent, Shard, StagedToV, prepare_staged
from worker.engine_bridge import load_inputs
from worker.lease import RenewalThread
from worker.shards import (
    DONE,
    claim_shard,
    count_shards,
    job_is_live,
    rounds_folder,
    shard_owned,
    sync_rounds,
    worker_identity,
    write_shard,
)

logger = logging.getLogger(__name__)

PROGRESS_INTERVAL = 1.0  # seconds between a shard's progress writes


class ShardLease(RenewalThread):
    """Renews one shard's lease; notices a lost lease, or the job cancelled or finished."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        job_id: str,
        index: int,
        attempt: int,
        settings: Settings,
    ) -> None:
        name = f"shard-{job_id}-{index}"
        super().__init__(name, settings.heartbeat_seconds, "shard lease renewal failed")
        self.sessions, self.job_id, self.index, self.attempt = sessions, job_id, index, attempt
        self.lease_seconds = settings.lease_seconds
        self.stop_scoring = threading.Event()

    def beat(self) -> None:
        with self.sessions() as session:
            renewed = session.execute(
                update(JobShard)
                .where(shard_owned(self.job_id, self.index, self.attempt))  # type: ignore[arg-type]
                .values(lease_expires_at=utcnow() + timedelta(seconds=self.lease_seconds))
            ).rowcount  # type: ignore[attr-defined]
            session.commit()
            if not renewed or not job_is_live(session, self.job_id):
                self.stop_scoring.set()


class ShardScorer:
    """Claims and scores shards of one staged job until none is left to claim.

    Args:
        sessions: database sessions. settings: the worker's settings. job_id: the job.
        staged: the prepared job (tov_engine.StagedToV). worker: this worker's name.
        should_stop: polled between batches (the job's worker passes its own heartbeat's, so a
            lost job lease or a cancel stops it too).
        after_progress: called after each progress write (the job's worker updates the job).
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        settings: Settings,
        job_id: str,
        staged: StagedToV,
        worker: str,
        should_stop: Callable[[], bool] | None = None,
        after_progress: Callable[[], object] | None = None,
    ) -> None:
        self.sessions, self.settings, self.job_id = sessions, settings, job_id
        self.after_progress = after_progress
        self.staged = staged
        self.shards = {s.index: s for s in staged.shards(settings.score_shard_rows)}
        self.worker = worker
        self.should_stop = should_stop or (lambda: False)
        self.scored = 0

    def claim(self) -> tuple[int, int] | None:
        with self.sessions() as session:
            if not job_is_live(session, self.job_id):
                return None
            return claim_shard(
                session,
                job_id=self.job_id,
                worker=self.worker,
                lease_seconds=self.settings.lease_seconds,
                max_attempts=self.settings.max_attempts,
            )

    def run(self) -> int:
        """Score claimable shards until there are none. Returns how many this worker scored."""
        while (claimed := self.claim()) is not None:
            self.score(*claimed)
        return self.scored

    def score(self, index: int, attempt: int) -> None:
        """Score one claimed shard under its lease; a stopped shard is left for a later claim."""
        shard = self.shards[index]
        lease = ShardLease(self.sessions, self.job_id, index, attempt, self.settings)
        lease.start()
        started = time.monotonic()
        try:
            folder = rounds_folder(self.settings, self.job_id)
            scores = self.staged.score(
                folder,
                shard,
                progress=self._progress_writer(index, attempt),
                should_cancel=lambda: lease.stop_scoring.is_set() or self.should_stop(),
            )
        except Cancelled:
            logger.info(
                "job %s shard %d: stopped (cancelled, lease lost or job over)", self.job_id, index
            )
            if self.should_stop():
                raise
            return
        finally:
            lease.stop()
        write_shard(self.settings, self.job_id, index, scores)
        self._mark_done(shard, attempt, time.monotonic() - started)

    def _progress_writer(self, index: int, attempt: int) -> Callable[[ProgressEvent], None]:
        """The shard's rows done, written at most every PROGRESS_INTERVAL seconds."""
        last = [0.0]

        def progress(event: ProgressEvent) -> None:
            now = time.monotonic()
            if now - last[0] >= PROGRESS_INTERVAL:
                last[0] = now
                self._write_shard(
                    index, attempt, rows_done=event.done // max(self.staged.rounds, 1)
                )
                if self.after_progress is not None:
                    self.after_progress()

        return progress

    def _mark_done(self, shard: Shard, attempt: int, seconds: float) -> None:
        self._write_shard(
            shard.index,
            attempt,
            status=DONE,
            rows_done=shard.rows,
            seconds=seconds,
            finished_at=utcnow(),
            lease_expires_at=None,
        )
        self.scored += 1
        logger.info(
            "job %s shard %d: %d rows scored by %s",
            self.job_id,
            shard.index,
            shard.rows,
            self.worker,
        )

    def _write_shard(self, index: int, attempt: int, **values: object) -> None:
        """Update the shard's row while this attempt owns it."""
        with self.sessions() as session:
            session.execute(
                update(JobShard)
                .where(shard_owned(self.job_id, index, attempt))  # type: ignore[arg-type]
                .values(**values)
            )
            session.commit()


def help_with_shards(job_id: str) -> int:
    """A `tov.score_shards` message: score shards of the job until none is left to claim.

    Returns how many this worker scored (0 at once when nothing is claimable: the job finished,
    was cancelled, or its other workers took every shard).
    """
    settings, sessions = get_settings(), get_sessionmaker()
    token = current_job_id.set(job_id)
    try:
        with sessions() as session:
            job = session.get(Job, job_id)
            pending = count_shards(session, job_id, pending=True)
            if job is None or not pending or not job_is_live(session, job_id):
                return 0
            inputs = load_inputs(session, job, settings)
        fetched = sync_rounds(settings, job_id, upload=False)  # trained on the job's host
        logger.info("job %s: %d file(s) of trained rounds fetched from the store", job_id, fetched)
        staged = prepare_staged(**inputs.engine_kwargs())
        scored = ShardScorer(sessions, settings, job_id, staged, worker_identity()).run()
        logger.info("job %s: this worker scored %d shard(s)", job_id, scored)
        return scored
    finally:
        current_job_id.reset(token)
