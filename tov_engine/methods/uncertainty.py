"""The max-uncertainty baseline: theta_bas = L epochs on U, psi over R, length-binned selection.

With a checkpoint folder (store.checkpoints.CheckpointFolder, kind "uncertainty") the weights and
optimizer after every base epoch (stages epoch_NNN), and the scores of every SCORE_CHUNK_ROWS rows
of R (stages score_NNNNN), are kept; a rerun skips the finished work and gives identical results.
"""

from __future__ import annotations

import hashlib
import logging
import time

import numpy as np
import torch
from torch import nn

from tov_engine.data.batching import padding_waste, plan_buckets
from tov_engine.data.encoded import EncodedSet
from tov_engine.job import Job, SelectionOutcome, job_parts
from tov_engine.methods.common import TRAIN_COST, build_surrogate, finish_selection, split_pool
from tov_engine.model.scoring import Combine, run_pass, uncertainty_combine
from tov_engine.model.surrogate import Surrogate
from tov_engine.model.training import EpochPlan, make_optimizer, train_epoch
from tov_engine.progress import Tracker
from tov_engine.selection import EMBEDDING_STRATEGIES
from tov_engine.store.checkpoints import CheckpointFolder, chunk_batches
from tov_engine.store.keys import fingerprint

logger = logging.getLogger(__name__)

SCORE_CHUNK_ROWS = 4096  # rows per checkpointed chunk of a baseline's scoring pass


def load_epoch(
    store: CheckpointFolder, k: int, surrogate: Surrogate, optimizer: torch.optim.Optimizer
) -> None:
    """Put the weights and optimizer state after epoch k back into the model and optimizer."""
    name = f"epoch_{k:03d}"
    surrogate.load_state("base", store.load_tensors(name, "base.safetensors"))
    optimizer.load_state_dict(store.load_state(name, "optimizer.pt"))
    logger.info("resumed from %s after epoch %d", store.root, k + 1)


def save_epoch(
    store: CheckpointFolder, k: int, surrogate: Surrogate, optimizer: torch.optim.Optimizer
) -> None:
    """Keep the weights and optimizer state after epoch k (only the latest epoch's are kept)."""
    name = f"epoch_{k:03d}"
    store.begin(name)
    store.save_tensors(name, "base.safetensors", surrogate.state("base"))
    store.save_state(name, "optimizer.pt", optimizer.state_dict())
    store.finish(name)
    if k > 0:
        store.drop(f"epoch_{k - 1:03d}", "base.safetensors", "optimizer.pt")


def resumable_pass(
    store: CheckpointFolder | None,
    model: nn.Module,
    encoded: EncodedSet,
    batches: list[np.ndarray],
    combine: Combine,
    *,
    pad_id: int,
    tracker: Tracker,
) -> np.ndarray:
    """scoring.run_pass with every SCORE_CHUNK_ROWS rows kept (stages score_NNNNN): a rerun
    loads the finished chunks and scores only the rest. Without a store, one plain run_pass."""
    if store is None:
        return run_pass(model, encoded, batches, combine, pad_id=pad_id, tracker=tracker)
    scores = np.full(len(encoded), np.nan, dtype=np.float32)
    for j, group in enumerate(chunk_batches(batches, SCORE_CHUNK_ROWS)):
        rows = np.concatenate(group)
        name = f"score_{j:05d}"
        if store.done(name):
            scores[rows] = store.load_array(name, "scores.npy")
            tracker.advance("score", len(rows))
            continue
        part = run_pass(model, encoded, group, combine, pad_id=pad_id, tracker=tracker)
        scores[rows] = part[rows]
        store.begin(name)
        store.save_array(name, "scores.npy", part[rows])
        store.finish(name)
    return scores


def _checkpoints(job: Job, base: np.ndarray, rounds: int) -> CheckpointFolder | None:
    if job.checkpoint_dir is None:
        return None
    digest = hashlib.sha256(base.astype(np.int64).tobytes()).hexdigest()
    key = fingerprint(*job_parts(job), digest, rounds, SCORE_CHUNK_ROWS, kind="uncertainty")
    return CheckpointFolder(job.checkpoint_dir, key, kind="uncertainty")


def _train_base(
    job: Job, surrogate: Surrogate, base: np.ndarray, rounds: int, tracker: Tracker
) -> CheckpointFolder | None:
    """theta_bas: `rounds` epochs on U (the same epochs and seeds as ToV's base trajectory)."""
    store = _checkpoints(job, base, rounds)
    cfg = job.config.tov
    optimizer = make_optimizer(surrogate.params("base"), cfg.learning_rate)
    pad_id = int(job.tokenizer.pad_token_id)
    done = store.completed("epoch", rounds) if store is not None else 0
    if store is not None and done:
        load_epoch(store, done - 1, surrogate, optimizer)
        tracker.advance("train", done * len(base), f"resumed after epoch {done}")
    for k in range(done, rounds):
        plan = EpochPlan(
            job.pool, base, cfg.batch_size, (job.config.seed, k, 0), job.config.task, pad_id
        )
        train_epoch(surrogate.model, optimizer, plan, tracker)
        if store is not None:
            save_epoch(store, k, surrogate, optimizer)
    return store


def run_uncertainty_job(job: Job) -> SelectionOutcome:
    """Max-uncertainty: theta_bas = L epochs on U, psi over R, length-binned selection.

    With job.checkpoint_dir finished epochs and score chunks are kept (see the module docstring);
    a folder of another job raises CheckpointError."""
    surrogate = build_surrogate(job)
    base, rest, rounds = split_pool(job)
    totals = {"train": rounds * len(base), "score": len(rest), "select": 1}
    if job.config.selection.strategy in EMBEDDING_STRATEGIES:
        totals["embed"] = len(job.pool)  # score+diverse: the pool's embeddings, one forward
    tracker = Tracker(
        totals,
        {"train": TRAIN_COST, "score": 1.0, "select": 0.0, "embed": 1.0},
        job.progress,
        job.should_cancel,
    )
    start = time.perf_counter()
    store = _train_base(job, surrogate, base, rounds, tracker)
    job.stats["seconds_train"] = time.perf_counter() - start
    start = time.perf_counter()
    batches = plan_buckets(job.pool.seq_lengths, rest, job.config.tov.tokens_per_batch)
    combine = uncertainty_combine(surrogate.model, job.config.task)
    pad_id = int(job.tokenizer.pad_token_id)
    scores = resumable_pass(
        store, surrogate.model, job.pool, batches, combine, pad_id=pad_id, tracker=tracker
    )
    job.stats.update(
        rounds=rounds,
        base_size=len(base),
        seconds_score=time.perf_counter() - start,
        scoring_batches=len(batches),
        padding_waste=padding_waste(job.pool.seq_lengths, batches),
    )
    return finish_selection(job, scores, base, tracker, surrogate=surrogate)
