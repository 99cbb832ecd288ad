"""Scale-out: a staged job's scoring split into shards that any worker on the queue takes.

The job's own worker trains every round (tov_engine.staged), writes one `job_shard` row per shard,
asks other workers to help (`tov.score_shards` messages) and then claims shards itself like any
helper. A shard is claimed with a conditional UPDATE and held with a lease its scorer renews, so
a shard whose worker died is taken again by whoever claims next (capped by max_attempts); its
scores go to one file in the artifact store, written atomically, so a retried or duplicated shard
only rewrites the same bytes. The job's worker waits for the last shard, joins and publishes.
The job row stays the truth: if the job's worker dies the reaper re-queues the job and the next
attempt resumes, with the rounds already trained and the shards already scored.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from app.core.config import Settings
from app.core.models import TERMINAL_STATUSES, Job, JobShard, utcnow
from tov_engine import Cancelled, ProgressEvent
from tov_engine.staged import Shard, StagedToV

logger = logging.getLogger(__name__)

PENDING, RUNNING, DONE = "pending", "running", "done"
PROGRESS_INTERVAL = 1.0  # seconds between a shard's progress writes


class ShardsExhausted(Exception):
    """A shard lost its worker max_attempts times."""


def worker_identity() -> str:
    """This process, as shard rows name it (host and PID: one per worker process)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def job_folder(settings: Settings, job_id: str) -> Path:
    return Path(settings.artifact_root) / "jobs" / job_id


def shard_path(settings: Settings, job_id: str, index: int) -> Path:
    return job_folder(settings, job_id) / "shards" / f"{index:05d}.npy"


def write_shard(path: Path, scores: np.ndarray) -> None:
    """Write atomically: readers see the whole file or none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as handle:
        np.save(handle, scores)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def record_shards(session: Session, job_id: str, shards: list[Shard]) -> None:
    """Create the job's shard rows once (a resumed attempt finds them and keeps their state)."""
    existing = session.scalar(
        select(func.count()).select_from(JobShard).where(JobShard.job_id == job_id)
    )
    if existing:
        if existing != len(shards):
            raise RuntimeError(
                f"job {job_id} has {existing} shard rows, the plan has {len(shards)}"
            )
        return
    session.add_all(
        JobShard(
            job_id=job_id,
            shard=s.index,
            first_batch=s.first_batch,
            end_batch=s.end_batch,
            rows=s.rows,
            status=PENDING,
            attempt=0,
            rows_done=0,
        )
        for s in shards
    )
    session.commit()


def _claimable(job_id: str, max_attempts: int) -> object:
    now = utcnow()
    return and_(
        JobShard.job_id == job_id,
        JobShard.attempt < max_attempts,
        or_(
            JobShard.status == PENDING,
            and_(JobShard.status == RUNNING, JobShard.lease_expires_at < now),
        ),
    )


def claim_shard(
    session: Session, *, job_id: str, worker: str, lease_seconds: float, max_attempts: int
) -> tuple[int, int] | None:
    """Take the next claimable shard of the job: (shard index, our attempt), or None."""
    while True:
        candidate = session.execute(
            select(JobShard.shard, JobShard.attempt)
            .where(_claimable(job_id, max_attempts))  # type: ignore[arg-type]
            .order_by(JobShard.shard)
            .limit(1)
            .with_for_update(skip_locked=True)
        ).first()
        if candidate is None:
            session.commit()
            return None
        index, attempt = candidate
        now = utcnow()
        claimed = session.execute(
            update(JobShard)
            .where(
                JobShard.job_id == job_id,
                JobShard.shard == index,
                JobShard.attempt == attempt,
                JobShard.status != DONE,
            )
            .values(
                status=RUNNING,
                attempt=attempt + 1,
                worker=worker,
                lease_expires_at=now + timedelta(seconds=lease_seconds),
                started_at=now,
                rows_done=0,
            )
        ).rowcount  # type: ignore[attr-defined]  # an UPDATE gives a CursorResult
        session.commit()
        if claimed:
            return int(index), attempt + 1


def _owned(job_id: str, index: int, attempt: int) -> object:
    return and_(
        JobShard.job_id == job_id,
        JobShard.shard == index,
        JobShard.attempt == attempt,
        JobShard.status == RUNNING,
    )


def job_is_live(session: Session, job_id: str) -> bool:
    """Still worth scoring for: not finished and not cancelled."""
    row = session.execute(select(Job.status, Job.cancel_requested).where(Job.id == job_id)).first()
    return row is not None and row[0] not in TERMINAL_STATUSES and not row[1]


class ShardLease(threading.Thread):
    """Renews one shard's lease; notices a lost lease, or the job cancelled or finished."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        job_id: str,
        index: int,
        attempt: int,
        settings: Settings,
    ) -> None:
        super().__init__(name=f"shard-{job_id}-{index}", daemon=True)
        self.sessions, self.job_id, self.index, self.attempt = sessions, job_id, index, attempt
        self.settings = settings
        self.stop_scoring = threading.Event()
        self._done = threading.Event()

    def beat(self) -> None:
        with self.sessions() as session:
            renewed = session.execute(
                update(JobShard)
                .where(_owned(self.job_id, self.index, self.attempt))  # type: ignore[arg-type]
                .values(lease_expires_at=utcnow() + timedelta(seconds=self.settings.lease_seconds))
            ).rowcount  # type: ignore[attr-defined]
            session.commit()
            if not renewed or not job_is_live(session, self.job_id):
                self.stop_scoring.set()

    def run(self) -> None:
        while not self._done.wait(self.settings.heartbeat_seconds):
            try:
                self.beat()
            except Exception:  # the database may be briefly down; the lease has slack
                logger.warning("shard lease renewal failed", exc_info=True)

    def stop(self) -> None:
        self._done.set()


class ShardScorer:
    """Claims and scores shards of one staged job until none is left to claim.

    Args:
        sessions: database sessions. settings: the worker's settings. job_id: the job.
        staged: the prepared job (tov_engine.staged). shards: its plan (index -> Shard).
        worker: this worker's name. should_stop: polled between batches (the job's worker
            passes its own heartbeat, so a lost job lease or a cancel stops it too).
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
        shard = self.shards[index]
        lease = ShardLease(self.sessions, self.job_id, index, attempt, self.settings)
        lease.start()
        started = time.monotonic()
        last = [0.0]

        def progress(event: ProgressEvent) -> None:
            now = time.monotonic()
            if now - last[0] >= PROGRESS_INTERVAL:
                last[0] = now
                self._write_progress(index, attempt, event.done // max(self.staged.rounds, 1))
                if self.after_progress is not None:
                    self.after_progress()

        def stop() -> bool:
            return lease.stop_scoring.is_set() or self.should_stop()

        try:
            folder = job_folder(self.settings, self.job_id) / "rounds"
            scores = self.staged.score(folder, shard, progress=progress, should_cancel=stop)
        except Cancelled:
            logger.info(
                "job %s shard %d: stopped (cancelled, lease lost or job over)", self.job_id, index
            )
            if self.should_stop():
                raise
            return
        finally:
            lease.stop()
        write_shard(shard_path(self.settings, self.job_id, index), scores)
        with self.sessions() as session:
            session.execute(
                update(JobShard)
                .where(_owned(self.job_id, index, attempt))  # type: ignore[arg-type]
                .values(
                    status=DONE,
                    rows_done=shard.rows,
                    seconds=time.monotonic() - started,
                    finished_at=utcnow(),
                    lease_expires_at=None,
                )
            )
            session.commit()
        self.scored += 1
        logger.info(
            "job %s shard %d: %d rows scored by %s", self.job_id, index, shard.rows, self.worker
        )

    def _write_progress(self, index: int, attempt: int, rows_done: int) -> None:
        with self.sessions() as session:
            session.execute(
                update(JobShard)
                .where(_owned(self.job_id, index, attempt))  # type: ignore[arg-type]
                .values(rows_done=rows_done)
            )
            session.commit()


def shard_state(
    session: Session, job_id: str, max_attempts: int
) -> tuple[int, int, int, list[int]]:
    """(shards done, shards in all, rows scored so far, shards that exhausted their attempts)."""
    rows = session.execute(
        select(
            JobShard.shard,
            JobShard.status,
            JobShard.attempt,
            JobShard.rows_done,
            JobShard.lease_expires_at,
        ).where(JobShard.job_id == job_id)
    ).all()
    now = utcnow()
    done = sum(1 for r in rows if r.status == DONE)
    scored = sum(int(r.rows_done) for r in rows)
    exhausted = [
        int(r.shard)
        for r in rows
        if r.status != DONE
        and r.attempt >= max_attempts
        and (r.status == PENDING or r.lease_expires_at is None or _aware(r.lease_expires_at) < now)
    ]
    return done, len(rows), scored, exhausted


def _aware(value: datetime) -> datetime:
    """SQLite hands back naive datetimes (stored as UTC)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def load_shards(settings: Settings, job_id: str, shards: list[Shard]) -> dict[int, np.ndarray]:
    return {s.index: np.load(shard_path(settings, job_id, s.index)) for s in shards}


def count_live_shards(session: Session, job_id: str) -> int:
    """Shards running under a live lease (someone is scoring them)."""
    return int(
        session.scalar(
            select(func.count())
            .select_from(JobShard)
            .where(
                JobShard.job_id == job_id,
                JobShard.status == RUNNING,
                JobShard.lease_expires_at >= utcnow(),
            )
        )
        or 0
    )
