"""Scale-out: a staged job's scoring split into shards that any worker on the queue takes.

The job's own worker trains every round (tov_engine.staged), writes one `job_shard` row per shard,
asks other workers to help (`tov.score_shards` messages) and then claims shards itself like any
helper. A shard is claimed with a conditional UPDATE and held with a lease its scorer renews, so
a shard whose worker died is taken again by whoever claims next (capped by max_attempts); its
scores go to one object in the artifact store (app.core.artifacts: a folder or S3), written
atomically (a local rename, or one S3 PUT), so a retried or duplicated shard only rewrites the
same bytes. The trained rounds reach helpers on other hosts through the store too (sync_rounds).
The job's worker waits for the last shard, joins and publishes.
The job row stays the truth: if the job's worker dies the reaper re-queues the job and the next
attempt resumes, with the rounds already trained and the shards already scored.
"""

from __future__ import annotations

import io
import os
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from app.core.artifacts import artifact_store, job_key
from app.core.config import Settings
from app.core.models import TERMINAL_STATUSES, Job, JobShard, utcnow
from tov_engine import Shard
from worker.engine_bridge import job_folder

PENDING, RUNNING, DONE = "pending", "running", "done"
NEW_SHARD = {"status": PENDING, "attempt": 0, "rows_done": 0}  # a shard row before any claim


class ShardsExhausted(Exception):
    """A shard lost its worker max_attempts times."""


def worker_identity() -> str:
    """This process, as shard rows name it (host and PID: one per worker process)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def shard_key(job_id: str, index: int) -> str:
    """The shard's scores in the artifact store."""
    return job_key(job_id, "shards", f"{index:05d}.npy")


def write_shard(settings: Settings, job_id: str, index: int, scores: np.ndarray) -> None:
    """Write atomically: readers see the whole object or none (8 bytes a row: one PUT)."""
    buffer = io.BytesIO()
    np.save(buffer, scores)
    artifact_store(settings).write_bytes(shard_key(job_id, index), buffer.getvalue())


def rounds_folder(settings: Settings, job_id: str) -> Path:
    """The job's trained rounds in this process's local scratch (the engine reads them there)."""
    return job_folder(settings, job_id) / "rounds"


def sync_rounds(settings: Settings, job_id: str, *, upload: bool) -> int:
    """Send the trained rounds to the store (after training) or fetch them from it (before
    training, to resume what another host trained, and before scoring a shard here): a no-op
    when the store is the scratch folder. Returns how many files moved."""
    store, key = artifact_store(settings), job_key(job_id, "rounds")
    folder = rounds_folder(settings, job_id)
    if upload:
        return store.upload_tree(folder, key)
    return store.download_tree(key, folder)


def count_shards(session: Session, job_id: str, *, pending: bool = False) -> int:
    """The job's shard rows (with `pending`, those not done yet)."""
    query = select(func.count()).select_from(JobShard).where(JobShard.job_id == job_id)
    if pending:
        query = query.where(JobShard.status != DONE)
    return int(session.scalar(query) or 0)


def record_shards(session: Session, job_id: str, shards: list[Shard]) -> None:
    """Create the job's shard rows once (a resumed attempt finds them and keeps their state)."""
    existing = count_shards(session, job_id)
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
            **NEW_SHARD,
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


def shard_owned(job_id: str, index: int, attempt: int) -> object:
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
    store = artifact_store(settings)
    return {
        s.index: np.load(io.BytesIO(store.read_bytes(shard_key(job_id, s.index)))) for s in shards
    }
