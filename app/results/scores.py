"""Score storage: each target's scores, lengths and base-subset flags as little-endian arrays in
chunks of rows, read back as numpy."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app.core.models import ScoreChunk

CHUNK_ROWS = 65_536


@dataclass(frozen=True)
class RowExplanations:
    """Every pool row's explanation of one target (all NaN / -1 where none was stored): its mean
    loss per loss token before (theta_bas) and after (theta_val) averaged over rounds, and its
    length bin and rank by score within it under the default selection's settings."""

    loss_before: np.ndarray  # (N,) float32, NaN = none
    loss_after: np.ndarray  # (N,) float32, NaN = none
    bins: np.ndarray  # (N,) int32, -1 = none
    bin_ranks: np.ndarray  # (N,) int32, -1 = none


def _piece(values: np.ndarray | None, dtype: str, start: int) -> bytes | None:
    return None if values is None else values[start : start + CHUNK_ROWS].astype(dtype).tobytes()


def write_scores(
    *,
    session: Session,
    job_id: str,
    scores: np.ndarray,
    lengths: np.ndarray,
    base_indices: np.ndarray,
    target: int = 0,
    explanations: RowExplanations | None = None,
) -> None:
    """Replace the scores (float32, NaN = not scored), base-subset flags and explanations (when
    given) of one target of the job, in chunks."""
    session.execute(
        delete(ScoreChunk).where(ScoreChunk.job_id == job_id, ScoreChunk.target == target)
    )
    scores = np.ascontiguousarray(scores, dtype="<f4")
    lengths = np.ascontiguousarray(lengths, dtype="<i4")
    flags = np.zeros(len(scores), dtype=np.uint8)
    flags[np.asarray(base_indices, dtype=np.int64)] = 1
    ex = explanations
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
            loss_before=_piece(None if ex is None else ex.loss_before, "<f4", start),
            loss_after=_piece(None if ex is None else ex.loss_after, "<f4", start),
            bins=_piece(None if ex is None else ex.bins, "<i4", start),
            bin_ranks=_piece(None if ex is None else ex.bin_ranks, "<i4", start),
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


def _joined(
    chunks: list[bytes | None], counts: list[int], dtype: str, missing: float
) -> np.ndarray:
    """The chunks' values end to end; a chunk stored without them holds `missing`."""
    parts = [
        np.frombuffer(c, dtype=dtype) if c is not None else np.full(n, missing, dtype=dtype)
        for c, n in zip(chunks, counts, strict=True)
    ]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)


def read_explanations(*, session: Session, job_id: str, target: int = 0) -> RowExplanations:
    """Every row's explanation of one target, in pool order (NaN / -1 where none was stored:
    jobs before migration 0010, methods without losses)."""
    rows = session.execute(
        select(
            ScoreChunk.count.label("size"),  # a Row's own `count` is tuple.count
            ScoreChunk.loss_before,
            ScoreChunk.loss_after,
            ScoreChunk.bins,
            ScoreChunk.bin_ranks,
        )
        .where(ScoreChunk.job_id == job_id, ScoreChunk.target == target)
        .order_by(ScoreChunk.chunk)
    ).all()
    counts = [int(r.size) for r in rows]
    return RowExplanations(
        loss_before=_joined([r.loss_before for r in rows], counts, "<f4", np.nan).astype(
            np.float32
        ),
        loss_after=_joined([r.loss_after for r in rows], counts, "<f4", np.nan).astype(np.float32),
        bins=_joined([r.bins for r in rows], counts, "<i4", -1).astype(np.int32),
        bin_ranks=_joined([r.bin_ranks for r in rows], counts, "<i4", -1).astype(np.int32),
    )
