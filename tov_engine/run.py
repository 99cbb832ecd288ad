"""run_selection and run_multi_target: selection jobs from files to Selections, for every method."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from tov_engine.config import JobConfig
from tov_engine.errors import ConfigError
from tov_engine.job import Job, JobInputs, SelectionOutcome, prepare, prepare_pool, seed_everything
from tov_engine.leakage import LeakageConfig
from tov_engine.methods import run_method, run_targets
from tov_engine.progress import ProgressCallback


def run_selection(
    *,
    pool_path: str | Path,
    validation_path: str | Path,
    model: str | Path,
    config: JobConfig,
    progress: ProgressCallback | None = None,
    should_cancel: Callable[[], bool] | None = None,
    checkpoint_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    decontaminate_against: Sequence[str | Path] = (),
    leakage: LeakageConfig | None = None,
) -> SelectionOutcome:
    """Score the pool with the configured method and select the budget.

    Args:
        pool_path, validation_path: dataset files (JSONL, Parquet, CSV).
        model: a local model folder (safetensors). config: the job's settings.
        progress: called with ProgressEvents. should_cancel: polled every batch; True raises
            Cancelled. checkpoint_dir: per-round checkpoints; a rerun resumes after the last
            finished round and gives identical results. cache_dir: the pool cache, a local folder
            workers may share: the tokenised pool and ToV's validation-free base trajectory
            (weights, base log-probs) are kept there and reused by later jobs on the same pool,
            model, seed and training settings, with identical results.
        decontaminate_against: files (e.g. the user's test set) whose rows, exactly or nearly
            repeated in the pool, are flagged; leakage: modes and threshold of that check (the
            validation set is always checked). Flagged rows are in the outcome's `leaks`; those
            in mode "exclude" are never selected (tov_engine.leakage).
    Returns:
        The SelectionOutcome. Raises DataError, ModelError, ConfigError, CheckpointError, Cancelled.
    """
    seed_everything(config.seed)
    inputs = JobInputs(
        pool_path,
        validation_path,
        model,
        config,
        progress,
        should_cancel,
        checkpoint_dir,
        cache_dir,
        tuple(decontaminate_against),
        leakage,
    )
    return run_method(prepare(inputs))


def run_multi_target(
    *,
    pool_path: str | Path,
    validation_paths: Sequence[str | Path],
    model: str | Path,
    config: JobConfig,
    progress: ProgressCallback | None = None,
    should_cancel: Callable[[], bool] | None = None,
    checkpoint_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    decontaminate_against: Sequence[str | Path] = (),
    leakage: LeakageConfig | None = None,
) -> list[SelectionOutcome]:
    """Score one pool for several validation sets, sharing the validation-free work.

    Args:
        pool_path: the pool file. validation_paths: K validation files (K >= 1).
        model, config, progress, should_cancel, cache_dir, decontaminate_against, leakage: as
            run_selection (validation leaks are per target) (progress covers the
            whole run). checkpoint_dir: per-target checkpoints in checkpoint_dir/target_NNN.
    Returns:
        K SelectionOutcomes in the order of validation_paths, each identical to a separate
        run_selection with that validation file. Raises as run_selection.
    """
    if not validation_paths:
        raise ConfigError("run_multi_target needs at least one validation file")
    seed_everything(config.seed)
    start = time.perf_counter()
    model_dir, pool_file = Path(model), Path(pool_path)
    cache = Path(cache_dir) if cache_dir is not None else None
    pool = prepare_pool(config, model_dir, pool_file, cache, validation_paths)
    shared_seconds = time.perf_counter() - start
    jobs: list[Job] = []
    for j, path in enumerate(validation_paths):
        ckpt = Path(checkpoint_dir) / f"target_{j:03d}" if checkpoint_dir is not None else None
        inputs = JobInputs(
            pool_file,
            path,
            model_dir,
            config,
            progress,
            should_cancel,
            ckpt,
            cache,
            tuple(decontaminate_against),
            leakage,
        )
        job = prepare(inputs, pool=pool)
        job.stats["seconds_prepare"] += shared_seconds / len(validation_paths)
        jobs.append(job)
    return run_targets(jobs)
