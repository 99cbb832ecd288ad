"""Staged ToV (train, score shards anywhere, join): identical to a one-process run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.engine.test_methods import ENTITY, PLAIN
from tests.engine.test_runner import _config, _run, files  # noqa: F401  (fixture)
from tov_engine import (
    Cancelled,
    CheckpointError,
    ConfigError,
    JobConfig,
    LoraSettings,
    SelectionConfig,
    SelectionOutcome,
    ToVConfig,
    run_selection,
)
from tov_engine.methods.tov.staged import StagedToV, prepare_staged


def _staged(paths: tuple[Path, Path], model: Path, config: JobConfig) -> StagedToV:
    return prepare_staged(pool_path=paths[0], validation_path=paths[1], model=model, config=config)


def _run_staged(
    paths: tuple[Path, Path], model: Path, config: JobConfig, folder: Path, rows: int
) -> tuple[SelectionOutcome, int]:
    trainer = _staged(paths, model, config)
    trainer.train(folder)
    shards = trainer.shards(rows)
    # Each shard scored by a fresh "process" (its own prepared job and model), in reverse order.
    parts = {}
    for shard in reversed(shards):
        parts[shard.index] = _staged(paths, model, config).score(folder, shard)
    return trainer.finish(parts, shards), len(shards)


@pytest.mark.parametrize("variant", ["A", "B"])
def test_sharded_scores_equal_a_one_process_run(
    files: tuple[Path, Path],  # noqa: F811
    tiny_causal_lm_dir: Path,
    tmp_path: Path,
    variant: str,
) -> None:
    config = _config(variant=variant, tokens_per_batch=96)  # several batches to shard
    reference = _run(files, tiny_causal_lm_dir, config)
    outcome, count = _run_staged(files, tiny_causal_lm_dir, config, tmp_path / "rounds", 9)
    assert count >= 3
    np.testing.assert_array_equal(outcome.scores, reference.scores)  # bit for bit, NaN in U
    np.testing.assert_array_equal(outcome.selection.indices, reference.selection.indices)
    assert outcome.selection.sources == reference.selection.sources
    assert outcome.stats["shards"] == count


def test_token_classification_shards_equal_one_process(
    write_jsonl: object, tiny_token_classifier_dir: Path, tmp_path: Path
) -> None:
    pool = write_jsonl("pool.jsonl", [ENTITY if i % 7 == 3 else PLAIN for i in range(30)])  # type: ignore[operator]
    val = write_jsonl("val.jsonl", [ENTITY] * 3)  # type: ignore[operator]
    config = JobConfig(
        task="token_classification",
        seed=5,
        tov=ToVConfig(rounds=2, base_size=6, learning_rate=1e-2, batch_size=4, tokens_per_batch=40),
        selection=SelectionConfig(budget=6, num_bins=2),
    )
    reference = run_selection(
        pool_path=pool, validation_path=val, model=tiny_token_classifier_dir, config=config
    )
    outcome, count = _run_staged((pool, val), tiny_token_classifier_dir, config, tmp_path / "r", 5)
    assert count >= 2
    np.testing.assert_array_equal(outcome.scores, reference.scores)
    np.testing.assert_array_equal(outcome.selection.indices, reference.selection.indices)


def test_shards_cover_the_plan_once(files: tuple[Path, Path], tiny_causal_lm_dir: Path) -> None:  # noqa: F811
    staged = _staged(files, tiny_causal_lm_dir, _config(tokens_per_batch=96))
    for size in (1, 5, 1000):
        shards = staged.shards(size)
        rows = np.concatenate([staged.shard_rows(s) for s in shards])
        assert sorted(rows.tolist()) == staged.rest.tolist()
        assert [s.index for s in shards] == list(range(len(shards)))
        assert sum(s.rows for s in shards) == len(staged.rest)
    assert len(staged.shards(1000)) == 1 and len(staged.shards(1)) == len(staged.batches) > 3
    with pytest.raises(ConfigError):
        staged.shards(0)


def test_training_resumes_and_refuses_another_jobs_folder(
    files: tuple[Path, Path],  # noqa: F811
    tiny_causal_lm_dir: Path,
    tmp_path: Path,
) -> None:
    folder = tmp_path / "rounds"
    config = _config(rounds=3, tokens_per_batch=96)
    calls = {"n": 0}

    def stop_in_round_two() -> bool:
        calls["n"] += 1
        return calls["n"] > 8  # round 1 is 8 + 4 rows in batches of 4: stops inside round 2

    staged = _staged(files, tiny_causal_lm_dir, config)
    with pytest.raises(Cancelled):
        staged.train(folder, should_cancel=stop_in_round_two)
    assert 0 < len(list(folder.glob("round_*/done"))) < 3
    outcome, _ = _run_staged(files, tiny_causal_lm_dir, config, folder, 10)
    reference = _run(files, tiny_causal_lm_dir, config)
    np.testing.assert_array_equal(outcome.scores, reference.scores)
    with pytest.raises(CheckpointError):
        other = _config(rounds=3, tokens_per_batch=96, learning_rate=5e-3)
        _staged(files, tiny_causal_lm_dir, other).train(folder)


def test_scoring_needs_every_round_and_lora(
    files: tuple[Path, Path],  # noqa: F811
    tiny_causal_lm_dir: Path,
    tmp_path: Path,
) -> None:
    staged = _staged(files, tiny_causal_lm_dir, _config())
    with pytest.raises(CheckpointError):
        staged.score(tmp_path / "empty", staged.shards(10)[0])
    with pytest.raises(ConfigError):
        _staged(files, tiny_causal_lm_dir, _config(lora=LoraSettings(enabled=False)))
