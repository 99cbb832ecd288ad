"""The model-based methods: ToV and the max-uncertainty baseline (LESS lives in less.py)."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch

from tov_engine.batching import padding_waste, plan_buckets
from tov_engine.checkpoint import RoundStore, fingerprint
from tov_engine.errors import ConfigError
from tov_engine.modeling import Surrogate, load_model, resolve_device
from tov_engine.progress import Tracker
from tov_engine.runner import Job, SelectionOutcome, draw_base, job_fingerprint_parts
from tov_engine.scoring import run_pass, uncertainty_combine
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


def _finish(job: Job, scores: np.ndarray, base: np.ndarray, tracker: Tracker) -> SelectionOutcome:
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
    tracker.finish("select", f"selected {len(chosen.indices)} rows")
    return SelectionOutcome(
        scores=scores, lengths=lengths, base_indices=base, selection=chosen, stats=job.stats
    )


def run_tov_job(job: Job) -> SelectionOutcome:
    """ToV: L rounds of base and validation epochs, scores averaged, length-binned selection."""
    surrogate = build_surrogate(job)
    base, rest, rounds = split_pool(job)
    cfg = job.config.tov
    passes = 1 if surrogate.lora else 2
    tracker = Tracker(
        {
            "train": rounds * (len(base) + len(job.val)),
            "score": rounds * len(rest) * passes,
            "select": 1,
        },
        {"train": TRAIN_COST, "score": 2.0 / passes, "select": 0.0},
        job.progress,
        job.should_cancel,
    )
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
    )
    assert score_units(t) == tracker.totals["score"]
    scores, _ = run_tov(t)
    batches = plan_buckets(job.pool.seq_lengths, rest, cfg.tokens_per_batch)
    job.stats.update(
        rounds=rounds,
        base_size=len(base),
        seconds_train=t.seconds["train"],
        seconds_score=t.seconds["score"],
        scoring_batches=len(batches),
        padding_waste=padding_waste(job.pool.seq_lengths, batches),
    )
    return _finish(job, scores, base, tracker)


def run_uncertainty_job(job: Job) -> SelectionOutcome:
    """Max-uncertainty: theta_bas = L epochs on U, psi over R, length-binned selection."""
    surrogate = build_surrogate(job)
    base, rest, rounds = split_pool(job)
    cfg = job.config.tov
    tracker = Tracker(
        {"train": rounds * len(base), "score": len(rest), "select": 1},
        {"train": TRAIN_COST, "score": 1.0, "select": 0.0},
        job.progress,
        job.should_cancel,
    )
    start = time.perf_counter()
    optimizer = make_optimizer(surrogate.params("base"), cfg.learning_rate)
    pad_id = int(job.tokenizer.pad_token_id)
    for k in range(rounds):  # the same base epochs (and seeds) as ToV's trajectory
        plan = EpochPlan(
            job.pool, base, cfg.batch_size, (job.config.seed, k, 0), job.config.task, pad_id
        )
        train_epoch(surrogate.model, optimizer, plan, tracker)
    job.stats["seconds_train"] = time.perf_counter() - start
    start = time.perf_counter()
    batches = plan_buckets(job.pool.seq_lengths, rest, cfg.tokens_per_batch)
    combine = uncertainty_combine(surrogate.model, job.config.task)
    scores = run_pass(surrogate.model, job.pool, batches, combine, pad_id=pad_id, tracker=tracker)
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
