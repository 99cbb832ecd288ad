"""The diverse part of a `score+diverse` selection: k-means++ seeding over the pool's embeddings.

The score part of a selection chases the validation signal; the other part is insurance against a
misleading score. Uniform random (ToV's score+random) spends that insurance in proportion to the
pool's density, so a large uninformative cluster soaks up most of it. Here each next row is drawn
with probability proportional to its squared distance to the nearest row already chosen (the
score picks count as chosen): the D^2 sampling of k-means++ (Arthur & Vassilvitskii 2007), used for
the same purpose by BADGE (Ash et al. 2020). Regions the score picks and earlier draws already
cover are rarely drawn again; every cluster is reached quickly. Unlike k-center greedy (always the
farthest row) it does not chase isolated outliers, and unlike facility location or MMR it needs no
N x N similarity matrix and no trade-off weight to tune.

Pure numpy. Cost: O(k N d) for k draws over N candidates of d dimensions (one distance update per
draw); embeddings wider than PROJECTED_DIM are first reduced by a seeded Gaussian projection
(distances kept within a few percent), so d <= PROJECTED_DIM. Deterministic for a seed.
"""

from __future__ import annotations

import numpy as np

PROJECTED_DIM = 128  # wider embeddings are randomly projected to this width first


def _reduced(vectors: np.ndarray, seed: int) -> np.ndarray:
    """(N, d) float32 rows, with d > PROJECTED_DIM reduced by a seeded Gaussian projection."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.shape[1] <= PROJECTED_DIM:
        return vectors
    rng = np.random.default_rng([seed, 7])
    matrix = rng.standard_normal((vectors.shape[1], PROJECTED_DIM)).astype(np.float32)
    return (vectors @ matrix) / np.float32(np.sqrt(PROJECTED_DIM))


def _sq_distance(points: np.ndarray, norms: np.ndarray, center: np.ndarray) -> np.ndarray:
    """Squared Euclidean distance of each row of `points` to `center` (never below 0)."""
    d = norms + float(center @ center) - 2.0 * (points @ center)
    return np.maximum(d, 0.0)


def diverse_fill(
    embeddings: np.ndarray,
    *,
    chosen: np.ndarray,
    candidates: np.ndarray,
    k: int,
    seed: int,
) -> np.ndarray:
    """`k` rows of `candidates` by D^2 sampling, given the rows already `chosen`.

    Args:
        embeddings: (N, d) one vector per pool row (e.g. unit-norm mean hidden states).
        chosen: pool indices already selected (the score picks); they seed the distances.
        candidates: pool indices that may be drawn (not overlapping `chosen`).
        k: rows to draw (at most len(candidates)). seed: the draw's seed.
    Returns:
        (k,) int64 pool indices in draw order. With nothing chosen yet the first draw is uniform;
        once every candidate lies on a chosen row (distance 0) the rest are drawn uniformly.
    """
    candidates = np.asarray(candidates, dtype=np.int64)
    k = max(0, min(int(k), len(candidates)))
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng([seed, 11])
    reduced = _reduced(embeddings, seed)
    points = reduced[candidates]
    norms = np.einsum("nd,nd->n", points, points)
    nearest = np.full(len(candidates), np.inf, dtype=np.float64)
    for c in np.asarray(chosen, dtype=np.int64):
        nearest = np.minimum(nearest, _sq_distance(points, norms, reduced[c]))
    free = np.ones(len(candidates), dtype=bool)
    picked = np.empty(k, dtype=np.int64)
    for step in range(k):
        weights = np.where(free, nearest, 0.0)
        total = float(weights.sum())
        if not np.isfinite(total) or total <= 0.0:
            # Nothing chosen yet, or every free candidate sits on a chosen row: uniform.
            j = int(rng.choice(np.flatnonzero(free)))
        else:
            j = int(rng.choice(len(candidates), p=weights / total))
        picked[step] = candidates[j]
        free[j] = False
        nearest = np.minimum(nearest, _sq_distance(points, norms, points[j]))
    return picked
