"""Score storage: each target's scores, lengths and base-subset flags as little-endian arrays in
chunks of rows, read back as numpy."""

from __future__ import annotations

import numpy as np
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app.core.models import ScoreChunk

CHUNK_ROWS = 65_536


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
