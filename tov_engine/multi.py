"""run_multi_target: one pool scored for K validation sets in one run.

What does not depend on the validation set is done once and shared: reading, validating and
tokenising the pool, loading the model, and for ToV the base half of every shareable round (the
base epoch on U and the base forward pass over R: every round for Method B, round 0 for Method A).
Each target then costs its validation epochs and one forward pass per shared round. Each target's
outcome is identical to a separate run_selection with the same arguments.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tov_engine.config import JobConfig
from tov_engine.data import inspect_dataset
from tov_engine.errors import ConfigError
from tov_engine.poolcache import RoundSource
from tov_engine.progress import ProgressCallback, ProgressEvent, Tracker
from tov_engine.runner import (
    Job,
    SelectionOutcome,
    build_pool,
    lookup_pool,
    prepare_job,
    random_outcome,
    seed_everything,
)

if TYPE_CHECKING:
    from tov_engine.modeling import Surrogate

logger = logging.getLogger(__name__)


def _reset(job: Job, surrogate: Surrogate) -> Callable[[], None]:
    """Restores the surrogate's initial trainable weights before a later target's fresh round 0:
    a snapshot of the (small) base adapter, or with full fine-tuning a reload from the folder."""
    import torch

    from tov_engine.modeling import load_model

    if surrogate.lora:
        snapshot = surrogate.state("base")
        return lambda: surrogate.load_state("base", snapshot)

    def reload() -> None:
        torch.manual_seed(job.config.seed)  # a new classification head is seeded as at build
        fresh = load_model(
            job.model, task=job.config.task, device=torch.device("cpu"), labels=job.labels
        )
        surrogate.load_state("base", {n: p.detach() for n, p in fresh.named_parameters()})

    return reload


def _tov_all(jobs: list[Job], tracker: Tracker) -> list[SelectionOutcome]:
    """ToV for every job: one surrogate and one RoundSource per label set (causal LM: one)."""
    from tov_engine.methods import build_surrogate, run_tov_job

    groups: dict[str, list[int]] = {}
    for j, job in enumerate(jobs):  # token classification: the head depends on the tag set
        groups.setdefault(repr(job.labels), []).append(j)
    outcomes: dict[int, SelectionOutcome] = {}
    for members in groups.values():
        first = jobs[members[0]]
        surrogate = build_surrogate(first)
        shared = RoundSource() if first.cache_dir is None else None  # else: the pool cache
        reset = _reset(first, surrogate) if len(members) > 1 else None
        for n, j in enumerate(members):
            start = time.perf_counter()
            outcomes[j] = run_tov_job(
                jobs[j],
                surrogate=surrogate,
                shared=shared,
                tracker=tracker,
                reset=reset if n else None,
            )
            jobs[j].stats["seconds_target"] = time.perf_counter() - start
            logger.info("target %d of %d done", j + 1, len(jobs))
        del surrogate, shared, reset  # free this group's model before the next one loads
    return [outcomes[j] for j in range(len(jobs))]


def _tracker(jobs: list[Job]) -> Tracker:
    from tov_engine.methods import tov_totals, tov_tracker

    lora = jobs[0].config.tov.lora.enabled
    totals: dict[str, int] = {"train": 0, "score": 0, "select": 0}
    for job in jobs:
        for stage, units in tov_totals(job, lora).items():
            totals[stage] += units
    return tov_tracker(jobs[0], lora, totals)


def _scaled(progress: ProgressCallback, j: int, k: int) -> ProgressCallback:
    """Target j's own progress as its share of the whole run (fractions stay monotone)."""

    def report(event: ProgressEvent) -> None:
        progress(dataclasses.replace(event, fraction=(j + event.fraction) / k))

    return report


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
) -> list[SelectionOutcome]:
    """Score one pool for several validation sets, sharing the validation-free work.

    Args:
        pool_path: the pool file. validation_paths: K validation files (K >= 1).
        model, config, progress, should_cancel, cache_dir: as run_selection (progress covers the
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
    cached, key, fmt = lookup_pool(config, model_dir, pool_file, cache)
    for path in validation_paths:
        inspect_dataset(path)  # every file is checked before any work starts
    if cached is None:
        from tov_engine.modeling import load_tokenizer

        cached = build_pool(config, load_tokenizer(model_dir), pool_file, fmt, cache, key)
    shared_seconds = time.perf_counter() - start
    jobs: list[Job] = []
    for j, path in enumerate(validation_paths):
        ckpt = Path(checkpoint_dir) / f"target_{j:03d}" if checkpoint_dir is not None else None
        job = prepare_job(
            pool_path=pool_file,
            validation_path=path,
            model=model_dir,
            config=config,
            progress=progress,
            should_cancel=should_cancel,
            checkpoint_dir=ckpt,
            cache_dir=cache,
            pool=(cached, key),
        )
        job.stats["seconds_prepare"] += shared_seconds / len(validation_paths)
        jobs.append(job)
    return _run_all(jobs)


def _run_all(jobs: list[Job]) -> list[SelectionOutcome]:
    method = jobs[0].config.method
    if method == "tov":
        return _tov_all(jobs, _tracker(jobs))
    from tov_engine import methods  # baselines: one run per target on the shared tokenised pool

    outcomes: list[SelectionOutcome] = []
    for j, job in enumerate(jobs):
        if job.progress is not None:
            job.progress = _scaled(job.progress, j, len(jobs))
        outcomes.append(random_outcome(job) if method == "random" else methods.run_method(job))
    return outcomes
