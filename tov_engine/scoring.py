"""Score passes over the pool: length-bucketed batches under inference_mode.

ToV with LoRA scores each batch twice, once per adapter, and combines per token right away, so no
per-token log-probabilities are stored. Full fine-tuning has one set of live weights: the "before"
pass stores the per-token log-probs of the rows (4 bytes a loss token), the "after" pass combines.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from tov_engine.batching import Batch, make_batch
from tov_engine.encoding import EncodedSet
from tov_engine.logprob import TokenLogprobs, row_means, token_logprobs
from tov_engine.modeling import Surrogate, autocast
from tov_engine.progress import Tracker

logger = logging.getLogger(__name__)

ScoreFn = Callable[[torch.Tensor], torch.Tensor]
SCORE_FUNCTIONS: dict[str, ScoreFn] = {
    "improvement": lambda d: d,  # F(y) = y: equals loss(theta) - loss(theta')
    "absolute": torch.abs,  # F(y) = |y|
    "positive": lambda d: d.clamp(min=0.0),  # F(y) = max(y, 0)
}
# Row scores of one batch from the batch itself.
Combine = Callable[[Batch], torch.Tensor]


def run_pass(
    model: nn.Module,
    encoded: EncodedSet,
    batches: list[np.ndarray],
    combine: Combine,
    *,
    pad_id: int,
    tracker: Tracker | None = None,
) -> np.ndarray:
    """Evaluate `combine` on every batch and gather the row scores.

    Args:
        model: the model (for its device; put in eval mode here). encoded: tokenised rows.
        batches: row-index arrays (plan_buckets). combine: batch -> (B,) scores.
        pad_id: pad token. tracker: progress under stage "score".
    Returns:
        (len(encoded),) float32, NaN for rows not in any batch or without loss tokens.
    """
    device = next(model.parameters()).device
    scores = np.full(len(encoded), np.nan, dtype=np.float32)
    was_training = model.training
    model.eval()  # no dropout while scoring
    try:
        with torch.inference_mode():
            for rows in batches:
                batch = make_batch(encoded, rows, pad_id, device)
                with autocast(device):
                    scores[rows] = combine(batch).float().cpu().numpy()
                if tracker is not None:
                    tracker.advance("score", len(rows))
    finally:
        model.train(was_training)
    return scores


def paired_combine(surrogate: Surrogate, task: str, score_fn: str) -> Combine:
    """ToV with two adapters: phi = mean_t F(log p_val - log p_base) for each row of a batch."""
    f = SCORE_FUNCTIONS[score_fn]

    def combine(batch: Batch) -> torch.Tensor:
        surrogate.use("base")
        before = token_logprobs(surrogate.model, batch, task)
        surrogate.use("val")
        after = token_logprobs(surrogate.model, batch, task)
        return row_means(f(after.values - before.values), after)[0]

    return combine


class TokenStore:
    """Per-token log-probs of chosen rows, kept between the two passes of full fine-tuning."""

    def __init__(self, encoded: EncodedSet) -> None:
        lengths = encoded.loss_lengths.astype(np.int64)
        self.offsets = np.concatenate([[0], np.cumsum(lengths)])
        self.values = np.zeros(int(self.offsets[-1]), dtype=np.float32)

    def put(self, batch: Batch, lp: TokenLogprobs) -> None:
        """Store the batch's values, row by row (positions of a row are contiguous)."""
        flat = lp.values.float().cpu().numpy()
        counts = torch.bincount(lp.row, minlength=lp.rows).cpu().numpy()
        start = 0
        for r, c in zip(batch.rows, counts, strict=True):
            self.values[self.offsets[r] : self.offsets[r] + c] = flat[start : start + c]
            start += c

    def get(self, batch: Batch, device: torch.device) -> torch.Tensor:
        """The stored values of the batch's rows, concatenated in batch order."""
        parts = [self.values[self.offsets[r] : self.offsets[r + 1]] for r in batch.rows]
        return torch.from_numpy(np.concatenate(parts)).to(device)


def storing_combine(model: nn.Module, task: str, store: TokenStore) -> Combine:
    """First pass of full fine-tuning: store log p under the current (base) weights."""

    def combine(batch: Batch) -> torch.Tensor:
        lp = token_logprobs(model, batch, task)
        store.put(batch, lp)
        return row_means(lp.values, lp)[0]

    return combine


def stored_combine(model: nn.Module, task: str, store: TokenStore, score_fn: str) -> Combine:
    """Second pass of full fine-tuning: phi from the live (val) weights against the store."""
    f = SCORE_FUNCTIONS[score_fn]

    def combine(batch: Batch) -> torch.Tensor:
        after = token_logprobs(model, batch, task)
        before = store.get(batch, after.values.device)
        return row_means(f(after.values - before), after)[0]

    return combine


def uncertainty_combine(model: nn.Module, task: str) -> Combine:
    """psi = mean_t log[p_t (1 - p_t)] of the gold tokens (max-uncertainty baseline)."""

    def combine(batch: Batch) -> torch.Tensor:
        lp = token_logprobs(model, batch, task)
        # log(1 - p) = log(-expm1(log p)); clamp keeps p = 1 finite instead of -inf.
        log_q = torch.log(-torch.expm1(lp.values.clamp(max=-1e-7)))
        return row_means(lp.values + log_q, lp)[0]

    return combine
