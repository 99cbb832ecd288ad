"""Explanations on the tiny causal LM: each row's loss before and after (averaged over rounds),
its length bin and rank in it, and why each selected row was picked; the CLI's tables."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.engine.test_runner import _config, _run, files  # noqa: F401
from tests.engine.test_staged import _run_staged
from tov_engine import SelectionConfig, SelectionOutcome, select
from tov_engine.cli import main
from tov_engine.output import reason
from tov_engine.selection import binning


def _check_places(out: SelectionOutcome) -> None:
    """Bins and in-bin ranks agree with the selection, the lengths and the scores."""
    placed, sel = out.binning, out.selection
    assert placed is not None and sel.bins is not None
    assert sel.bin_ranks is not None and sel.bin_quotas is not None
    scored = np.flatnonzero(~np.isnan(out.scores))
    assert (placed.bins[scored] >= 0).all() and (placed.ranks[scored] >= 1).all()
    assert (placed.bins[out.base_indices] == -1).all()
    # Bins are length ranges: a longer row never sits in a lower bin.
    order = scored[np.argsort(out.lengths[scored], kind="stable")]
    assert (np.diff(placed.bins[order]) >= 0).all()
    for b in np.unique(placed.bins[scored]):
        members = scored[placed.bins[scored] == b]
        ranked = members[np.argsort(placed.ranks[members])]
        assert sorted(placed.ranks[members]) == list(range(1, len(members) + 1))
        assert (np.diff(out.scores[ranked]) <= 0).all()  # rank 1 is the bin's best score
    by_score = np.array([s == "score" for s in sel.sources])
    picked = sel.indices[by_score]
    # A score pick's bin and rank are the pool's; its rank is within its bin's quota.
    np.testing.assert_array_equal(sel.bins[by_score], placed.bins[picked])
    np.testing.assert_array_equal(sel.bin_ranks[by_score], placed.ranks[picked])
    assert (sel.bin_ranks[by_score] <= sel.bin_quotas[by_score]).all()
    for b in np.unique(sel.bins[by_score]):
        in_bin = sel.bins[by_score] == b
        assert (sel.bin_quotas[by_score][in_bin] == in_bin.sum()).all()
        # The bin's picks are exactly its top-quota rows by score.
        top = np.flatnonzero((placed.bins == b) & (placed.ranks <= in_bin.sum()))
        assert set(top.tolist()) == set(picked[in_bin].tolist())
    assert (sel.bins[~by_score] == -1).all() and (sel.bin_ranks[~by_score] == -1).all()


def test_losses_relate_to_the_improvement_score(
    files: tuple[Path, Path],  # noqa: F811
    tiny_causal_lm_dir: Path,
) -> None:
    out = _run(files, tiny_causal_lm_dir, _config(rounds=2))
    assert out.loss_before is not None and out.loss_after is not None
    scored = ~np.isnan(out.scores)
    assert np.isfinite(out.loss_before[scored]).all() and np.isfinite(out.loss_after[scored]).all()
    assert np.isnan(out.loss_before[~scored]).all() and np.isnan(out.loss_after[~scored]).all()
    assert (out.loss_before[scored] > 0).all()  # a mean negative log-probability
    # score_fn "improvement": phi = mean_t (log p_after - log p_before) = loss_before - loss_after,
    # per round and so for the means over rounds.
    np.testing.assert_allclose(
        out.loss_before[scored] - out.loss_after[scored], out.scores[scored], atol=2e-5
    )
    assert out.selection.sources.count("random") == 8  # score+random: both kinds
    _check_places(out)
    for src, b, r, q in zip(
        out.selection.sources,
        out.selection.bins,
        out.selection.bin_ranks,
        out.selection.bin_quotas,
        strict=True,
    ):
        text = reason(src, int(b), int(r), int(q))
        assert text == "random" if src == "random" else text.startswith("score: rank ")


@pytest.mark.parametrize("score_fn", ["absolute", "positive"])
def test_other_score_functions_bound_the_loss_change(
    files: tuple[Path, Path],  # noqa: F811
    tiny_causal_lm_dir: Path,
    score_fn: str,
) -> None:
    out = _run(files, tiny_causal_lm_dir, _config(rounds=2, score_fn=score_fn))
    assert out.loss_before is not None and out.loss_after is not None
    scored = ~np.isnan(out.scores)
    change = out.loss_before[scored] - out.loss_after[scored]
    # mean |d| >= |mean d| and mean max(d, 0) >= max(mean d, 0), per round and over rounds.
    bound = np.abs(change) if score_fn == "absolute" else np.maximum(change, 0)
    assert (out.scores[scored] >= bound - 2e-5).all()
    assert (out.scores[scored] >= 0).all()


def test_score_only_picks_every_row_by_score(
    files: tuple[Path, Path],  # noqa: F811
    tiny_causal_lm_dir: Path,
) -> None:
    config = _config(rounds=1)
    config = dataclasses.replace(
        config, selection=SelectionConfig(budget=16, strategy="score-only", num_bins=3)
    )
    out = _run(files, tiny_causal_lm_dir, config)
    assert out.selection.sources == ["score"] * 16
    _check_places(out)
    assert out.selection.bin_quotas is not None
    assert sorted(set(out.selection.bins.tolist())) == [0, 1, 2]


def test_resumed_rounds_keep_their_losses(
    files: tuple[Path, Path],  # noqa: F811
    tiny_causal_lm_dir: Path,
    tmp_path: Path,
) -> None:
    config = _config(rounds=2)
    first = _run(files, tiny_causal_lm_dir, config, checkpoint_dir=tmp_path / "ck")
    again = _run(files, tiny_causal_lm_dir, config, checkpoint_dir=tmp_path / "ck")
    assert first.loss_before is not None and again.loss_before is not None
    np.testing.assert_array_equal(first.loss_before, again.loss_before)
    assert first.loss_after is not None and again.loss_after is not None
    np.testing.assert_array_equal(first.loss_after, again.loss_after)


def test_reselection_explains_from_stored_scores() -> None:
    """select() alone (what a re-selection runs) gives the same places as binning()."""
    rng = np.random.default_rng(0)
    scores = rng.normal(size=500).astype(np.float32)
    lengths = rng.integers(1, 200, size=500)
    base = np.arange(0, 500, 10)
    scores[base] = np.nan
    for strategy, bins, per_bin in [("score+random", 10, 0), ("score-only", 7, 5)]:
        config = SelectionConfig(budget=60, strategy=strategy, num_bins=bins, min_per_bin=per_bin)
        kw = dict(scores=scores, lengths=lengths, base_indices=base, config=config)
        chosen = select(**kw, seed=4)  # type: ignore[arg-type]
        placed = binning(**kw)  # type: ignore[arg-type]
        assert chosen.bins is not None and chosen.bin_ranks is not None
        by_score = np.array([s == "score" for s in chosen.sources])
        np.testing.assert_array_equal(chosen.bins[by_score], placed.bins[chosen.indices[by_score]])
        np.testing.assert_array_equal(
            chosen.bin_ranks[by_score], placed.ranks[chosen.indices[by_score]]
        )
        assert by_score.sum() == (30 if strategy == "score+random" else 60)


def test_cli_writes_the_explanation_columns(
    files: tuple[Path, Path],  # noqa: F811
    tiny_causal_lm_dir: Path,
    tmp_path: Path,
) -> None:
    common = ["select", "--pool", str(files[0]), "--validation", str(files[1])]
    common += ["--model", str(tiny_causal_lm_dir), "--budget", "16", "--rounds", "1"]
    common += ["--base-size", "8", "--seed", "3", "--batch-size", "4", "--num-bins", "4"]
    out, scores = tmp_path / "sel.jsonl", tmp_path / "scores.parquet"
    assert main([*common, "--out", str(out), "--scores-out", str(scores)]) == 0
    picked = [json.loads(line) for line in out.read_text().splitlines()]
    assert list(picked[0]) == [
        "index", "score", "source", "reason", "bin", "bin_rank", "bin_quota"
    ]  # fmt: skip
    for row in picked:
        if row["source"] == "random":
            assert row["reason"] == "random" and row["bin"] is None
        else:
            assert row["reason"] == (
                f"score: rank {row['bin_rank']} of {row['bin_quota']} in length bin {row['bin']}"
            )
    table = pd.read_parquet(scores)
    assert list(table.columns) == [
        "index", "score", "length", "loss_before", "loss_after", "bin", "bin_rank"
    ]  # fmt: skip
    np.testing.assert_allclose(
        table["loss_before"] - table["loss_after"], table["score"], atol=2e-5
    )
    by_index = table.set_index("index")
    for row in picked:
        if row["source"] == "score":
            assert by_index.loc[row["index"], "bin_rank"] == row["bin_rank"]


def test_staged_shards_keep_the_losses_of_a_one_process_run(
    files: tuple[Path, Path],  # noqa: F811
    tiny_causal_lm_dir: Path,
    tmp_path: Path,
) -> None:
    config = _config(rounds=2, tokens_per_batch=96)  # several batches, so several shards
    reference = _run(files, tiny_causal_lm_dir, config)
    outcome, count = _run_staged(files, tiny_causal_lm_dir, config, tmp_path / "rounds", 9)
    assert count >= 3
    assert outcome.loss_before is not None and reference.loss_before is not None
    np.testing.assert_array_equal(outcome.loss_before, reference.loss_before)
    assert outcome.loss_after is not None and reference.loss_after is not None
    np.testing.assert_array_equal(outcome.loss_after, reference.loss_after)
    assert outcome.selection.bin_ranks is not None and reference.selection.bin_ranks is not None
    np.testing.assert_array_equal(outcome.selection.bin_ranks, reference.selection.bin_ranks)


def test_excluded_rows_are_no_candidates_in_the_bins() -> None:
    """With leaked rows excluded, the selection's places are the pool binning's without them."""
    from tov_engine.leakage import select_excluding

    rng = np.random.default_rng(1)
    scores = rng.normal(size=300).astype(np.float32)
    lengths = rng.integers(1, 100, size=300)
    base = np.arange(0, 300, 6)
    scores[base] = np.nan
    excluded = np.zeros(300, dtype=bool)
    excluded[np.argsort(-np.nan_to_num(scores, nan=-9))[:5]] = True  # the five best rows leak
    config = SelectionConfig(budget=40, strategy="score+random", num_bins=4)
    chosen = select_excluding(
        excluded, scores=scores, lengths=lengths, base_indices=base, config=config, seed=2
    )
    placed = binning(
        scores=scores, lengths=lengths, base_indices=base, config=config, excluded=excluded
    )
    assert not excluded[chosen.indices].any() and (placed.bins[excluded] == -1).all()
    assert chosen.bins is not None and chosen.bin_ranks is not None
    by_score = np.array([s == "score" for s in chosen.sources])
    np.testing.assert_array_equal(chosen.bins[by_score], placed.bins[chosen.indices[by_score]])
    np.testing.assert_array_equal(
        chosen.bin_ranks[by_score], placed.ranks[chosen.indices[by_score]]
    )
