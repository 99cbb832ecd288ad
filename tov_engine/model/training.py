"""One epoch of fine-tuning over a set of rows, in a seeded order."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from tov_engine.data.batching import make_batch, training_batches
from tov_engine.data.encoded import EncodedSet
from tov_engine.model.logprob import loss_rows, mean_loss, share_of_loss, token_logprobs
from tov_engine.model.precision import compute
from tov_engine.model.train_memory import checkpointing, training_memory
from tov_engine.progress import Tracker
from tov_plan.rules import micro_batches

logger = logging.getLogger(__name__)

WEIGHT_DECAY = 0.0  # ours: the paper names AdamW but no decay; LoRA fine-tunes usually use none


@dataclass(frozen=True)
class EpochPlan:
    """What to train on and how."""

    encoded: EncodedSet
    rows: np.ndarray  # (k,) indices into `encoded`
    batch_size: int
    seed: tuple[int, ...]  # seeds the row order and dropout, so a resumed run repeats exactly
    task: str
    pad_id: int


def make_optimizer(params: list[nn.Parameter], lr: float) -> torch.optim.AdamW:
    """A fresh AdamW (constant LR) over `params`."""
    return torch.optim.AdamW(params, lr=lr, weight_decay=WEIGHT_DECAY)


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    plan: EpochPlan,
    tracker: Tracker | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
) -> float:
    """Train one epoch; report progress and poll cancellation after every batch.

    Each batch of `plan.batch_size` rows is one optimizer step. It runs in micro-batches under
    the model's training-memory settings (model/train_memory.py: the padded-token budget, gradient
    checkpointing): a batch within the budget is one forward and backward as ever; a larger one
    is cut into contiguous micro-batches whose gradients accumulate to the one-batch gradient.

    Args:
        model: the model, with the weights to train active. optimizer: over those weights.
        plan: rows, batch size, seed. tracker: progress under stage "train".
        scheduler: stepped after every optimizer step (LESS's decaying LR); None = constant LR.
    Returns:
        The mean training loss over the epoch's batches (NaN if none carried loss).
    """
    device = next(model.parameters()).device
    memory = training_memory(model)
    order = np.random.default_rng(list(plan.seed)).permutation(plan.rows)
    torch.manual_seed(int(np.random.default_rng(list(plan.seed)).integers(2**31)))
    model.train()
    losses: list[float] = []
    passes = 0
    with checkpointing(model, memory.checkpointing):
        for rows in training_batches(order, plan.batch_size):
            parts = micro_batches(plan.encoded.seq_lengths, rows, memory.tokens_per_micro_batch)
            if len(parts) == 1:
                loss, runs = _one_batch(model, optimizer, plan, rows, device)
            else:
                loss, runs = _accumulated(model, optimizer, plan, parts, device)
            passes += runs
            if loss is not None:
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                losses.append(loss)
            if tracker is not None:
                tracker.advance("train", len(rows))
    memory.count(len(losses), passes)
    return float(np.mean(losses)) if losses else float("nan")


def _one_batch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    plan: EpochPlan,
    rows: np.ndarray,
    device: torch.device,
) -> tuple[float | None, int]:
    """The gradient of a batch within the budget: one forward and backward. Returns its loss
    (None without loss rows: no gradient) and the number of forwards run (1)."""
    batch = make_batch(plan.encoded, rows, plan.pad_id, device)
    with compute(model):
        loss = mean_loss(token_logprobs(model, batch, plan.task))
    if loss is None:
        return None, 1
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    return float(loss.detach()), 1


def _accumulated(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    plan: EpochPlan,
    parts: list[np.ndarray],
    device: torch.device,
) -> tuple[float | None, int]:
    """The gradient of a batch over its micro-batches: each adds the gradient of its share of
    the batch loss (share_of_loss); micro-batches without a loss row are not run. Returns the
    batch loss (None without loss rows) and the number of forwards run."""
    batches = [make_batch(plan.encoded, p, plan.pad_id, device) for p in parts]
    counts = [loss_rows(b, plan.task) for b in batches]
    total = sum(counts)
    if total == 0:
        return None, 0
    optimizer.zero_grad(set_to_none=True)
    loss, runs = 0.0, 0
    for batch, count in zip(batches, counts, strict=True):
        if count == 0:
            continue
        with compute(model):
            share = share_of_loss(token_logprobs(model, batch, plan.task), total)
        runs += 1
        if share is not None:
            share.backward()
            loss += float(share.detach())
    return loss, runs
