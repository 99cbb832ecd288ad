"""Choosing the subset from scores: length bins; score+random, score+diverse or score-only; a
budget.

Pure numpy (no torch): re-selecting from stored scores runs on machines without torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tov_engine.config import SelectionConfig
from tov_engine.diversity import representative_fill
from tov_engine.errors import ConfigError

# Strategies whose non-score part is drawn from the pool's embeddings (tov_engine.diversity).
EMBEDDING_STRATEGIES = ("score+diverse",)


@dataclass(frozen=True)
class Selection:
    """The chosen rows: the score part in descending score (then index), the rest after (random:
    by index; diverse: by index)."""

    indices: np.ndarray  # (n,) int64 pool indices
    scores: np.ndarray  # (n,) float32, NaN for random picks without a score
    sources: list[str]  # "score" | "random" | "diverse" per selected row
    # Why each row was picked (None where a method has no such notion, e.g. the random baseline):
    # a score pick's length bin (0 = shortest), its rank by score within that bin (1 = best) and
    # how many score picks its bin got (its rank is always within that quota); -1 for random picks.
    bins: np.ndarray | None = None  # (n,) int32
    bin_ranks: np.ndarray | None = None  # (n,) int32
    bin_quotas: np.ndarray | None = None  # (n,) int32


@dataclass(frozen=True)
class Binning:
    """Every pool row's place in the selection's length bins: for each row the score part could
    pick (scored, outside the base subset), its bin (0 = shortest) and its 1-based rank by score
    within that bin (ties by lower index); -1 for every other row."""

    bins: np.ndarray  # (N,) int32
    ranks: np.ndarray  # (N,) int32


def _by_score(candidates: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Candidates sorted by descending score, ties by lower index."""
    return candidates[np.lexsort((candidates, -scores[candidates]))]


def _top_by_score(candidates: np.ndarray, scores: np.ndarray, k: int) -> np.ndarray:
    """`_by_score(candidates, scores)[:k]`, without sorting all of a large candidate set.

    A partition finds the k-th best score; only the rows above it and the lowest-index rows tied
    with it are sorted. NaN scores (which sort last) take the plain path.
    """
    k = max(0, min(k, len(candidates)))
    if k == 0 or 8 * k >= len(candidates):
        return _by_score(candidates, scores)[:k]
    neg = -scores[candidates]
    if np.isnan(neg).any():
        return _by_score(candidates, scores)[:k]
    kth = np.partition(neg, k - 1)[k - 1]
    better = candidates[neg < kth]
    tied = np.sort(candidates[neg == kth])[: k - len(better)]
    return _by_score(np.concatenate([better, tied]), scores)


def _sorted_by_length(candidates: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Candidates in (length, index) order: a stable sort of the lengths of sorted candidates."""
    if len(candidates) > 1 and not bool(np.all(candidates[1:] > candidates[:-1])):
        candidates = np.sort(candidates)
    keys = lengths[candidates]
    if keys.dtype.kind in "iu" and len(keys) and keys.min() >= 0 and keys.max() < 2**16:
        keys = keys.astype(np.uint16)  # numpy sorts 16-bit keys stably by radix: O(N)
    return candidates[np.argsort(keys, kind="stable")]


def length_bins(candidates: np.ndarray, lengths: np.ndarray, num_bins: int) -> list[np.ndarray]:
    """Split candidates into `num_bins` equal-count bins by length (ties by index).

    Bin sizes differ by at most one; with fewer candidates than bins some bins are empty.
    """
    return list(np.array_split(_sorted_by_length(candidates, lengths), num_bins))


def bins_for(k: int, num_bins: int, min_per_bin: int = 0) -> int:
    """Length bins for `k` score picks: `num_bins`, or fewer so that each bin gets `min_per_bin`.

    With k picks and b bins each bin's quota is about k / b; for k < b the bins force one pick per
    length range and the score decides little (a target whose rows share a length range gets one
    pick). min_per_bin > 0 caps the bins at k // min_per_bin (at least 1); 0 keeps num_bins (the
    paper's rule).

    Examples: (k=4, 10 bins, 5) -> 1; (k=10, 10, 5) -> 2; (k=500, 10, 5) -> 10; (k=4, 10, 0) -> 10.
    """
    if min_per_bin < 0:
        raise ConfigError(f"min_per_bin must be >= 0, got {min_per_bin}")
    if min_per_bin == 0:
        return num_bins
    return max(1, min(num_bins, k // min_per_bin))


def binned_top(
    candidates: np.ndarray, scores: np.ndarray, lengths: np.ndarray, k: int, num_bins: int
) -> np.ndarray:
    """The top `k` candidates with an equal quota per length bin.

    Each bin gets k // num_bins; the k % num_bins remainders go, one each, to the bins whose next
    candidates score highest; quota a short bin cannot fill goes to the highest remaining
    candidates of any bin. Ties are broken by the lower index throughout.

    Returns:
        (k,) int64 indices in descending score order (ties by index).
    """
    return _binned_top(candidates, scores, lengths, k, num_bins)[0]


def _binned_top(
    candidates: np.ndarray, scores: np.ndarray, lengths: np.ndarray, k: int, num_bins: int
) -> tuple[np.ndarray, list[np.ndarray]]:
    """binned_top, and the length bins it picked from."""
    k = min(k, len(candidates))
    raw = length_bins(candidates, lengths, num_bins)
    quota = k // num_bins
    # Each bin's best quota + 1 (the extra one competes for a remainder), sorted.
    bins = [_top_by_score(b, scores, quota + 1) for b in raw]
    taken = [min(quota, len(b)) for b in raw]
    # Remainders: at most one extra per bin, to the bins with the best next candidate.
    heads = [(i, b[taken[i]]) for i, b in enumerate(bins) if taken[i] < len(b)]
    heads.sort(key=lambda h: (-scores[h[1]], h[1]))
    for i, _ in heads[: k % num_bins]:
        taken[i] += 1
    chosen = [b[:t] for b, t in zip(bins, taken, strict=True)]
    short = k - sum(taken)
    if short > 0:  # under-full bins gave their quota away (all bins are small then)
        full = [_by_score(b, scores) for b in raw]
        rest = np.concatenate([b[t:] for b, t in zip(full, taken, strict=True)])
        chosen.append(_by_score(rest, scores)[:short])
    picked = np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int64)
    return _by_score(picked.astype(np.int64), scores), raw


def _ranks_in_bins(picked: np.ndarray, raw: list[np.ndarray], size: int) -> tuple[np.ndarray, ...]:
    """(bins, ranks, quotas) of score picks in descending score order: each bin's picks are its
    best candidates (binned_top), so a pick's place among its bin's picks is its rank there."""
    bin_of = np.full(size, -1, dtype=np.int32)
    for b, part in enumerate(raw):
        bin_of[part] = b
    bins = bin_of[picked]
    order = np.argsort(bins, kind="stable")  # by bin, score order kept within a bin
    ordered = bins[order]
    ranks = np.empty(len(picked), dtype=np.int32)
    ranks[order] = np.arange(len(picked)) - np.searchsorted(ordered, ordered, side="left") + 1
    quotas = np.bincount(bins, minlength=len(raw)).astype(np.int32)[bins]
    return bins, ranks, quotas


def _random(rng: np.random.Generator, pool: np.ndarray, k: int) -> np.ndarray:
    k = min(k, len(pool))
    return np.sort(rng.choice(pool, size=k, replace=False)).astype(np.int64)


def _check(scores: np.ndarray, lengths: np.ndarray, base: np.ndarray, n: int) -> np.ndarray:
    """Validate the inputs; returns the (N,) bool mask of the base subset."""
    size = len(scores)
    if lengths.shape != (size,):
        raise ConfigError(f"lengths has shape {lengths.shape}, scores has {scores.shape}")
    in_base = np.zeros(size, dtype=bool)
    if len(base):
        if base.min() < 0 or base.max() >= size:
            raise ConfigError("base_indices must be distinct pool indices")
        in_base[base] = True
        if int(np.count_nonzero(in_base)) != len(base):  # a mask, not np.unique: O(N), no sort
            raise ConfigError("base_indices must be distinct pool indices")
    if n > size:
        raise ConfigError(f"the budget of {n} rows exceeds the pool of {size} rows")
    return in_base


def select(
    *,
    scores: np.ndarray,
    lengths: np.ndarray,
    base_indices: np.ndarray,
    config: SelectionConfig,
    seed: int,
    min_per_bin: int | None = None,
    embeddings: np.ndarray | None = None,
) -> Selection:
    """Pick the subset for a budget from per-row scores.

    Args:
        scores: (N,) per pool row; NaN rows (the base subset U, rows without loss tokens) are never
            picked by score. lengths: (N,) loss-bearing tokens per row, for the length bins.
        base_indices: (|U|,) the base subset. config: budget, strategy, bins. seed: for the draws.
        min_per_bin: overrides config.min_per_bin when given. 0 (the paper's rule) uses
            config.num_bins bins; > 0 uses fewer when the score part would give a bin fewer than
            this many picks (`bins_for`).
        embeddings: (N, d) one vector per pool row; required by score+diverse only.
    Returns:
        The Selection. score+random: ceil(n/2) by binned score from R = X minus U, floor(n/2) at
        random from U, and, when U or the scored rows run short, the rest at random from the
        remaining rows of R, then of U. score-only: all n by binned score, same fallback.
        score+diverse: the same score part, then the rest as the k-means medoids of the
        embeddings of every row not yet taken (U and R alike; tov_engine.diversity).
    """
    scores = np.asarray(scores, dtype=np.float32)
    lengths = np.asarray(lengths)
    base = np.asarray(base_indices, dtype=np.int64)
    n, half, num_bins, scored, in_base = _plan(scores, lengths, base, config, min_per_bin)
    top, raw = _binned_top(scored, scores, lengths, n - half, num_bins)
    if config.strategy in EMBEDDING_STRATEGIES:
        return _with_diverse(top, raw, scores, n, embeddings, seed)
    rng = np.random.default_rng(seed)
    from_u = _random(rng, np.sort(base), half)
    taken = np.zeros(len(scores), dtype=bool)
    taken[top] = taken[from_u] = True
    rest_r = np.flatnonzero(~taken & ~in_base)
    extra = _random(rng, rest_r, n - len(top) - len(from_u))
    taken[extra] = True
    rest_u = np.flatnonzero(~taken & in_base)
    extra_u = _random(rng, rest_u, n - len(top) - len(from_u) - len(extra))
    randoms = np.sort(np.concatenate([from_u, extra, extra_u]))
    indices = np.concatenate([top, randoms]).astype(np.int64)
    none = np.full(len(randoms), -1, dtype=np.int32)
    bins, ranks, quotas = _ranks_in_bins(top, raw, len(scores))
    return Selection(
        indices=indices,
        scores=scores[indices].astype(np.float32),
        sources=["score"] * len(top) + ["random"] * len(randoms),
        bins=np.concatenate([bins, none]),
        bin_ranks=np.concatenate([ranks, none]),
        bin_quotas=np.concatenate([quotas, none]),
    )


def _with_diverse(
    top: np.ndarray,
    raw: list[np.ndarray],
    scores: np.ndarray,
    n: int,
    embeddings: np.ndarray | None,
    seed: int,
) -> Selection:
    """The score picks `top`, then n - len(top) k-means medoids of every other row."""
    if embeddings is None or len(embeddings) != len(scores):
        got = "none" if embeddings is None else f"{len(embeddings)} rows"
        raise ConfigError(
            f"strategy score+diverse needs one embedding per pool row ({len(scores)}), got {got}"
        )
    taken = np.zeros(len(scores), dtype=bool)
    taken[top] = True
    drawn = representative_fill(
        embeddings, candidates=np.flatnonzero(~taken), k=n - len(top), seed=seed
    )
    indices = np.concatenate([top, drawn]).astype(np.int64)
    none = np.full(len(drawn), -1, dtype=np.int32)
    bins, ranks, quotas = _ranks_in_bins(top, raw, len(scores))
    return Selection(
        indices=indices,
        scores=scores[indices].astype(np.float32),
        sources=["score"] * len(top) + ["diverse"] * len(drawn),
        bins=np.concatenate([bins, none]),
        bin_ranks=np.concatenate([ranks, none]),
        bin_quotas=np.concatenate([quotas, none]),
    )


def _plan(
    scores: np.ndarray,
    lengths: np.ndarray,
    base: np.ndarray,
    config: SelectionConfig,
    min_per_bin: int | None,
) -> tuple[int, int, int, np.ndarray, np.ndarray]:
    """(budget n, random half, length bins, the score part's candidates, the base mask)."""
    n = config.resolve_budget(len(scores))
    in_base = _check(scores, lengths, base, n)
    scored = np.flatnonzero(~in_base & ~np.isnan(scores))
    half = n // 2 if config.strategy in ("score+random", *EMBEDDING_STRATEGIES) else 0
    per_bin = config.min_per_bin if min_per_bin is None else min_per_bin
    return n, half, bins_for(n - half, config.num_bins, per_bin), scored, in_base


def binning(
    *,
    scores: np.ndarray,
    lengths: np.ndarray,
    base_indices: np.ndarray,
    config: SelectionConfig,
    min_per_bin: int | None = None,
    excluded: np.ndarray | None = None,
) -> Binning:
    """Every row's length bin and rank by score within it, under the bins `select` makes for the
    same arguments (the rank of a score pick equals its Selection.bin_ranks entry). `excluded`:
    an (N,) bool mask of rows never selected (leakage "exclude"): they are no candidates, as when
    `select` runs on the other rows only."""
    scores = np.asarray(scores, dtype=np.float32)
    lengths = np.asarray(lengths)
    base = np.asarray(base_indices, dtype=np.int64)
    _, _, num_bins, scored, _ = _plan(scores, lengths, base, config, min_per_bin)
    if excluded is not None:
        scored = scored[~np.asarray(excluded, dtype=bool)[scored]]
    return ranked_bins(scored, scores, lengths, num_bins)


def ranked_bins(
    candidates: np.ndarray, scores: np.ndarray, lengths: np.ndarray, num_bins: int
) -> Binning:
    """The Binning of `candidates` in `num_bins` equal-count length bins (1 bin: a global rank)."""
    bins = np.full(len(scores), -1, dtype=np.int32)
    ranks = np.full(len(scores), -1, dtype=np.int32)
    for b, part in enumerate(length_bins(candidates, lengths, num_bins)):
        ordered = _by_score(part, scores)
        bins[ordered] = b
        ranks[ordered] = np.arange(1, len(ordered) + 1, dtype=np.int32)
    return Binning(bins=bins, ranks=ranks)


def select_top(*, scores: np.ndarray, n: int) -> Selection:
    """The global top `n` by score (ties by index), no bins: the LESS baseline's rule."""
    scores = np.asarray(scores, dtype=np.float32)
    if n > len(scores):
        raise ConfigError(f"the budget of {n} rows exceeds the pool of {len(scores)} rows")
    top = _top_by_score(np.flatnonzero(~np.isnan(scores)), scores, n)
    one = np.zeros(len(top), dtype=np.int32)  # one bin: the whole pool, ranked
    return Selection(
        indices=top.astype(np.int64),
        scores=scores[top],
        sources=["score"] * len(top),
        bins=one,
        bin_ranks=np.arange(1, len(top) + 1, dtype=np.int32),
        bin_quotas=one + len(top),
    )


def select_random(*, pool_size: int, n: int, seed: int) -> Selection:
    """A uniform sample of `n` rows (the random baseline), sorted by index."""
    if n > pool_size:
        raise ConfigError(f"the budget of {n} rows exceeds the pool of {pool_size} rows")
    picked = _random(np.random.default_rng(seed), np.arange(pool_size, dtype=np.int64), n)
    nan = np.full(len(picked), np.nan, dtype=np.float32)
    return Selection(indices=picked, scores=nan, sources=["random"] * len(picked))


# Methods whose scores are a ranking that already encodes their own selection rule: all of the
# budget by score, one length bin (RDS+: the round-robin order over the validation rows).
RANKED_METHODS = ("rds",)


def selection_for_method(method: str, config: SelectionConfig) -> SelectionConfig:
    """The selection settings a method's scores are selected with: RDS+ takes its ranking's
    prefix (score-only, one bin) whatever the strategy and bins asked; others as configured."""
    if method in RANKED_METHODS:
        return SelectionConfig(budget=config.budget, strategy="score-only", num_bins=1)
    return config
