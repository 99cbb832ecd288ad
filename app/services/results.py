"""Scores and selections: stored as little-endian arrays in chunks, read back as numpy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app.core.errors import Conflict, NotFound
from app.core.models import Job, JobStatus, ScoreChunk, Selection
from app.services.jobs import check_target

CHUNK_ROWS = 65_536


@dataclass(frozen=True)
class StoredSelection:
    id: str
    target: int
    indices: np.ndarray  # (n,) int64
    scores: np.ndarray  # (n,) float32
    from_random: np.ndarray  # (n,) bool


def write_scores(
    *,
    session: Session,
    job_id: str,
    scores: np.ndarray,
    lengths: np.ndarray,
    base_indices: np.ndarray,
    target: int = 0,
) -> None:
    """Replace the scores (float32, NaN = not scored) and base-subset flags of one target of the
    job, in chunks."""
    session.execute(
        delete(ScoreChunk).where(ScoreChunk.job_id == job_id, ScoreChunk.target == target)
    )
    scores = np.ascontiguousarray(scores, dtype="<f4")
    lengths = np.ascontiguousarray(lengths, dtype="<i4")
    flags = np.zeros(len(scores), dtype=np.uint8)
    flags[np.asarray(base_indices, dtype=np.int64)] = 1
    session.add_all(
        ScoreChunk(
            job_id=job_id,
            target=target,
            chunk=i,
            start_row=start,
            count=int(min(CHUNK_ROWS, len(scores) - start)),
            scores=scores[start : start + CHUNK_ROWS].tobytes(),
            lengths=lengths[start : start + CHUNK_ROWS].tobytes(),
            flags=flags[start : start + CHUNK_ROWS].tobytes(),
        )
        for i, start in enumerate(range(0, len(scores), CHUNK_ROWS))
    )


def read_base_indices(*, session: Session, job_id: str, target: int = 0) -> np.ndarray:
    """Pool indices of the base subset U of one target (int64, sorted)."""
    chunks = session.scalars(
        select(ScoreChunk.flags)
        .where(ScoreChunk.job_id == job_id, ScoreChunk.target == target)
        .order_by(ScoreChunk.chunk)
    ).all()
    flags = np.concatenate(
        [np.frombuffer(c or b"", dtype=np.uint8) for c in chunks] or [np.zeros(0, dtype=np.uint8)]
    )
    return np.flatnonzero(flags == 1).astype(np.int64)


def read_scores(*, session: Session, job_id: str, target: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(scores float32, lengths int32) of one target, in pool order."""
    chunks = session.scalars(
        select(ScoreChunk)
        .where(ScoreChunk.job_id == job_id, ScoreChunk.target == target)
        .order_by(ScoreChunk.chunk)
    ).all()
    if not chunks:
        return np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int32)
    scores = np.concatenate([np.frombuffer(c.scores, dtype="<f4") for c in chunks])
    lengths = np.concatenate([np.frombuffer(c.lengths, dtype="<i4") for c in chunks])
    return scores.astype(np.float32), lengths.astype(np.int32)


def add_selection(
    *,
    session: Session,
    job_id: str,
    indices: np.ndarray,
    scores: np.ndarray,
    from_random: np.ndarray,
    budget: float,
    strategy: str,
    num_bins: int,
    seed: int,
    is_default: bool,
    target: int = 0,
    min_per_bin: int = 0,
) -> Selection:
    row = Selection(
        job_id=job_id,
        target=target,
        budget=budget,
        strategy=strategy,
        num_bins=num_bins,
        min_per_bin=min_per_bin,
        seed=seed,
        size=len(indices),
        indices=np.asarray(indices, dtype="<i8").tobytes(),
        scores=np.asarray(scores, dtype="<f4").tobytes(),
        from_random=np.asarray(from_random, dtype=np.uint8).tobytes(),
        is_default=is_default,
    )
    session.add(row)
    return row


def load_selection(
    *, session: Session, job: Job, selection_id: str | None, target: int | None = None
) -> StoredSelection:
    """The default selection of a target of the job (`target` None: 0), or the one named (whose
    target must then match `target` when given); only for a succeeded job."""
    if target is not None:
        check_target(job, target)
    if job.status != JobStatus.SUCCEEDED:
        raise Conflict(f"Job '{job.id}' is {job.status}; results exist once it has succeeded.")
    query = select(Selection).where(Selection.job_id == job.id)
    query = (
        query.where(Selection.id == selection_id)
        if selection_id
        else query.where(Selection.is_default.is_(True), Selection.target == (target or 0))
    )
    row = session.scalar(query)
    if row is None:
        if selection_id:
            raise NotFound(f"Selection '{selection_id}' does not exist for job '{job.id}'.")
        raise NotFound(f"Job '{job.id}' has no default selection for target {target or 0}.")
    if target is not None and row.target != target:
        raise NotFound(
            f"target: selection '{row.id}' is for target {row.target}, not target {target}; "
            "leave `target` out or make it match."
        )
    if row.status != "ready":
        raise Conflict(
            f"Selection '{row.id}' is {row.status}"
            + (f": {row.error}" if row.error else "; retry shortly.")
        )
    return StoredSelection(
        id=row.id,
        target=row.target,
        indices=np.frombuffer(row.indices, dtype="<i8").astype(np.int64),
        scores=np.frombuffer(row.scores, dtype="<f4").astype(np.float32),
        from_random=np.frombuffer(row.from_random, dtype=np.uint8).astype(bool),
    )
