"""score+diverse: D^2 sampling over the pool's embeddings fills the non-score half."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.engine.conftest import WriteRows
from tov_engine import ConfigError, JobConfig, SelectionConfig, run_selection
from tov_engine.diversity import PROJECTED_DIM, diverse_fill
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


def test_diverse_fill_covers_more_clusters_than_uniform_random() -> None:
    points, labels = _mixture()
    every = np.arange(len(points))
    covered_diverse, covered_random = [], []
    for seed in range(10):
        picked = diverse_fill(
            points, chosen=np.zeros(0, np.int64), candidates=every, k=13, seed=seed
        )
        covered_diverse.append(len(set(labels[picked].tolist())))
        drawn = np.random.default_rng(seed).choice(every, 13, replace=False)
        covered_random.append(len(set(labels[drawn].tolist())))
    # Random lands mostly in the big cluster (~2 of 13 clusters); D^2 sampling reaches most
    # (it still weighs mass: the big cluster's 900 rows keep some pull, unlike k-center greedy).
    assert np.mean(covered_diverse) >= 9
    assert np.mean(covered_diverse) > np.mean(covered_random) + 5


def test_diverse_fill_avoids_what_the_chosen_rows_already_cover() -> None:
    points, labels = _mixture(1)
    chosen = np.flatnonzero(labels == 0)[:5]  # the score picks sit in the big cluster
    candidates = np.setdiff1d(np.arange(len(points)), chosen)
    picked = diverse_fill(points, chosen=chosen, candidates=candidates, k=12, seed=3)
    # Uniform random would take ~10.7 of the 12 from the big cluster the score picks sit in.
    assert int((labels[picked] == 0).sum()) <= 3
    assert len(set(labels[picked].tolist()) - {0}) >= 9
    assert not set(picked.tolist()) & set(chosen.tolist())


def test_diverse_fill_is_deterministic_for_a_seed_and_draws_distinct_rows() -> None:
    points, _ = _mixture(2)
    every = np.arange(len(points))
    a = diverse_fill(points, chosen=every[:3], candidates=every[3:], k=50, seed=7)
    b = diverse_fill(points, chosen=every[:3], candidates=every[3:], k=50, seed=7)
    c = diverse_fill(points, chosen=every[:3], candidates=every[3:], k=50, seed=8)
    assert a.tolist() == b.tolist()
    assert a.tolist() != c.tolist()
    assert len(set(a.tolist())) == 50 and min(a) >= 3


def test_diverse_fill_handles_duplicates_and_wide_embeddings() -> None:
    # Every candidate equals a chosen row: the draws go on uniformly, still distinct.
    same = np.ones((20, 4), dtype=np.float32)
    picked = diverse_fill(same, chosen=np.array([0]), candidates=np.arange(1, 20), k=19, seed=0)
    assert sorted(picked.tolist()) == list(range(1, 20))
    # Wider than PROJECTED_DIM: projected first, clusters still found.
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, PROJECTED_DIM * 4)) * 10
    labels = np.repeat(np.arange(4), [200, 5, 5, 5])
    wide = (centers[labels] + rng.normal(size=(len(labels), PROJECTED_DIM * 4))).astype(np.float32)
    picked = diverse_fill(
        wide, chosen=np.zeros(0, np.int64), candidates=np.arange(215), k=4, seed=1
    )
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
    # The diverse half reaches the small clusters the score half and random draws miss.
    assert len(set(labels[diverse.indices[13:]].tolist())) > len(
        set(labels[plain.indices[13:]].tolist())
    )
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
