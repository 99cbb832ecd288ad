"""run_multi_target: K validation sets in one run give what K separate runs give."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.engine.conftest import WriteRows
from tests.engine.test_cache import OTHER, _config, _same
from tests.engine.test_runner import TARGET, _pool
from tov_engine import (
    ConfigError,
    JobConfig,
    ProgressEvent,
    SelectionConfig,
    ToVConfig,
    run_multi_target,
    run_selection,
)


@pytest.fixture
def files(write_jsonl: WriteRows) -> tuple[Path, list[Path]]:
    vals = [write_jsonl("val.jsonl", [TARGET] * 4), write_jsonl("val2.jsonl", [OTHER] * 3)]
    return write_jsonl("pool.jsonl", _pool()), vals


@pytest.mark.parametrize(
    "tov",
    [dict(variant="A", rounds=1), dict(variant="A", rounds=2), dict(variant="B", rounds=2)],
    ids=["A-L1", "A-L2", "B-L2"],
)
def test_two_targets_match_two_separate_runs(
    files: tuple[Path, list[Path]], tiny_causal_lm_dir: Path, tov: dict[str, Any]
) -> None:
    pool, vals = files
    config = _config(**tov)
    events: list[ProgressEvent] = []
    multi = run_multi_target(
        pool_path=pool,
        validation_paths=vals,
        model=tiny_causal_lm_dir,
        config=config,
        progress=events.append,
    )
    assert len(multi) == 2
    for val, outcome in zip(vals, multi, strict=True):
        alone = run_selection(
            pool_path=pool, validation_path=val, model=tiny_causal_lm_dir, config=config
        )
        _same(alone, outcome)
        assert outcome.stats["validation_rows"] == alone.stats["validation_rows"]
    shared = tov["rounds"] if tov["variant"] == "B" else 1
    assert [o.stats["base_rounds_reused"] for o in multi] == [0, shared]
    fractions = [e.fraction for e in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_checkpoints_per_target_and_the_pool_cache(
    files: tuple[Path, list[Path]], tiny_causal_lm_dir: Path, tmp_path: Path
) -> None:
    pool, vals = files
    config = _config(variant="B", rounds=2)
    kw: dict[str, Any] = dict(
        pool_path=pool, validation_paths=vals, model=tiny_causal_lm_dir, config=config
    )
    first = run_multi_target(**kw, checkpoint_dir=tmp_path / "ck", cache_dir=tmp_path / "c")
    assert (tmp_path / "ck" / "target_001" / "round_001" / "done").exists()
    # Everything resumes from the checkpoints; a new target reuses the cached base trajectory.
    again = run_multi_target(**kw, checkpoint_dir=tmp_path / "ck", cache_dir=tmp_path / "c")
    for a, b in zip(first, again, strict=True):
        _same(a, b)
    swapped = run_multi_target(**{**kw, "validation_paths": vals[::-1]}, cache_dir=tmp_path / "c")
    assert [o.stats["base_rounds_reused"] for o in swapped] == [2, 2]
    _same(first[0], swapped[1])
    _same(first[1], swapped[0])


def test_a_later_target_after_resumed_ones_starts_from_the_initial_weights(
    files: tuple[Path, list[Path]], tiny_causal_lm_dir: Path, tmp_path: Path
) -> None:
    pool, vals = files
    config = _config(variant="A", rounds=2)
    kw: dict[str, Any] = dict(pool_path=pool, model=tiny_causal_lm_dir, config=config)
    # Target 0 finishes from its checkpoint without training: target 1's round 0 runs fresh.
    run_multi_target(**kw, validation_paths=vals[:1], checkpoint_dir=tmp_path / "ck")
    both = run_multi_target(**kw, validation_paths=vals, checkpoint_dir=tmp_path / "ck")
    alone = run_selection(**kw, validation_path=vals[1])
    _same(alone, both[1])


def test_baselines_and_arguments(files: tuple[Path, list[Path]], tiny_causal_lm_dir: Path) -> None:
    pool, vals = files
    config = JobConfig(
        method="uncertainty",
        tov=ToVConfig(rounds=1, base_size=8),
        selection=SelectionConfig(budget=10),
    )
    events: list[ProgressEvent] = []
    out = run_multi_target(
        pool_path=pool,
        validation_paths=vals,
        model=tiny_causal_lm_dir,
        config=config,
        progress=events.append,
    )
    assert np.array_equal(out[0].scores, out[1].scores, equal_nan=True)  # psi ignores Z_val
    fractions = [e.fraction for e in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    with pytest.raises(ConfigError):
        run_multi_target(
            pool_path=pool, validation_paths=[], model=tiny_causal_lm_dir, config=config
        )
