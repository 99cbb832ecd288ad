"""run_tov_job: ToV for one prepared job, with its checkpoints, the pool cache and progress."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from tov_engine.data.batching import padding_waste, plan_buckets
from tov_engine.job import Job, SelectionOutcome, job_parts
from tov_engine.methods.common import TRAIN_COST, build_surrogate, finish_selection, split_pool
from tov_engine.methods.tov.trajectory import Trajectory, mean_losses, run_tov, score_units
from tov_engine.model.loading import resolve_device
from tov_engine.model.precision import resolve_precision
from tov_engine.model.surrogate import Surrogate
from tov_engine.model.train_memory import training_memory
from tov_engine.progress import Tracker
from tov_engine.selection import EMBEDDING_STRATEGIES
from tov_engine.store.checkpoints import RoundCheckpoints
from tov_engine.store.entries import EntryStore
from tov_engine.store.keys import fingerprint, model_identity
from tov_engine.store.poolcache import BaseHalves, CachedBaseHalves, base_key

logger = logging.getLogger(__name__)


def tov_totals(job: Job, lora: bool) -> dict[str, int]:
    """Tracker units of one ToV run (train: rows trained on; score: rows scored a round, half a
    row in each of its two passes with LoRA, or row passes with full fine-tuning)."""
    base, rest, rounds = split_pool(job)
    passes = 1 if lora else 2
    totals = {
        "train": rounds * (len(base) + len(job.val)),
        "score": rounds * len(rest) * passes,
        "select": 1,
    }
    if job.config.selection.strategy in EMBEDDING_STRATEGIES:
        totals["embed"] = len(job.pool)  # score+diverse: the pool's embeddings, one forward
    return totals


def tov_tracker(job: Job, lora: bool, totals: dict[str, int]) -> Tracker:
    """The progress tracker of a ToV run (a training row costs TRAIN_COST forward passes)."""
    # A LoRA score unit covers both passes of a row (two forwards); full fine-tuning counts each.
    weights = {"train": TRAIN_COST, "score": 2.0 if lora else 1.0, "select": 0.0, "embed": 1.0}
    return Tracker(totals, weights, job.progress, job.should_cancel)


def base_key_parts(job: Job, base: np.ndarray, batches: list[np.ndarray]) -> dict[str, Any]:
    """Everything theta_bas and the base log-probs of R depend on (never the validation set)."""
    import peft
    import transformers

    cfg = job.config.tov
    plan = hashlib.sha256()
    for b in batches:
        plan.update(np.asarray(b, dtype=np.int64).tobytes() + b"|")
    return {
        "pool": job.pool_key,
        "model": model_identity(job.model),
        "labels": job.labels,
        "task": job.config.task,
        "max_length": job.config.max_length,
        "seed": job.config.seed,
        "device": resolve_device(job.config.device).type,
        "precision": resolve_precision(
            job.config.precision, resolve_device(job.config.device)
        ).name,
        "base": hashlib.sha256(base.astype(np.int64).tobytes()).hexdigest(),
        "learning_rate": cfg.learning_rate,
        "batch_size": cfg.batch_size,
        # where a batch is cut into micro-batches: rounding (and dropout masks) follow the cut
        "train_tokens_per_micro_batch": cfg.train_tokens_per_micro_batch,
        "lora": dataclasses.asdict(cfg.lora),
        "plan": plan.hexdigest(),
        "versions": [torch.__version__, transformers.__version__, peft.__version__],
    }


def trajectory(
    job: Job, surrogate: Surrogate, split: tuple[np.ndarray, np.ndarray, int], tracker: Tracker
) -> Trajectory:
    """The Trajectory of a job's ToV run (U, R and L from split_pool), without checkpoints."""
    base, rest, rounds = split
    return Trajectory(
        surrogate=surrogate,
        pool=job.pool,
        val=job.val,
        base_rows=base,
        score_rows=rest,
        config=job.config.tov,
        rounds=rounds,
        task=job.config.task,
        seed=job.config.seed,
        pad_id=int(job.tokenizer.pad_token_id),
        tracker=tracker,
    )


def _cached_base_halves(job: Job, base: np.ndarray, batches: list[np.ndarray]) -> BaseHalves | None:
    """The base halves in the pool cache (job.cache_dir), or None without a cache."""
    if job.cache_dir is None:
        return None
    return CachedBaseHalves(EntryStore(job.cache_dir), base_key(base_key_parts(job, base, batches)))


def _round_checkpoints(job: Job, t: Trajectory) -> RoundCheckpoints | None:
    if job.checkpoint_dir is None:
        return None
    key = fingerprint(*job_parts(job), t.base_rows.tolist(), t.rounds)
    return RoundCheckpoints(job.checkpoint_dir, key, keep_all_states=t.surrogate.lora)


def run_tov_job(
    job: Job,
    *,
    surrogate: Surrogate | None = None,
    base_halves: BaseHalves | None = None,
    tracker: Tracker | None = None,
    reset: Callable[[], None] | None = None,
) -> SelectionOutcome:
    """ToV: L rounds of base and validation epochs, scores averaged, length-binned selection.

    Args:
        job: the prepared job. surrogate: the model with its adapters (built here if None).
        base_halves: validation-free round halves to reuse and keep; None = the pool cache in
            job.cache_dir when there is one. tracker: shared progress (multi-target runs).
        reset: restores the surrogate's initial weights (a surrogate used by an earlier run).
    """
    surrogate = surrogate if surrogate is not None else build_surrogate(job)
    training_memory(surrogate.model).report_to(job.stats)  # a shared surrogate: this job's counts
    split = split_pool(job)
    own = tracker is None
    if tracker is None:
        tracker = tov_tracker(job, surrogate.lora, tov_totals(job, surrogate.lora))
    t = trajectory(job, surrogate, split, tracker)
    batches = plan_buckets(job.pool.seq_lengths, t.score_rows, t.config.tokens_per_batch)
    t.base_halves = base_halves
    if base_halves is None:
        t.base_halves = _cached_base_halves(job, t.base_rows, batches)
    t.checkpoints, t.reset = _round_checkpoints(job, t), reset
    assert not own or score_units(t) == tracker.totals["score"]
    scores, _ = run_tov(t)
    job.stats.update(
        rounds=t.rounds,
        base_size=len(t.base_rows),
        seconds_train=t.seconds["train"],
        seconds_score=t.seconds["score"],
        scoring_batches=len(batches),
        padding_waste=padding_waste(job.pool.seq_lengths, batches),
        base_rounds_reused=t.reused,
    )
    return finish_selection(
        job, scores, t.base_rows, tracker, last=own, losses=mean_losses(t), surrogate=surrogate
    )
