"""Checkpoint/resume of the baselines (uncertainty, LESS): a run cancelled after part of its work,
rerun with the same checkpoint_dir, skips the finished stages and gives the uncancelled result."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.engine.conftest import WriteRows
from tests.engine.test_runner import TARGET, _pool
from tov_engine import (
    Cancelled,
    CheckpointError,
    JobConfig,
    LessSettings,
    SelectionConfig,
    SelectionOutcome,
    ToVConfig,
    run_selection,
)
from tov_engine.methods import uncertainty
from tov_engine.methods.less import run as less


@pytest.fixture
def files(write_jsonl: WriteRows) -> tuple[Path, Path]:
    val = [{**TARGET, "subtask": "fr"}, {**TARGET, "subtask": "fr"}]
    val.append({"prompt": "2+2?", "completion": "Four.", "subtask": "math"})
    return write_jsonl("pool.jsonl", _pool()), write_jsonl("val.jsonl", val)


def _runner(files: tuple[Path, Path], model: Path) -> Callable[..., SelectionOutcome]:
    def run(config: JobConfig, **kw: Any) -> SelectionOutcome:
        return run_selection(
            pool_path=files[0], validation_path=files[1], model=model, config=config, **kw
        )

    return run


def _same(a: SelectionOutcome, b: SelectionOutcome) -> None:
    assert np.array_equal(a.scores, b.scores, equal_nan=True)
    assert np.array_equal(a.selection.indices, b.selection.indices)
    assert a.selection.sources == b.selection.sources


def _done(folder: Path, name: str) -> Callable[[], bool]:
    return lambda: (folder / name / "done").exists()


def _count(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> list[Any]:
    """Wrap module.name; the returned list gets each call's positional arguments."""
    calls: list[Any] = []
    original = getattr(module, name)

    def spy(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, spy)
    return calls


def test_uncertainty_resumes_after_epochs_and_score_chunks(
    files: tuple[Path, Path],
    tiny_causal_lm_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(uncertainty, "SCORE_CHUNK_ROWS", 8)
    run = _runner(files, tiny_causal_lm_dir)
    config = JobConfig(
        method="uncertainty",
        seed=3,
        selection=SelectionConfig(budget=16),
        tov=ToVConfig(rounds=3, base_size=8, learning_rate=1e-3, batch_size=4, tokens_per_batch=64),
    )
    full = run(config)
    ckpt = tmp_path / "ckpt"
    with pytest.raises(Cancelled):  # stopped in the third epoch
        run(config, checkpoint_dir=ckpt, should_cancel=_done(ckpt, "epoch_001"))
    assert not (ckpt / "epoch_002").exists()
    assert not (ckpt / "epoch_000" / "base.safetensors").exists()  # only the latest is kept
    with pytest.raises(Cancelled):  # stopped while scoring, two chunks of R done
        run(config, checkpoint_dir=ckpt, should_cancel=_done(ckpt, "score_00001"))
    assert (ckpt / "epoch_002" / "done").exists() and not (ckpt / "score_00002" / "done").exists()
    epochs = _count(monkeypatch, uncertainty, "train_epoch")
    scored = _count(monkeypatch, uncertainty, "run_pass")
    resumed = run(config, checkpoint_dir=ckpt)
    assert epochs == []  # every epoch came from the checkpoint
    finished = sum(len(np.load(p)) for p in ckpt.glob("score_0000[01]/scores.npy"))
    rows_scored = sum(len(b) for args in scored for b in args[2])  # run_pass(model, pool, batches)
    assert rows_scored == len(full.scores) - 8 - finished  # R minus the two finished chunks
    _same(full, resumed)
    _same(full, run(config, checkpoint_dir=ckpt))  # a finished folder: nothing left to do
    assert len(scored) == len(list(ckpt.glob("score_*"))) - 2 >= 2
    assert np.isfinite(full.scores).sum() == len(full.scores) - 8  # all of R scored
    other = JobConfig(method="uncertainty", seed=3, tov=ToVConfig(rounds=2, base_size=8))
    with pytest.raises(CheckpointError):
        run(other, checkpoint_dir=ckpt)
    with pytest.raises(CheckpointError):  # ToV refuses a baseline's folder...
        run(JobConfig(tov=ToVConfig(rounds=3, base_size=8)), checkpoint_dir=ckpt)


def test_a_tov_checkpoint_is_refused_by_the_baselines(
    files: tuple[Path, Path], tiny_causal_lm_dir: Path, tmp_path: Path
) -> None:
    run = _runner(files, tiny_causal_lm_dir)
    tov = JobConfig(tov=ToVConfig(rounds=1, base_size=8, batch_size=8))
    run(tov, checkpoint_dir=tmp_path / "ckpt")
    for method in ("uncertainty", "less"):  # ...and a baseline refuses ToV's
        config = JobConfig(method=method, tov=tov.tov, less=LessSettings(projection_dim=16))
        with pytest.raises(CheckpointError, match="another job"):
            run(config, checkpoint_dir=tmp_path / "ckpt")


def test_less_resumes_after_warmup_epochs_and_feature_chunks(
    files: tuple[Path, Path],
    tiny_causal_lm_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(less, "FEATURE_CHUNK_ROWS", 16)
    run = _runner(files, tiny_causal_lm_dir)
    config = JobConfig(
        method="less",
        seed=1,
        selection=SelectionConfig(budget=5),
        tov=ToVConfig(learning_rate=1e-3, batch_size=2),
        less=LessSettings(warmup_fraction=0.1, epochs=3, projection_dim=64),
    )
    full = run(config)
    ckpt = tmp_path / "ckpt"
    with pytest.raises(Cancelled):  # stopped in the second warmup epoch
        run(config, checkpoint_dir=ckpt, should_cancel=_done(ckpt, "warmup_000"))
    assert not (ckpt / "warmup_001" / "done").exists()
    with pytest.raises(Cancelled):  # stopped in the second checkpoint's pool gradients
        run(config, checkpoint_dir=ckpt, should_cancel=_done(ckpt, "features_001_00000"))
    assert (ckpt / "warmup_002" / "done").exists() and (ckpt / "features_001_val" / "done").exists()
    assert not (ckpt / "features_001_00001" / "done").exists()
    assert not (ckpt / "warmup_000" / "optimizer.pt").exists()  # only the latest is kept
    epochs = _count(monkeypatch, less, "train_epoch")
    features = _count(monkeypatch, less, "_features")
    resumed = run(config, checkpoint_dir=ckpt)
    assert epochs == []
    groups = len(list(ckpt.glob("features_000_0*")))
    assert groups >= 3 and np.isfinite(full.scores).all()
    # Checkpoint 1 (0-based): the chunks after the first; checkpoint 2: all chunks and val.
    assert len(features) == (groups - 1) + (groups + 1)
    _same(full, resumed)
    with pytest.raises(CheckpointError):
        run(
            JobConfig(method="less", seed=1, less=LessSettings(epochs=3, projection_dim=32)),
            checkpoint_dir=ckpt,
        )
