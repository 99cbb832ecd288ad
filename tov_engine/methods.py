"""The model-based methods: ToV and the max-uncertainty baseline (LESS lives in less.py)."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from tov_engine.batching import padding_waste, plan_buckets
from tov_engine.cachestore import EntryStore, model_identity
from tov_engine.checkpoint import RoundStore, fingerprint
from tov_engine.errors import ConfigError
from tov_engine.modeling import Surrogate, load_model, resolve_device
from tov_engine.poolcache import DiskRounds, RoundSource, base_key
from tov_engine.progress import Tracker
from tov_engine.runner import Job, SelectionOutcome, draw_base, job_fingerprint_parts
from tov_engine.scoring import uncertainty_combine
from tov_engine.selection import select
from tov_engine.tov import Trajectory, run_tov, score_units
from tov_engine.training import EpochPlan, make_optimizer, train_epoch

logger = logging.getLogger(__name__)

TRAIN_COST = 3.0  # a training row costs about three forward passes (forward + backward)


def build_surrogate(job: Job) -> Surrogate:
    """Load the model onto the job's device and attach the adapters, seeded."""
    device = resolve_device(job.config.device)
    torch.manual_seed(job.config.seed)  # a new classification head and LoRA init are random
    model = load_model(job.model, task=job.config.task, device=device, labels=job.labels)
    return Surrogate(model, job.config.tov.lora, job.config.task)


def split_pool(job: Job) -> tuple[np.ndarray, np.ndarray, int]:
    """U, R and the number of rounds L for this job."""
    size = len(job.pool)
    base_size = job.config.tov.resolve_base_size(job.budget, size)
    if base_size >= size:
        raise ConfigError(f"tov.base_size {base_size} leaves no row to score in a pool of {size}")
    base = draw_base(size, base_size, job.config.seed)
    rest = np.setdiff1d(np.arange(size, dtype=np.int64), base)
    return base, rest, job.config.tov.resolve_rounds(base_size)


def _finish(
    job: Job, scores: np.ndarray, base: np.ndarray, tracker: Tracker, last: bool = True
) -> SelectionOutcome:
    start = time.perf_counter()
    lengths = job.pool.loss_lengths
    chosen = select(
        scores=scores,
        lengths=lengths,
        base_indices=base,
        config=job.config.selection,
        seed=job.config.seed,
    )
    job.stats["seconds_select"] = time.perf_counter() - start
    message = f"selected {len(chosen.indices)} rows"
    if last:
        tracker.finish("select", message)
    else:
        tracker.advance("select", 1, message)
    return SelectionOutcome(
        scores=scores, lengths=lengths, base_indices=base, selection=chosen, stats=job.stats
    )


def tov_totals(job: Job, lora: bool) -> dict[str, int]:
    """Tracker units of one ToV run (train: rows trained on; score: rows scored a round, half a
    row in each of its two passes with LoRA, or row passes with full fine-tuning)."""
    base, rest, rounds = split_pool(job)
    passes = 1 if lora else 2
    return {
        "train": rounds * (len(base) + len(job.val)),
        "score": rounds * len(rest) * passes,
        "select": 1,
    }


def tov_tracker(job: Job, lora: bool, totals: dict[str, int]) -> Tracker:
    """The progress tracker of a ToV run (a training row costs TRAIN_COST forward passes)."""
    # A LoRA score unit covers both passes of a row (two forwards); full fine-tuning counts each.
    weights = {"train": TRAIN_COST, "score": 2.0 if lora else 1.0, "select": 0.0}
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
        "base": hashlib.sha256(base.astype(np.int64).tobytes()).hexdigest(),
        "learning_rate": cfg.learning_rate,
        "batch_size": cfg.batch_size,
        "lora": dataclasses.asdict(cfg.lora),
        "plan": plan.hexdigest(),
        "versions": [torch.__version__, transformers.__version__, peft.__version__],
    }


def run_tov_job(
    job: Job,
    *,
    surrogate: Surrogate | None = None,
    shared: RoundSource | None = None,
    tracker: Tracker | None = None,
    reset: Callable[[], None] | None = None,
) -> SelectionOutcome:
    """ToV: L rounds of base and validation epochs, scores averaged, length-binned selection.

    Args:
        job: the prepared job. surrogate: the model with its adapters (built here if None).
        shared: validation-free round halves to reuse and keep; None = the pool cache in
            job.cache_dir when there is one. tracker: shared progress (multi-target runs).
        reset: restores the surrogate's initial weights (a surrogate used by an earlier run).
    """
    surrogate = surrogate if surrogate is not None else build_surrogate(job)
    base, rest, rounds = split_pool(job)
    cfg = job.config.tov
    own = tracker is None
    if tracker is None:
        tracker = tov_tracker(job, surrogate.lora, tov_totals(job, surrogate.lora))
    batches = plan_buckets(job.pool.seq_lengths, rest, cfg.tokens_per_batch)
    if shared is None and job.cache_dir is not None:
        key = base_key(base_key_parts(job, base, batches))
        shared = DiskRounds(EntryStore(job.cache_dir), key)
    store = None
    if job.checkpoint_dir is not None:
        key = fingerprint(*job_fingerprint_parts(job), base.tolist(), rounds)
        store = RoundStore(job.checkpoint_dir, key, keep_all_states=surrogate.lora)
    t = Trajectory(
        surrogate=surrogate,
        pool=job.pool,
        val=job.val,
        base_rows=base,
        score_rows=rest,
        config=cfg,
        rounds=rounds,
        task=job.config.task,
        seed=job.config.seed,
        pad_id=int(job.tokenizer.pad_token_id),
        tracker=tracker,
        store=store,
        shared=shared,
        reset=reset,
    )
    assert not own or score_units(t) == tracker.totals["score"]
    scores, _ = run_tov(t)
    job.stats.update(
        rounds=rounds,
        base_size=len(base),
        seconds_train=t.seconds["train"],
        seconds_score=t.seconds["score"],
        scoring_batches=len(batches),
        padding_waste=padding_waste(job.pool.seq_lengths, batches),
        base_rounds_reused=t.reused,
    )
    return _finish(job, scores, base, tracker, last=own)


def run_uncertainty_job(job: Job) -> SelectionOutcome:
    """Max-uncertainty: theta_bas = L epochs on U, psi over R, length-binned selection.

    With job.checkpoint_dir the weights and optimizer after every base epoch, and the scores of
    every SCORE_CHUNK_ROWS rows of R, are kept (resume.py); a rerun skips the finished work and
    gives identical results. A folder of another job raises CheckpointError."""
    from tov_engine import resume

    surrogate = build_surrogate(job)
    base, rest, rounds = split_pool(job)
    cfg = job.config.tov
    tracker = Tracker(
        {"train": rounds * len(base), "score": len(rest), "select": 1},
        {"train": TRAIN_COST, "score": 1.0, "select": 0.0},
        job.progress,
        job.should_cancel,
    )
    store = None
    if job.checkpoint_dir is not None:
        digest = hashlib.sha256(base.astype(np.int64).tobytes()).hexdigest()
        key = resume.stage_fingerprint(
            "uncertainty", *resume.job_parts(job), digest, rounds, resume.SCORE_CHUNK_ROWS
        )
        store = resume.StageStore(job.checkpoint_dir, key, "uncertainty")
    start = time.perf_counter()
    optimizer = make_optimizer(surrogate.params("base"), cfg.learning_rate)
    pad_id = int(job.tokenizer.pad_token_id)
    done = resume.finished_epochs(store, rounds)
    if store is not None and done:
        resume.load_epoch(store, done - 1, surrogate, optimizer)
        tracker.advance("train", done * len(base), f"resumed after epoch {done}")
    for k in range(done, rounds):  # the same base epochs (and seeds) as ToV's trajectory
        plan = EpochPlan(
            job.pool, base, cfg.batch_size, (job.config.seed, k, 0), job.config.task, pad_id
        )
        train_epoch(surrogate.model, optimizer, plan, tracker)
        if store is not None:
            resume.save_epoch(store, k, surrogate, optimizer)
    job.stats["seconds_train"] = time.perf_counter() - start
    start = time.perf_counter()
    batches = plan_buckets(job.pool.seq_lengths, rest, cfg.tokens_per_batch)
    combine = uncertainty_combine(surrogate.model, job.config.task)
    scores = resume.resumable_pass(
        store, surrogate.model, job.pool, batches, combine, pad_id=pad_id, tracker=tracker
    )
    job.stats.update(
        rounds=rounds,
        base_size=len(base),
        seconds_score=time.perf_counter() - start,
        scoring_batches=len(batches),
        padding_waste=padding_waste(job.pool.seq_lengths, batches),
    )
    return _finish(job, scores, base, tracker)


def run_method(job: Job) -> SelectionOutcome:
    """Dispatch on job.config.method (everything but "random")."""
    runners: dict[str, Any] = {"tov": run_tov_job, "uncertainty": run_uncertainty_job}
    if job.config.method == "less":
        from tov_engine.less import run_less_job

        return run_less_job(job)
    return runners[job.config.method](job)  # type: ignore[no-any-return]
