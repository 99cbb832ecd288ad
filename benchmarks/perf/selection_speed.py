"""select() on 10M scores against the previous implementation (full lexsorts), run here.

The data follow benchmarks/storage/bench_scores.py: standard-normal scores, lengths 5..499,
5% of the rows in U (NaN), budget 0.05.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from tov_engine import SelectionConfig, select
from tov_engine.selection import _by_score


def _lexsort_binned_top(
    candidates: np.ndarray, scores: np.ndarray, lengths: np.ndarray, k: int, bins: int
) -> np.ndarray:
    """The score half as select() computed it before: every bin fully sorted by score."""
    ordered = candidates[np.lexsort((candidates, lengths[candidates]))]
    by_bin = [_by_score(b, scores) for b in np.array_split(ordered, bins)]
    quota = k // bins
    taken = [min(quota, len(b)) for b in by_bin]
    heads = sorted(
        ((i, b[taken[i]]) for i, b in enumerate(by_bin) if taken[i] < len(b)),
        key=lambda h: (-scores[h[1]], h[1]),
    )
    for i, _ in heads[: k % bins]:
        taken[i] += 1
    picked = np.concatenate([b[:t] for b, t in zip(by_bin, taken, strict=True)])
    return _by_score(picked.astype(np.int64), scores)


def measure(rows: int = 10_000_000) -> dict[str, Any]:
    """Seconds of the current select() and of the old score half, and whether they agree."""
    rng = np.random.default_rng(0)
    scores = rng.standard_normal(rows).astype(np.float32)
    lengths = rng.integers(5, 500, rows).astype(np.int32)
    base = np.sort(rng.choice(rows, rows // 20, replace=False))
    scores[base] = np.nan
    config = SelectionConfig(budget=0.05)
    start = time.perf_counter()
    chosen = select(scores=scores, lengths=lengths, base_indices=base, config=config, seed=0)
    t_new = time.perf_counter() - start
    n = config.resolve_budget(rows)
    start = time.perf_counter()
    scored = np.flatnonzero(~np.isnan(scores))
    old_top = _lexsort_binned_top(scored, scores, lengths, n - n // 2, config.num_bins)
    t_old_score_half = time.perf_counter() - start
    return {
        "rows": rows,
        "select_seconds": t_new,
        "previous_score_half_seconds": t_old_score_half,
        "speedup_vs_previous": t_old_score_half / t_new,
        "identical_score_half": bool(np.array_equal(old_top, chosen.indices[: len(old_top)])),
    }
