"""run_selection end to end on the tiny causal LM: signal direction, budget, determinism,
progress, cancellation, checkpoint resume, variants, baselines."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.engine.conftest import WriteRows
from tov_engine import (
    Cancelled,
    CheckpointError,
    ConfigError,
    JobConfig,
    LoraSettings,
    ProgressEvent,
    SelectionConfig,
    SelectionOutcome,
    ToVConfig,
    run_selection,
)

FACTS = [
    "Paris is the capital of France.",
    "Two plus two is four.",
    "The cat sat on the mat.",
    "Birds sing in the morning.",
    "Water boils at one hundred degrees.",
    "Bob moved to Paris.",
    "The dog barked at the mailman.",
    "Ice melts when it gets warm.",
]
TARGET = {"prompt": "Translate to French: good morning.", "completion": "Bonjour. Bonjour."}
TARGET_INDEX = 40


def _pool() -> list[dict[str, str]]:
    rows = [
        {"prompt": f"Question {i}: say something.", "completion": f"{FACTS[i % 8]} {i}."}
        for i in range(48)
    ]
    rows.insert(TARGET_INDEX, TARGET)
    return rows


@pytest.fixture
def files(write_jsonl: WriteRows) -> tuple[Path, Path]:
    return write_jsonl("pool.jsonl", _pool()), write_jsonl("val.jsonl", [TARGET] * 4)


def _config(**tov: object) -> JobConfig:
    settings: dict[str, object] = dict(
        rounds=2, learning_rate=1e-3, val_lr_factor=1.0, batch_size=4, base_size=8
    )
    settings.update(tov)
    return JobConfig(tov=ToVConfig(**settings), selection=SelectionConfig(budget=16), seed=3)  # type: ignore[arg-type]


def _run(
    files: tuple[Path, Path], model: Path, config: JobConfig, **kw: object
) -> SelectionOutcome:
    return run_selection(
        pool_path=files[0], validation_path=files[1], model=model, config=config, **kw
    )  # type: ignore[arg-type]


def test_row_like_validation_scores_highest(
    files: tuple[Path, Path], tiny_causal_lm_dir: Path
) -> None:
    events: list[ProgressEvent] = []
    out = _run(files, tiny_causal_lm_dir, _config(), progress=events.append)
    scored = ~np.isnan(out.scores)
    assert scored.sum() == 49 - 8 and not scored[out.base_indices].any()
    # Seed 3 keeps the target row out of U; the draw is deterministic, so this must hold.
    assert TARGET_INDEX not in out.base_indices
    assert int(np.nanargmax(out.scores)) == TARGET_INDEX
    sel = out.selection
    assert len(sel.indices) == 16 and sel.indices[0] == TARGET_INDEX
    assert sel.sources == ["score"] * 8 + ["random"] * 8
    assert out.scores.dtype == np.float32 and out.lengths.dtype == np.int32
    assert out.stats["rounds"] == 2 and out.stats["base_size"] == 8 and out.stats["rows"] == 49
    fractions = [e.fraction for e in events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert {e.stage for e in events} == {"train", "score", "select"}
    score_events = [e for e in events if e.stage == "score"]
    assert score_events[-1].done == score_events[-1].total == 2 * 41


def test_same_seed_same_result(files: tuple[Path, Path], tiny_causal_lm_dir: Path) -> None:
    a = _run(files, tiny_causal_lm_dir, _config(rounds=1, variant="B"))
    b = _run(files, tiny_causal_lm_dir, _config(rounds=1, variant="B"))
    assert np.array_equal(a.scores, b.scores, equal_nan=True)
    assert np.array_equal(a.selection.indices, b.selection.indices)


def test_checkpoint_resume_gives_identical_scores(
    files: tuple[Path, Path], tiny_causal_lm_dir: Path, tmp_path: Path
) -> None:
    config = _config(rounds=3)
    full = _run(files, tiny_causal_lm_dir, config)
    ckpt = tmp_path / "ckpt"

    def cancel_in_round_two() -> bool:
        return (ckpt / "round_000" / "done").exists()

    with pytest.raises(Cancelled):
        _run(
            files,
            tiny_causal_lm_dir,
            config,
            checkpoint_dir=ckpt,
            should_cancel=cancel_in_round_two,
        )
    assert (ckpt / "round_000" / "done").exists() and not (ckpt / "round_001" / "done").exists()
    resumed = _run(files, tiny_causal_lm_dir, config, checkpoint_dir=ckpt)
    assert np.array_equal(full.scores, resumed.scores, equal_nan=True)
    assert np.array_equal(full.selection.indices, resumed.selection.indices)
    assert np.load(ckpt / "round_002" / "scores.npy").shape == (49,)
    with pytest.raises(CheckpointError):
        _run(files, tiny_causal_lm_dir, _config(rounds=2), checkpoint_dir=ckpt)


def test_full_fine_tuning_method_b(files: tuple[Path, Path], tiny_causal_lm_dir: Path) -> None:
    config = _config(rounds=1, variant="B", learning_rate=3e-4, lora=LoraSettings(enabled=False))
    out = _run(files, tiny_causal_lm_dir, config)
    if TARGET_INDEX not in out.base_indices:
        assert int(np.nanargmax(out.scores)) == TARGET_INDEX
    assert np.isfinite(out.scores[~np.isin(np.arange(49), out.base_indices)]).all()


def test_random_and_uncertainty_baselines(
    files: tuple[Path, Path], tiny_causal_lm_dir: Path
) -> None:
    rnd = _run(
        files,
        tiny_causal_lm_dir,
        JobConfig(method="random", selection=SelectionConfig(budget=0.25)),
    )
    assert len(rnd.selection.indices) == 12 and np.isnan(rnd.scores).all()
    unc = _run(
        files,
        tiny_causal_lm_dir,
        JobConfig(
            method="uncertainty",
            tov=ToVConfig(rounds=1),
            selection=SelectionConfig(budget=10, strategy="score-only"),
        ),
    )
    assert len(unc.selection.indices) == 10 and unc.selection.sources == ["score"] * 10
    psi = unc.scores[~np.isnan(unc.scores)]
    assert (psi < np.log(0.25) + 1e-6).all()  # p(1-p) <= 1/4


def test_budget_larger_than_pool(files: tuple[Path, Path], tiny_causal_lm_dir: Path) -> None:
    with pytest.raises(ConfigError, match="exceeds the pool"):
        _run(files, tiny_causal_lm_dir, JobConfig(selection=SelectionConfig(budget=50)))
