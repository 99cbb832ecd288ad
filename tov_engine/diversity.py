"""The non-score part of a `score+diverse` selection: a stratified sample of the pool, strata
from k-means over the pool's embeddings.

The score part of a selection chases the validation signal; the other part keeps the training
set representative of the pool, as insurance against a misleading score. Uniform random
(score+random) does that in expectation but with sampling noise: a draw of 50 rows can over- or
under-represent whole regions of the pool. Here the candidates are clustered into k strata by
k-means over their embeddings (k-means++ seeding, a few Lloyd iterations); each stratum gets a
number of picks in proportion to its size (largest remainder), drawn uniformly from its members.
That is proportional stratified sampling: every row keeps about the same chance of being picked
as under uniform random (so the part is as representative as random's), while each region of the
pool gets its share of picks instead of a lucky or unlucky draw; a stratum of a few far outliers
(k-means gives them a centre of their own) gets no pick.

Rules we tried and dropped (docs/engine.md, "score+diverse"): "far from what the score picked"
(k-center greedy, or D^2 sampling seeded with the score picks) avoids, by construction, the region
the score picks cover, which is where the target lies; the strata's medoids (their most central
rows) are bland rows, unlike the pool's mix. Single-selection fine-tunes on the large benchmark
could not rank these rules: two uniform random halves of the same selection already gave test
losses of 0.57 and 1.32; the benchmark's seeds decide.

Pure numpy. Cost: O(I k N d) for N candidates, k picks, I = ITERATIONS, d <= PROJECTED_DIM
(wider embeddings are first reduced by a seeded Gaussian projection). Deterministic for a seed.
"""

from __future__ import annotations

import numpy as np

PROJECTED_DIM = 128  # wider embeddings are randomly projected to this width first
ITERATIONS = 8  # Lloyd iterations after k-means++ seeding
CHUNK = 4096  # candidate rows per distance block


def _reduced(vectors: np.ndarray, seed: int) -> np.ndarray:
    """(N, d) float32 rows, with d > PROJECTED_DIM reduced by a seeded Gaussian projection."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if vectors.shape[1] <= PROJECTED_DIM:
        return vectors
    rng = np.random.default_rng([seed, 7])
    matrix = rng.standard_normal((vectors.shape[1], PROJECTED_DIM)).astype(np.float32)
    return (vectors @ matrix) / np.float32(np.sqrt(PROJECTED_DIM))


def _nearest(points: np.ndarray, centers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each point's nearest centre and its squared distance, in blocks of CHUNK points."""
    assign = np.empty(len(points), dtype=np.int64)
    dist = np.empty(len(points), dtype=np.float64)
    c_norms = np.einsum("kd,kd->k", centers, centers)
    for a in range(0, len(points), CHUNK):
        block = points[a : a + CHUNK]
        d = np.einsum("nd,nd->n", block, block)[:, None] - 2.0 * block @ centers.T + c_norms
        assign[a : a + CHUNK] = np.argmin(d, axis=1)
        dist[a : a + CHUNK] = np.maximum(d[np.arange(len(block)), assign[a : a + CHUNK]], 0.0)
    return assign, dist


def _seed_centers(points: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k-means++ seeding: each next centre a point drawn with probability ~ its squared distance
    to the nearest centre so far (uniform once every point sits on a centre)."""
    norms = np.einsum("nd,nd->n", points, points)
    first = int(rng.integers(len(points)))
    chosen = [first]
    nearest = np.maximum(norms + norms[first] - 2.0 * points @ points[first], 0.0)
    for _ in range(1, k):
        total = float(nearest.sum())
        j = (
            int(rng.choice(len(points), p=nearest / total))
            if total > 0
            else int(rng.integers(len(points)))
        )
        chosen.append(j)
        nearest = np.minimum(nearest, np.maximum(norms + norms[j] - 2.0 * points @ points[j], 0.0))
    return points[np.asarray(chosen)].astype(np.float64)


def representative_fill(
    embeddings: np.ndarray, *, candidates: np.ndarray, k: int, seed: int
) -> np.ndarray:
    """`k` rows of `candidates`: a proportional stratified sample, strata from a k-means
    clustering of their embeddings (k strata; each stratum's count in proportion to its size by
    largest remainder, drawn uniformly from its members).

    Args:
        embeddings: (N, d) one vector per pool row (e.g. unit-norm mean hidden states).
        candidates: pool indices that may be picked.
        k: rows to pick (at most len(candidates)). seed: the clustering's seed.
    Returns:
        (k,) int64 distinct pool indices, sorted.
    """
    candidates = np.asarray(candidates, dtype=np.int64)
    k = max(0, min(int(k), len(candidates)))
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    if k == len(candidates):
        return np.sort(candidates)
    rng = np.random.default_rng([seed, 11])
    points = _reduced(embeddings, seed)[candidates].astype(np.float64)
    centers = _seed_centers(points, k, rng)
    for _ in range(ITERATIONS):
        assign, _ = _nearest(points, centers)
        sums = np.zeros_like(centers)
        np.add.at(sums, assign, points)
        counts = np.bincount(assign, minlength=k)
        filled = counts > 0
        centers[filled] = sums[filled] / counts[filled, None]
    assign, _ = _nearest(points, centers)
    # Each cluster's share of the k picks, by its share of the candidates (largest remainder), so
    # a cluster of a few far outliers gets none; its picks are drawn uniformly from its members.
    sizes = np.bincount(assign, minlength=k)
    exact = k * sizes / len(points)
    quota = np.floor(exact).astype(np.int64)
    by_remainder = np.lexsort((np.arange(k), -(exact - quota)))
    quota[by_remainder[: k - int(quota.sum())]] += 1
    draw = rng.random(len(points))  # a random order within each cluster
    order = np.lexsort((draw, assign))
    rank = np.empty(len(points), dtype=np.int64)
    starts = np.searchsorted(assign[order], np.arange(k))
    rank[order] = np.arange(len(points)) - starts[assign[order]]
    picked = np.flatnonzero(rank < quota[assign])
    return np.sort(candidates[picked])
