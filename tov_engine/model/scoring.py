"""Score passes over the pool: length-bucketed batches under inference_mode.

ToV scores R in two passes per round: the "before" pass (theta_bas) stores the per-token log-probs
of the rows in a TokenStore (4 bytes a loss token, in RAM or in the pool cache), the "after" pass
(theta_val) combines. With LoRA each pass runs one adapter folded into the weights (merged.py).

Row reduction: a causal-LM row's phi is the mean of F(Delta_t) over its loss tokens (the paper's).
A token-classification row's phi is, by default, a class-balanced sum (`TAGGED_REDUCTION`,
`label_weights`): sum_t F(Delta_t) * M / (K * N_c(t)), N_c the pool's loss tokens of gold label c,
K the labels present, M the pool's loss tokens. It is the row's share of the change in the pool's
macro-averaged (per-label) log-likelihood; a plain mean lets the majority tag ("O") drown the
one or two entity tokens that make a row relevant (docs/engine.md, benchmarks/quality).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from tov_engine.data.batching import Batch, make_batch
from tov_engine.data.encoded import IGNORE, EncodedSet
from tov_engine.model.logprob import TokenLogprobs, row_means, row_weighted_sums, token_logprobs
from tov_engine.model.precision import compute
from tov_engine.model.surrogate import Surrogate
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

# How a token-classification row's ToV score reduces its per-token values: "class_balanced"
# (default; see the module docstring) or "mean" (the paper's per-row mean, as for causal LMs).
TAGGED_REDUCTIONS = ("class_balanced", "mean")
TAGGED_REDUCTION = "class_balanced"
LABEL_CHUNK = 1 << 24  # label positions read at a time when counting the pool's labels


def label_weights(encoded: EncodedSet) -> np.ndarray:
    """Class-balanced weight of each gold label over the loss positions of the whole pool.

    w_c = M / (K * N_c): N_c loss positions with label c, K labels with N_c > 0, M = sum N_c; 0
    for labels that never occur. Counted on the whole pool (not only the scored rows), so every
    scoring plan or shard of one pool gets the same weights. With balanced labels every w_c = 1.

    Returns:
        (max label + 1,) float32; empty when the pool has no loss position.
    """
    labels = encoded.labels
    counts = np.zeros(0, dtype=np.int64)
    for a in range(0, len(labels), LABEL_CHUNK):
        chunk = np.asarray(labels[a : a + LABEL_CHUNK])
        chunk = chunk[chunk >= 0]
        if len(chunk):
            part = np.bincount(chunk)
            if len(part) > len(counts):
                part[: len(counts)] += counts
                counts = part
            else:
                counts[: len(part)] += part
    present = counts > 0
    weights = np.zeros(len(counts), dtype=np.float64)
    if present.any():
        weights[present] = counts.sum() / (int(present.sum()) * counts[present])
    return weights.astype(np.float32)


def run_pass(
    model: nn.Module,
    encoded: EncodedSet,
    batches: list[np.ndarray],
    combine: Combine,
    *,
    pad_id: int,
    tracker: Tracker | None = None,
    units: Callable[[int], int] | None = None,
) -> np.ndarray:
    """Evaluate `combine` on every batch and gather the row scores.

    Args:
        model: the model (for its device; put in eval mode here). encoded: tokenised rows.
        batches: row-index arrays (plan_buckets). combine: batch -> (B,) scores.
        pad_id: pad token. tracker: progress under stage "score".
        units: progress units of a batch of n rows (default n).
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
                with compute(model):
                    scores[rows] = combine(batch).float().cpu().numpy()
                if tracker is not None:
                    tracker.advance("score", units(len(rows)) if units else len(rows))
    finally:
        model.train(was_training)
    return scores


def paired_combine(surrogate: Surrogate, task: str, score_fn: str) -> Combine:
    """phi per row from both adapters within each batch (unmerged LoRA, per-batch switching).

    The engine scores with tov._score_round instead (two folded passes, merged.py); this form
    stays as a reference for tests and benchmarks. It always takes the per-row mean (the
    class-balanced token-classification reduction needs the pool: stored_combine).
    """
    f = SCORE_FUNCTIONS[score_fn]

    def combine(batch: Batch) -> torch.Tensor:
        surrogate.use("base")
        before = token_logprobs(surrogate.model, batch, task)
        surrogate.use("val")
        after = token_logprobs(surrogate.model, batch, task)
        return row_means(f(after.values - before.values), after)[0]

    return combine


def _tagged_reducer(
    task: str, encoded: EncodedSet, reduction: str | None
) -> Callable[[torch.Tensor, TokenLogprobs, Batch], torch.Tensor]:
    """values, positions, batch -> (B,) row scores: the class-balanced sum or the plain mean."""
    how = TAGGED_REDUCTION if reduction is None else reduction
    if how not in TAGGED_REDUCTIONS:
        raise ValueError(f"reduction must be one of {TAGGED_REDUCTIONS}, got {how!r}")
    if task != "token_classification" or how == "mean":
        return lambda values, lp, batch: row_means(values, lp)[0]
    table = torch.from_numpy(label_weights(encoded))

    def reduce(values: torch.Tensor, lp: TokenLogprobs, batch: Batch) -> torch.Tensor:
        gold = batch.labels[batch.labels != IGNORE]  # the order of token_logprobs (row-major)
        return row_weighted_sums(values, lp, table.to(values.device)[gold])

    return reduce


class TokenStore:
    """Per-token log-probs of the scored rows, laid out in scoring-batch order.

    Each batch of the plan owns one contiguous span (its rows' loss positions, row-major, exactly
    as `token_logprobs` returns them), so storing and reading a batch is one slice. `values` may be
    a file-backed array (the pool cache writes the base log-probs straight to disk).

    Args:
        encoded: the tokenised rows. batches: the scoring plan (plan_buckets), the same in every
            pass that uses the store. values: (size,) float32 storage, else a new zero array.
    """

    def __init__(
        self, encoded: EncodedSet, batches: list[np.ndarray], values: np.ndarray | None = None
    ) -> None:
        loss_lengths = encoded.loss_lengths.astype(np.int64)
        counts = np.array([int(loss_lengths[b].sum()) for b in batches], dtype=np.int64)
        ends = np.cumsum(counts)
        self.spans = {
            int(b[0]): (int(e - c), int(e)) for b, c, e in zip(batches, counts, ends, strict=True)
        }
        self.encoded = encoded
        self.size = int(ends[-1]) if len(ends) else 0
        self.values = np.zeros(self.size, dtype=np.float32) if values is None else values
        if self.values.shape != (self.size,):
            raise ValueError(f"token store of {self.values.shape}, the plan needs {self.size}")

    @staticmethod
    def size_for(encoded: EncodedSet, batches: list[np.ndarray]) -> int:
        """Values a store for this plan holds (loss tokens of the planned rows)."""
        rows = np.concatenate(batches) if batches else np.zeros(0, dtype=np.int64)
        return int(encoded.loss_lengths[rows].astype(np.int64).sum())

    def _span(self, batch: Batch, count: int | None = None) -> tuple[int, int]:
        start, end = self.spans[int(batch.rows[0])]
        if count is not None and count != end - start:
            raise ValueError(f"batch has {count} loss tokens, its span holds {end - start}")
        return start, end

    def put(self, batch: Batch, lp: TokenLogprobs) -> None:
        """Store the batch's values in its span."""
        flat = lp.values.float().cpu().numpy()
        start, end = self._span(batch, len(flat))
        self.values[start:end] = flat

    def get(self, batch: Batch, device: torch.device) -> torch.Tensor:
        """The stored values of the batch, in `token_logprobs` order."""
        start, end = self._span(batch)
        return torch.from_numpy(np.array(self.values[start:end], dtype=np.float32)).to(device)


def storing_combine(model: nn.Module, task: str, store: TokenStore) -> Combine:
    """First pass of full fine-tuning: store log p under the current (base) weights."""

    def combine(batch: Batch) -> torch.Tensor:
        lp = token_logprobs(model, batch, task)
        store.put(batch, lp)
        return row_means(lp.values, lp)[0]

    return combine


class RowLosses:
    """Each scored row's mean loss per loss token (-mean log p of its gold tokens) before
    (theta_bas, the stored log-probs) and after (theta_val); NaN for rows not scored."""

    def __init__(self, size: int) -> None:
        self.before = np.full(size, np.nan, dtype=np.float32)
        self.after = np.full(size, np.nan, dtype=np.float32)

    def record(self, rows: np.ndarray, before: torch.Tensor, after: torch.Tensor) -> None:
        """Keep a batch's per-row mean log-probs (before, after) as losses."""
        self.before[rows] = -before.float().cpu().numpy()
        self.after[rows] = -after.float().cpu().numpy()


def stored_combine(
    model: nn.Module,
    task: str,
    store: TokenStore,
    score_fn: str,
    reduction: str | None = None,
    losses: RowLosses | None = None,
) -> Combine:
    """Second pass: phi from the live (val) weights against the stored base log-probs.

    Args:
        reduction: token classification only: "class_balanced" or "mean"; None =
            TAGGED_REDUCTION. Causal LMs always take the per-row mean.
        losses: where to keep each row's mean loss before and after (explanations), if given.
    """
    f = SCORE_FUNCTIONS[score_fn]
    reduce = _tagged_reducer(task, store.encoded, reduction)

    def combine(batch: Batch) -> torch.Tensor:
        after = token_logprobs(model, batch, task)
        before = store.get(batch, after.values.device)
        if losses is not None:
            losses.record(
                batch.rows, row_means(before, after)[0], row_means(after.values, after)[0]
            )
        return reduce(f(after.values - before), after, batch)

    return combine


def uncertainty_combine(model: nn.Module, task: str) -> Combine:
    """psi = mean_t log[p_t (1 - p_t)] of the gold tokens (max-uncertainty baseline)."""

    def combine(batch: Batch) -> torch.Tensor:
        lp = token_logprobs(model, batch, task)
        # log(1 - p) = log(-expm1(log p)); clamp keeps p = 1 finite instead of -inf.
        log_q = torch.log(-torch.expm1(lp.values.clamp(max=-1e-7)))
        return row_means(lp.values + log_q, lp)[0]

    return combine
