"""score+diverse: a stratified sample (k-means strata of the pool's embeddings) fills the
non-score half."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.engine.conftest import WriteRows
from tov_engine import ConfigError, JobConfig, SelectionConfig, run_selection
from tov_engine.diversity import PROJECTED_DIM, representative_fill
from tov_engine.leakage import select_excluding
from tov_engine.selection import select


def _mixture(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A planted mixture: one cluster of 900 rows and 12 clusters of 10 rows, well apart."""
    rng = np.random.default_rng(seed)
    sizes = [900] + [10] * 12
    centers = rng.normal(size=(len(sizes), 16)) * 10
    labels = np.repeat(np.arange(len(sizes)), sizes)
    points = centers[labels] + rng.normal(size=(len(labels), 16))
    return points.astype(np.float32), labels


def _clusters(sizes: list[int], dim: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Well-separated Gaussian clusters of the given sizes."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(len(sizes), dim)) * 10
    labels = np.repeat(np.arange(len(sizes)), sizes)
    return (centers[labels] + rng.normal(size=(len(labels), dim))).astype(np.float32), labels


def test_strata_cover_more_clusters_than_uniform_random() -> None:
    points, labels = _clusters([150, 130, 120, 110, 100, 100, 90, 80, 70, 50])
    every = np.arange(len(points))
    covered_strata, covered_random = [], []
    for seed in range(10):
        picked = representative_fill(points, candidates=every, k=10, seed=seed)
        covered_strata.append(len(set(labels[picked].tolist())))
        drawn = np.random.default_rng(seed).choice(every, 10, replace=False)
        covered_random.append(len(set(labels[drawn].tolist())))
    # Ten uniform draws reach about 6.5 of the 10 clusters; one draw per stratum nearly all.
    assert np.mean(covered_strata) >= 9
    assert np.mean(covered_strata) > np.mean(covered_random) + 1.5


def test_strata_follow_the_pool_and_skip_outliers() -> None:
    """Three clusters of 500, 300 and 200 rows and five far outliers: ten picks split about
    5 / 3 / 2 (proportional allocation), and no outlier is picked (k-center greedy would take
    all five first)."""
    points, labels = _clusters([500, 300, 200], dim=8)
    outliers = np.random.default_rng(1).normal(size=(5, 8)) * 60
    points = np.vstack([points, outliers]).astype(np.float32)
    for seed in range(5):
        picked = representative_fill(points, candidates=np.arange(1005), k=10, seed=seed)
        assert not (picked >= 1000).any()
        counts = np.bincount(labels[picked], minlength=3)
        assert counts[0] >= 4 and counts[1] >= 2 and counts[2] >= 1, counts


def test_strata_are_deterministic_for_a_seed_and_distinct() -> None:
    points, _ = _mixture(2)
    every = np.arange(len(points))
    a = representative_fill(points, candidates=every[3:], k=50, seed=7)
    b = representative_fill(points, candidates=every[3:], k=50, seed=7)
    c = representative_fill(points, candidates=every[3:], k=50, seed=8)
    assert a.tolist() == b.tolist()
    assert a.tolist() != c.tolist()
    assert len(set(a.tolist())) == 50 and min(a) >= 3


def test_strata_handle_duplicates_and_wide_embeddings() -> None:
    # Every candidate the same vector: still k distinct rows.
    same = np.ones((20, 4), dtype=np.float32)
    picked = representative_fill(same, candidates=np.arange(1, 20), k=7, seed=0)
    assert len(set(picked.tolist())) == 7 and min(picked) >= 1
    assert representative_fill(same, candidates=np.arange(5), k=5, seed=0).tolist() == [
        0,
        1,
        2,
        3,
        4,
    ]
    # Wider than PROJECTED_DIM: projected first, clusters still found.
    wide, labels = _clusters([70, 70, 70, 70], dim=PROJECTED_DIM * 4)
    picked = representative_fill(wide, candidates=np.arange(280), k=4, seed=1)
    assert len(set(labels[picked].tolist())) >= 3


def test_select_score_diverse_keeps_the_score_part_and_fills_the_rest_from_embeddings() -> None:
    points, labels = _mixture(3)
    size = len(points)
    scores = np.linspace(0, 1, size, dtype=np.float32)
    scores[labels == 0] += 1.0  # the big cluster scores highest
    lengths = np.full(size, 5)
    base = np.arange(0, size, 10)
    scores[base] = np.nan
    kw = dict(scores=scores, lengths=lengths, base_indices=base, seed=4)
    diverse = select(
        config=SelectionConfig(budget=26, strategy="score+diverse"), embeddings=points, **kw
    )  # type: ignore[arg-type]
    plain = select(config=SelectionConfig(budget=26, strategy="score+random"), **kw)  # type: ignore[arg-type]
    assert diverse.sources == ["score"] * 13 + ["diverse"] * 13
    assert diverse.indices[:13].tolist() == plain.indices[:13].tolist()  # the same score part
    assert len(set(diverse.indices.tolist())) == 26
    assert diverse.bins is not None and (diverse.bins[13:] == -1).all()
    # The diverse half follows the pool: the 900-row cluster (88% of it) gets most of it.
    assert int((labels[diverse.indices[13:]] == 0).sum()) >= 10
    with pytest.raises(ConfigError, match="one embedding per pool row"):
        select(config=SelectionConfig(budget=26, strategy="score+diverse"), **kw)  # type: ignore[arg-type]


def test_score_diverse_never_picks_an_excluded_row() -> None:
    points, _ = _mixture(4)
    size = len(points)
    excluded = np.zeros(size, dtype=bool)
    excluded[900:] = True  # every small cluster is off limits
    chosen = select_excluding(
        excluded,
        scores=np.random.default_rng(0).random(size).astype(np.float32),
        lengths=np.full(size, 3),
        base_indices=np.zeros(0, np.int64),
        config=SelectionConfig(budget=40, strategy="score+diverse"),
        seed=0,
        embeddings=points,
    )
    assert len(chosen.indices) == 40 and not excluded[chosen.indices].any()


def test_score_diverse_end_to_end_through_the_engine(
    write_jsonl: WriteRows, tiny_causal_lm_dir: Path, tmp_path: Path
) -> None:
    pool = [{"prompt": f"Q{i}: say {i % 7}.", "completion": f"Answer {i % 7}."} for i in range(60)]
    val = [{"prompt": "Q: say 3.", "completion": "Answer 3."}]
    config = JobConfig(
        selection=SelectionConfig(budget=10, strategy="score+diverse"), seed=2, device="cpu"
    )
    kwargs = dict(
        pool_path=write_jsonl("pool.jsonl", pool),
        validation_path=write_jsonl("val.jsonl", val),
        model=tiny_causal_lm_dir,
        config=config,
        cache_dir=tmp_path / "cache",
    )
    events: list[object] = []
    first = run_selection(**kwargs, progress=events.append)  # type: ignore[arg-type]
    assert first.selection.sources == ["score"] * 5 + ["diverse"] * 5
    assert "embed" in {getattr(e, "stage", None) for e in events}  # the extra pass shows
    assert len(set(first.selection.indices.tolist())) == 10
    assert first.stats["pool_embeddings_reused"] is False
    second = run_selection(**kwargs)  # type: ignore[arg-type]
    assert second.stats["pool_embeddings_reused"] is True  # the pool cache kept them
    assert second.selection.indices.tolist() == first.selection.indices.tolist()


def test_the_engine_cli_runs_rds_and_score_diverse(
    write_jsonl: WriteRows, tiny_causal_lm_dir: Path, tmp_path: Path
) -> None:
    import json

    from tov_engine.cli import main

    pool = [{"prompt": f"Q{i}: say {i % 5}.", "completion": f"Answer {i % 5}."} for i in range(30)]
    files = [
        "--pool",
        str(write_jsonl("pool.jsonl", pool)),
        "--validation",
        str(write_jsonl("val.jsonl", pool[:2])),
        "--model",
        str(tiny_causal_lm_dir),
        "--budget",
        "6",
        "--device",
        "cpu",
    ]
    for extra, sources in (
        (["--strategy", "score+diverse"], ["score"] * 3 + ["diverse"] * 3),
        (["--method", "rds"], ["score"] * 6),
    ):
        out = tmp_path / f"{extra[1]}.jsonl"
        assert main(["select", *files, *extra, "--out", str(out)]) == 0
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert [r["source"] for r in rows] == sources
