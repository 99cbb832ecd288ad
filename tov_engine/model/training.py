"""One epoch of fine-tuning over a set of rows, in a seeded order."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from tov_engine.data.batching import make_batch, training_batches
from tov_engine.data.encoded import EncodedSet
from tov_engine.model.logprob import mean_loss, token_logprobs
from tov_engine.model.precision import compute
from tov_engine.progress import Tracker

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

    Args:
        model: the model, with the weights to train active. optimizer: over those weights.
        plan: rows, batch size, seed. tracker: progress under stage "train".
        scheduler: stepped after every optimizer step (LESS's decaying LR); None = constant LR.
    Returns:
        The mean training loss over the epoch's batches (NaN if none carried loss).
    """
    device = next(model.parameters()).device
    order = np.random.default_rng(list(plan.seed)).permutation(plan.rows)
    torch.manual_seed(int(np.random.default_rng(list(plan.seed)).integers(2**31)))
    model.train()
    losses: list[float] = []
    for rows in training_batches(order, plan.batch_size):
        batch = make_batch(plan.encoded, rows, plan.pad_id, device)
        with compute(model):
            loss = mean_loss(token_logprobs(model, batch, plan.task))
        if loss is not None:
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            losses.append(float(loss.detach()))
        if tracker is not None:
            tracker.advance("train", len(rows))
    return float(np.mean(losses)) if losses else float("nan")
