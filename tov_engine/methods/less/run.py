"""The LESS baseline (Xia et al. 2024, arXiv 2402.04333) in plain torch.

Warm up LoRA on a random 5% of the pool for 4 epochs (linearly decaying LR), keeping each epoch's
weights and Adam moments. Per checkpoint: per-example LoRA gradients of every pool row, Adam-
preconditioned with that checkpoint's moments; plain (SGD) gradients of the validation rows; both
randomly projected and L2-normalised (a sparse JL transform, Kane & Nelson 2014, in place of
the paper's dense Rademacher matrix: the same inner-product guarantee at O(P) instead of O(P d)
a row). Score of a pool row = sum over checkpoints of the
epoch's normalised mean LR x cosine, averaged over the validation rows of a subtask, max over
subtasks. Select the global top n (no length bins, no base subset).

With a checkpoint_dir (store.checkpoints.CheckpointFolder, kind "less") every warmup epoch (weights,
moments, optimizer and schedule state) and, per checkpoint, the validation features and the cosines
of every FEATURE_CHUNK_ROWS pool rows are kept; a rerun skips them and gives identical scores.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np
import torch
from torch import nn

from tov_engine.data.files import read_rows
from tov_engine.errors import ConfigError
from tov_engine.job import Job, SelectionOutcome, job_parts
from tov_engine.leakage import select_top_excluding
from tov_engine.methods.common import TRAIN_COST, build_surrogate
from tov_engine.methods.less.features import features as _features
from tov_engine.methods.less.gradients import (
    GRADIENT_BUFFER,
    PROJECTION,
    SPARSITY,
    Checkpoint,
    Projector,
    gradient_batches,
)
from tov_engine.model.surrogate import Surrogate
from tov_engine.model.training import EpochPlan, make_optimizer, train_epoch
from tov_engine.progress import Tracker
from tov_engine.selection import ranked_bins
from tov_engine.store.checkpoints import CheckpointFolder, chunk_batches
from tov_engine.store.keys import fingerprint

logger = logging.getLogger(__name__)

FEATURE_CHUNK_ROWS = 1024  # pool rows whose features are held at once (and checkpointed)


def _moments(
    optimizer: torch.optim.Optimizer, params: list[nn.Parameter], key: str
) -> torch.Tensor:
    # A parameter that never got a gradient has no state yet: its moments are zero.
    parts = [
        optimizer.state[p][key].detach().clone()
        if key in optimizer.state.get(p, {})
        else torch.zeros_like(p)
        for p in params
    ]
    return torch.cat([t.reshape(-1).float() for t in parts])


def _warmup(
    job: Job, s: Surrogate, tracker: Tracker, store: CheckpointFolder | None = None
) -> list[Checkpoint]:
    cfg, size = job.config, len(job.pool)
    count = max(1, math.floor(cfg.less.warmup_fraction * size + 0.5))
    rows = np.sort(np.random.default_rng([cfg.seed, 2]).choice(size, count, replace=False))
    params = s.params("base")
    optimizer = make_optimizer(params, cfg.tov.learning_rate)
    steps = cfg.less.epochs * math.ceil(count / cfg.tov.batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: max(0.0, 1.0 - t / steps))
    checkpoints = _resume_warmup(store, cfg.less.epochs, s, optimizer, schedule)
    if checkpoints:
        tracker.advance("train", len(checkpoints) * count, "resumed the warmup")
    pad_id = int(job.tokenizer.pad_token_id)
    for epoch in range(len(checkpoints), cfg.less.epochs):
        lr_at_start = optimizer.param_groups[0]["lr"]
        plan = EpochPlan(job.pool, rows, cfg.tov.batch_size, (cfg.seed, epoch, 2), cfg.task, pad_id)
        train_epoch(s.model, optimizer, plan, tracker, scheduler=schedule)
        mean_lr = (lr_at_start + optimizer.param_groups[0]["lr"]) / 2  # linear within the epoch
        checkpoints.append(
            Checkpoint(
                weights=s.state("base"),
                exp_avg=_moments(optimizer, params, "exp_avg"),
                exp_avg_sq=_moments(optimizer, params, "exp_avg_sq"),
                mean_lr=mean_lr,
            )
        )
        if store is not None:
            _save_warmup(store, epoch, checkpoints[-1], optimizer, schedule)
    return checkpoints


def _save_warmup(
    store: CheckpointFolder,
    epoch: int,
    ck: Checkpoint,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
) -> None:
    name = f"warmup_{epoch:03d}"
    store.begin(name)
    store.save_tensors(name, "weights.safetensors", ck.weights)
    moments = {"exp_avg": ck.exp_avg, "exp_avg_sq": ck.exp_avg_sq}
    store.save_tensors(name, "moments.safetensors", moments)
    store.save_state(name, "optimizer.pt", optimizer.state_dict())
    store.save_state(name, "schedule.pt", schedule.state_dict())
    store.save_meta(name, {"mean_lr": ck.mean_lr})
    store.finish(name)
    if epoch > 0:  # only the latest epoch's optimizer is needed to train on
        store.drop(f"warmup_{epoch - 1:03d}", "optimizer.pt", "schedule.pt")


def _resume_warmup(
    store: CheckpointFolder | None,
    epochs: int,
    s: Surrogate,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
) -> list[Checkpoint]:
    """The finished warmup epochs' checkpoints; the model, optimizer and schedule are left as
    they were after the last of them."""
    checkpoints: list[Checkpoint] = []
    while store is not None and len(checkpoints) < epochs:
        name = f"warmup_{len(checkpoints):03d}"
        if not store.done(name):
            break
        moments = store.load_tensors(name, "moments.safetensors")
        checkpoints.append(
            Checkpoint(
                weights=store.load_tensors(name, "weights.safetensors"),
                exp_avg=moments["exp_avg"],
                exp_avg_sq=moments["exp_avg_sq"],
                mean_lr=float(store.load_meta(name)["mean_lr"]),
            )
        )
    if store is not None and checkpoints:
        last = f"warmup_{len(checkpoints) - 1:03d}"
        if len(checkpoints) < epochs:  # training goes on from there
            s.load_state("base", checkpoints[-1].weights)
            optimizer.load_state_dict(store.load_state(last, "optimizer.pt"))
            schedule.load_state_dict(store.load_state(last, "schedule.pt"))
        logger.info("LESS: resumed %d warmup epochs from %s", len(checkpoints), store.root)
    return checkpoints


def _cosines(
    job: Job,
    s: Surrogate,
    checkpoints: list[Checkpoint],
    project: Projector,
    tracker: Tracker,
    store: CheckpointFolder | None,
) -> torch.Tensor:
    """(N, m): sum over checkpoints of the epoch's weight x the cosines of pool and validation
    features. Per checkpoint e the validation features (stage features_EEE_val) and the cosines of
    every FEATURE_CHUNK_ROWS pool rows (stages features_EEE_CCCCC) are kept when there is a store;
    the pool's d-dimensional features are never held for more than one chunk."""
    weights = np.array([ck.mean_lr for ck in checkpoints])
    weights = (
        weights / weights.sum() if weights.sum() > 0 else np.full(len(weights), 1 / len(weights))
    )
    sims = torch.zeros(len(job.pool), len(job.val))
    pool_groups = chunk_batches(gradient_batches(job.pool), FEATURE_CHUNK_ROWS)
    val_batches = gradient_batches(job.val)
    val_rows = np.concatenate(val_batches) if val_batches else np.zeros(0, dtype=np.int64)
    for e, (ck, w) in enumerate(zip(checkpoints, weights, strict=True)):
        s.load_state("base", ck.weights)
        name = f"features_{e:03d}_val"
        if store is not None and store.done(name):
            val = torch.from_numpy(store.load_array(name, "features.npy"))
            tracker.advance("score", len(job.val))
        else:
            val = torch.zeros(len(job.val), project.d)
            val[torch.from_numpy(val_rows)] = _features(
                job, s, job.val, val_batches, ck, project, False, tracker
            )
            if store is not None:
                store.begin(name)
                store.save_array(name, "features.npy", val.numpy())
                store.finish(name)
        for j, group in enumerate(pool_groups):
            rows = np.concatenate(group)
            name = f"features_{e:03d}_{j:05d}"
            if store is not None and store.done(name):
                cos = torch.from_numpy(store.load_array(name, "cosines.npy"))
                tracker.advance("score", len(rows))
            else:
                cos = _features(job, s, job.pool, group, ck, project, True, tracker) @ val.T
                if store is not None:
                    store.begin(name)
                    store.save_array(name, "cosines.npy", cos.numpy())
                    store.finish(name)
            sims[torch.from_numpy(rows)] += float(w) * cos  # (rows, m), LR-weighted
    return sims


def _subtasks(job: Job) -> np.ndarray:
    names = [str(r.get("subtask", "")) for r in read_rows(job.validation_path)]
    return np.unique(names, return_inverse=True)[1]


def run_less_job(job: Job) -> SelectionOutcome:
    """LESS: warmup checkpoints, projected gradient cosines, global top n."""
    if not job.config.tov.lora.enabled:
        raise ConfigError("the LESS baseline needs LoRA (tov.lora.enabled = true)")
    s = build_surrogate(job)
    less, size = job.config.less, len(job.pool)
    warm = max(1, math.floor(less.warmup_fraction * size + 0.5))
    tracker = Tracker(
        {"train": less.epochs * warm, "score": less.epochs * (size + len(job.val)), "select": 1},
        {"train": TRAIN_COST, "score": TRAIN_COST, "select": 0.0},
        job.progress,
        job.should_cancel,
    )
    store = None
    if job.checkpoint_dir is not None:
        key = fingerprint(
            *job_parts(job), FEATURE_CHUNK_ROWS, GRADIENT_BUFFER, PROJECTION, SPARSITY, kind="less"
        )
        store = CheckpointFolder(job.checkpoint_dir, key, kind="less")
    start = time.perf_counter()
    checkpoints = _warmup(job, s, tracker, store)
    job.stats["seconds_train"] = time.perf_counter() - start
    start = time.perf_counter()
    p = sum(t.numel() for t in s.params("base"))
    d = min(less.projection_dim, p)
    project = Projector(p, d, job.config.seed, s.params("base")[0].device)
    sims = _cosines(job, s, checkpoints, project, tracker, store)
    groups = _subtasks(job)
    per_task = [sims[:, groups == g].mean(dim=1) for g in np.unique(groups)]
    scores = torch.stack(per_task).max(dim=0).values.numpy().astype(np.float32)
    job.stats.update(
        seconds_score=time.perf_counter() - start,
        projection_dim=d,
        lora_params=p,
        warmup_rows=warm,
        subtasks=len(per_task),
    )
    start = time.perf_counter()
    chosen = select_top_excluding(job.excluded, scores=scores, n=job.budget)
    job.stats["seconds_select"] = time.perf_counter() - start
    tracker.finish("select", f"selected {len(chosen.indices)} rows")
    empty = np.zeros(0, dtype=np.int64)
    scored = np.flatnonzero(~np.isnan(scores))
    if job.excluded is not None:  # excluded rows are no candidates (as in the selection)
        scored = scored[~np.asarray(job.excluded, dtype=bool)[scored]]
    return SelectionOutcome(
        scores=scores,
        lengths=job.pool.loss_lengths,
        base_indices=empty,
        selection=chosen,
        stats=job.stats,
        binning=ranked_bins(scored, scores, job.pool.loss_lengths, 1),  # no bins: a global rank
    )
