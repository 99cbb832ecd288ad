"""Selection: length bins, quotas, remainders, ties, the score+random split, budgets."""

from __future__ import annotations

import numpy as np
import pytest

from tov_engine import ConfigError, SelectionConfig, select
from tov_engine.selection import binned_top, bins_for, length_bins, select_random, select_top


def _nan_base(scores: np.ndarray, base: np.ndarray) -> np.ndarray:
    out = scores.astype(np.float32).copy()
    out[base] = np.nan
    return out


def test_length_bins_are_equal_count_and_sorted_by_length() -> None:
    lengths = np.array([5, 1, 4, 2, 3, 6, 8, 7, 9, 10])
    bins = length_bins(np.arange(10), lengths, 5)
    assert [len(b) for b in bins] == [2] * 5
    assert [sorted(lengths[b].tolist()) for b in bins] == [[1, 2], [3, 4], [5, 6], [7, 8], [9, 10]]


def test_equal_quota_per_bin_beats_global_top() -> None:
    # Short rows score high; a global top-4 would take only short rows.
    lengths = np.array([1, 1, 1, 1, 10, 10, 10, 10])
    scores = np.array([9, 8, 7, 6, 1, 2, 3, 4], dtype=np.float32)
    picked = binned_top(np.arange(8), scores, lengths, 4, 2)
    assert sorted(picked.tolist()) == [0, 1, 6, 7]
    assert picked.tolist() == [0, 1, 7, 6]  # descending score


def test_remainders_go_to_bins_with_best_next_candidate() -> None:
    lengths = np.array([1, 1, 1, 5, 5, 5, 9, 9, 9])
    scores = np.array([10, 1, 0, 9, 8, 0, 7, 2, 0], dtype=np.float32)
    # 3 bins, k = 5: one each (0, 3, 6); two remainders to the bins whose next is best: 4, 7.
    picked = binned_top(np.arange(9), scores, lengths, 5, 3)
    assert sorted(picked.tolist()) == [0, 3, 4, 6, 7]


def test_underfull_bins_give_quota_away() -> None:
    lengths = np.array([1, 2, 3, 4, 5])
    scores = np.array([1, 2, 3, 4, 5], dtype=np.float32)
    # 5 bins of one row each cannot hold a quota of 2: the top 4 overall fill it.
    picked = binned_top(np.arange(5), scores, lengths, 4, 2)
    assert sorted(picked.tolist()) == [1, 2, 3, 4]
    # more bins than candidates: empty bins, still k rows
    assert len(binned_top(np.arange(5), scores, lengths, 3, 10)) == 3


def test_ties_broken_by_lower_index() -> None:
    lengths = np.ones(6, dtype=np.int32)
    scores = np.zeros(6, dtype=np.float32)
    picked = binned_top(np.arange(6), scores, lengths, 3, 1)
    assert picked.tolist() == [0, 1, 2]
    assert select_top(scores=scores, n=2).indices.tolist() == [0, 1]


@pytest.mark.parametrize("budget,expected", [(10, 10), (0.25, 10), (0.5, 20), (0.01, 1), (40, 40)])
def test_selection_size_equals_budget(budget: float, expected: int) -> None:
    rng = np.random.default_rng(1)
    base = np.arange(0, 40, 4)
    scores = _nan_base(rng.normal(size=40), base)
    lengths = rng.integers(1, 50, size=40)
    for strategy in ("score+random", "score-only"):
        cfg = SelectionConfig(budget=budget, strategy=strategy, num_bins=3)
        sel = select(scores=scores, lengths=lengths, base_indices=base, config=cfg, seed=0)
        assert len(sel.indices) == expected == len(sel.sources) == len(sel.scores)
        assert len(np.unique(sel.indices)) == expected


def test_score_random_split_half_from_u() -> None:
    rng = np.random.default_rng(2)
    base = np.arange(0, 100, 10)  # |U| = 10 = n / 2
    scores = _nan_base(rng.normal(size=100), base)
    cfg = SelectionConfig(budget=20)
    sel = select(scores=scores, lengths=np.ones(100), base_indices=base, config=cfg, seed=3)
    assert sel.sources == ["score"] * 10 + ["random"] * 10
    assert sorted(sel.indices[10:].tolist()) == base.tolist()  # the random half is exactly U
    assert not np.isin(sel.indices[:10], base).any()
    assert np.all(np.diff(sel.scores[:10]) <= 0)  # descending
    assert np.isnan(sel.scores[10:]).all()


def test_small_u_rest_drawn_from_r() -> None:
    rng = np.random.default_rng(4)
    base = np.array([3, 7])
    scores = _nan_base(rng.normal(size=50), base)
    cfg = SelectionConfig(budget=20, num_bins=2)
    sel = select(scores=scores, lengths=np.arange(50), base_indices=base, config=cfg, seed=0)
    random_part = sel.indices[np.array(sel.sources) == "random"]
    assert sel.sources.count("score") == 10 and len(random_part) == 10
    assert set(base.tolist()) <= set(random_part.tolist())
    assert len(set(sel.indices.tolist())) == 20


def test_score_only_takes_binned_top() -> None:
    scores = np.arange(10, dtype=np.float32)
    cfg = SelectionConfig(budget=4, strategy="score-only", num_bins=1)
    sel = select(
        scores=scores,
        lengths=np.ones(10),
        base_indices=np.array([], dtype=np.int64),
        config=cfg,
        seed=0,
    )
    assert sel.indices.tolist() == [9, 8, 7, 6] and sel.sources == ["score"] * 4


def test_same_seed_same_selection_other_seed_other_random_half() -> None:
    rng = np.random.default_rng(5)
    base = np.arange(0, 200, 2)
    scores = _nan_base(rng.normal(size=200), base)
    lengths = rng.integers(1, 100, size=200)
    cfg = SelectionConfig(budget=0.2)
    runs = [
        select(scores=scores, lengths=lengths, base_indices=base, config=cfg, seed=s)
        for s in (7, 7, 8)
    ]
    assert np.array_equal(runs[0].indices, runs[1].indices)
    assert np.array_equal(runs[0].indices[:20], runs[2].indices[:20])  # the score part
    assert not np.array_equal(runs[0].indices[20:], runs[2].indices[20:])


def test_nan_scored_rows_are_never_picked_by_score() -> None:
    scores = np.array([np.nan, 5, np.nan, 1], dtype=np.float32)
    cfg = SelectionConfig(budget=3, strategy="score-only", num_bins=1)
    sel = select(
        scores=scores,
        lengths=np.ones(4),
        base_indices=np.zeros(0, dtype=np.int64),
        config=cfg,
        seed=0,
    )
    assert sel.indices[:2].tolist() == [1, 3] and sel.sources == ["score", "score", "random"]


def test_tiny_pools() -> None:
    cfg = SelectionConfig(budget=1)
    one = select(
        scores=np.array([np.nan, 0.5], dtype=np.float32),
        lengths=np.array([1, 1]),
        base_indices=np.array([0]),
        config=cfg,
        seed=0,
    )
    assert one.indices.tolist() == [1] and one.sources == ["score"]
    two = select(
        scores=np.array([np.nan, 0.5], dtype=np.float32),
        lengths=np.array([1, 1]),
        base_indices=np.array([0]),
        config=SelectionConfig(budget=2),
        seed=0,
    )
    assert two.indices.tolist() == [1, 0] and two.sources == ["score", "random"]


def test_budget_above_pool_is_refused() -> None:
    with pytest.raises(ConfigError, match="exceeds the pool"):
        select(
            scores=np.zeros(3),
            lengths=np.ones(3),
            base_indices=np.zeros(0, dtype=np.int64),
            config=SelectionConfig(budget=4),
            seed=0,
        )


@pytest.mark.parametrize(
    "k,num_bins,min_per_bin,expected",
    [
        (4, 10, 5, 1),
        (9, 10, 5, 1),
        (10, 10, 5, 2),
        (49, 10, 5, 9),
        (500, 10, 5, 10),
        (4, 10, 0, 10),
    ],
)
def test_bins_for_caps_bins_by_picks_per_bin(
    k: int, num_bins: int, min_per_bin: int, expected: int
) -> None:
    assert bins_for(k, num_bins, min_per_bin) == expected


def test_bins_for_refuses_negative() -> None:
    with pytest.raises(ConfigError, match="min_per_bin"):
        bins_for(4, 10, -1)


def test_min_per_bin_lets_the_score_pick_rows_of_one_length_range() -> None:
    # 8 of 100 rows are relevant (highest scores) and all short: 10 bins take one pick per length
    # range; with min_per_bin = 5 an 8-row score-only budget uses one bin and takes all 8.
    rng = np.random.default_rng(0)
    lengths = np.concatenate([np.full(8, 2), rng.integers(3, 40, size=92)])
    scores = np.concatenate([np.full(8, 5.0), rng.normal(size=92)]).astype(np.float32)
    base = np.zeros(0, dtype=np.int64)
    cfg = SelectionConfig(budget=8, strategy="score-only", num_bins=10)
    paper = select(scores=scores, lengths=lengths, base_indices=base, config=cfg, seed=0)
    capped = select(
        scores=scores, lengths=lengths, base_indices=base, config=cfg, seed=0, min_per_bin=5
    )
    assert int((paper.indices < 8).sum()) == 1
    assert sorted(capped.indices.tolist()) == list(range(8))
    # min_per_bin 0 is the paper's rule; with enough picks per bin the cap changes nothing.
    zero = select(
        scores=scores, lengths=lengths, base_indices=base, config=cfg, seed=0, min_per_bin=0
    )
    assert np.array_equal(zero.indices, paper.indices)
    big = SelectionConfig(budget=60, strategy="score-only", num_bins=10)
    a = select(scores=scores, lengths=lengths, base_indices=base, config=big, seed=0)
    b = select(scores=scores, lengths=lengths, base_indices=base, config=big, seed=0, min_per_bin=5)
    assert np.array_equal(a.indices, b.indices)
    # The same rule as a config field (what the API and the CLI set).
    configured = SelectionConfig(budget=8, strategy="score-only", num_bins=10, min_per_bin=5)
    via_config = select(
        scores=scores, lengths=lengths, base_indices=base, config=configured, seed=0
    )
    assert np.array_equal(via_config.indices, capped.indices)


def test_random_baseline_is_uniform_and_seeded() -> None:
    a = select_random(pool_size=100, n=10, seed=1)
    b = select_random(pool_size=100, n=10, seed=1)
    assert np.array_equal(a.indices, b.indices) and len(set(a.indices.tolist())) == 10
    assert a.sources == ["random"] * 10


def test_selection_module_does_not_import_torch() -> None:
    import subprocess
    import sys

    code = "import sys, tov_engine.selection; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
