"""run_selection: one selection job from files to a Selection, for every method."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tov_engine.config import JobConfig, SelectionConfig
from tov_engine.data import inspect_dataset, read_rows
from tov_engine.encoding import EncodedSet, encode_rows, label_set
from tov_engine.errors import ConfigError
from tov_engine.progress import ProgressCallback
from tov_engine.selection import Selection, select_random

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SelectionOutcome:
    """Everything a run produced."""

    scores: np.ndarray  # (N,) float32 per pool row, pool order; NaN where not scored (e.g. U)
    lengths: np.ndarray  # (N,) int32 loss-bearing tokens per row (after truncation)
    base_indices: np.ndarray  # (|U|,) int64 sorted; empty for methods without a base subset
    selection: Selection
    stats: dict[str, float | int]


@dataclass
class Job:
    """What the method implementations share: the inputs, encoded, and the run's stats."""

    pool_path: Path
    validation_path: Path
    model: Path
    config: JobConfig
    tokenizer: Any
    pool: EncodedSet
    val: EncodedSet
    labels: list[Any] | None
    budget: int
    progress: ProgressCallback | None
    should_cancel: Callable[[], bool] | None
    checkpoint_dir: Path | None
    stats: dict[str, float | int]


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) for a deterministic run."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def draw_base(pool_size: int, base_size: int, seed: int) -> np.ndarray:
    """U: `base_size` distinct pool indices drawn with the job seed, sorted."""
    rng = np.random.default_rng([seed, 0])
    return np.sort(rng.choice(pool_size, size=base_size, replace=False)).astype(np.int64)


def _encode(job_config: JobConfig, tokenizer: Any, pool: Path, val: Path) -> tuple[Any, ...]:
    labels = None
    label_ids = None
    if job_config.task == "token_classification":
        labels = label_set((r for p in (pool, val) for r in read_rows(p)), f"{pool} + {val}")
        label_ids = {tag: i for i, tag in enumerate(labels)}
    kw: dict[str, Any] = dict(max_length=job_config.max_length, label_ids=label_ids)
    return (
        encode_rows(tokenizer, read_rows(pool), **kw),
        encode_rows(tokenizer, read_rows(val), **kw),
        labels,
    )


def prepare_job(
    *,
    pool_path: str | Path,
    validation_path: str | Path,
    model: str | Path,
    config: JobConfig,
    progress: ProgressCallback | None = None,
    should_cancel: Callable[[], bool] | None = None,
    checkpoint_dir: str | Path | None = None,
) -> Job:
    """Validate and tokenise both files and resolve the budget (arguments as run_selection)."""
    from tov_engine.modeling import load_tokenizer

    start = time.perf_counter()
    pool_info = inspect_dataset(pool_path)
    inspect_dataset(validation_path)  # every validation row is checked before any work starts
    tokenizer = load_tokenizer(model)
    pool, val, labels = _encode(config, tokenizer, Path(pool_path), Path(validation_path))
    budget = config.selection.resolve_budget(len(pool))
    if budget > len(pool):
        raise ConfigError(f"the budget of {budget} rows exceeds the pool of {len(pool)} rows")
    loss_lengths = pool.loss_lengths
    stats: dict[str, float | int] = {
        "rows": len(pool),
        "validation_rows": len(val),
        "truncated_rows": int(pool.truncated.sum()),
        "validation_truncated_rows": int(val.truncated.sum()),
        "rows_without_loss_tokens": int((loss_lengths == 0).sum()),
        "loss_tokens": int(loss_lengths.sum()),
        "budget": budget,
        "seconds_prepare": time.perf_counter() - start,
    }
    logger.info(
        "pool %s: %s, %d rows; validation %d rows", pool_path, pool_info.format, len(pool), len(val)
    )
    return Job(
        pool_path=Path(pool_path),
        validation_path=Path(validation_path),
        model=Path(model),
        config=config,
        tokenizer=tokenizer,
        pool=pool,
        val=val,
        labels=labels,
        budget=budget,
        progress=progress,
        should_cancel=should_cancel,
        checkpoint_dir=Path(checkpoint_dir) if checkpoint_dir is not None else None,
        stats=stats,
    )


def job_fingerprint_parts(job: Job) -> tuple[Any, ...]:
    """What determines the rounds: data, model, settings (not the selection, not the device)."""
    config = dataclasses.replace(job.config, selection=SelectionConfig(), device=None)
    arrays = (job.pool.ids, job.pool.labels, job.val.ids, job.val.labels)
    data = hashlib.sha256(b"".join(hashlib.sha256(a.tobytes()).digest() for a in arrays))
    return (str(job.model.resolve()), data.hexdigest(), config)


def run_selection(
    *,
    pool_path: str | Path,
    validation_path: str | Path,
    model: str | Path,
    config: JobConfig,
    progress: ProgressCallback | None = None,
    should_cancel: Callable[[], bool] | None = None,
    checkpoint_dir: str | Path | None = None,
) -> SelectionOutcome:
    """Score the pool with the configured method and select the budget.

    Args:
        pool_path, validation_path: dataset files (JSONL, Parquet, CSV).
        model: a local model folder (safetensors). config: the job's settings.
        progress: called with ProgressEvents. should_cancel: polled every batch; True raises
            Cancelled. checkpoint_dir: per-round checkpoints; a rerun resumes after the last
            finished round and gives identical results.
    Returns:
        The SelectionOutcome. Raises DataError, ModelError, ConfigError, CheckpointError, Cancelled.
    """
    from tov_engine import methods  # lazy: keeps torch out of `import tov_engine`

    seed_everything(config.seed)
    job = prepare_job(
        pool_path=pool_path,
        validation_path=validation_path,
        model=model,
        config=config,
        progress=progress,
        should_cancel=should_cancel,
        checkpoint_dir=checkpoint_dir,
    )
    if config.method == "random":
        return random_outcome(job)
    return methods.run_method(job)


def random_outcome(job: Job) -> SelectionOutcome:
    """The random baseline: a uniform sample of the budget, no model weights needed."""
    start = time.perf_counter()
    chosen = select_random(pool_size=len(job.pool), n=job.budget, seed=job.config.seed)
    job.stats["seconds_select"] = time.perf_counter() - start
    if job.progress is not None:
        from tov_engine.progress import ProgressEvent

        job.progress(ProgressEvent("select", 1, 1, 1.0, "random sample"))
    return SelectionOutcome(
        scores=np.full(len(job.pool), np.nan, dtype=np.float32),
        lengths=job.pool.loss_lengths,
        base_indices=np.zeros(0, dtype=np.int64),
        selection=chosen,
        stats=job.stats,
    )
