"""Per-token log-probabilities of the gold labels, the one forward computation everything uses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tov_engine.data.batching import Batch
from tov_engine.data.encoded import IGNORE
from tov_engine.model.head import full_values, shortcut_ok, shortcut_values

HEAD_CHUNK = 2048  # loss positions per output-head call: bounds the (M, V) logits held at once


@dataclass(frozen=True)
class TokenLogprobs:
    """Gold log-probs of the loss-bearing positions of a batch, in row-major order."""

    values: torch.Tensor  # (M,) float32
    row: torch.Tensor  # (M,) long, batch row of each position
    rows: int  # B


def _unwrap(model: nn.Module) -> Any:
    # A peft model keeps the transformers model at .base_model.model; LoRA layers live inside it.
    inner = getattr(getattr(model, "base_model", None), "model", None)
    return inner if hasattr(model, "peft_config") and inner is not None else model


def _causal(model: nn.Module, batch: Batch) -> TokenLogprobs:
    hf = _unwrap(model)
    targets = batch.labels[:, 1:]  # (B, T-1): token t is predicted at position t-1
    where = (targets != IGNORE).nonzero(as_tuple=True)
    ids, mask = batch.input_ids, batch.attention_mask
    if shortcut_ok(model, hf, ids, mask, targets, IGNORE, HEAD_CHUNK):
        # Run only the loss-bearing positions through the head: prompts and padding cost nothing.
        values = shortcut_values(hf, ids, mask, where, targets, HEAD_CHUNK)
    else:
        values = full_values(model, ids, mask, where, targets, HEAD_CHUNK)
    return TokenLogprobs(values=values, row=where[0], rows=len(batch.rows))


def _tagged(model: nn.Module, batch: Batch) -> TokenLogprobs:
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
    where = (batch.labels != IGNORE).nonzero(as_tuple=True)
    values = -F.cross_entropy(logits[where].float(), batch.labels[where], reduction="none")
    return TokenLogprobs(values=values, row=where[0], rows=len(batch.rows))


def token_logprobs(model: nn.Module, batch: Batch, task: str) -> TokenLogprobs:
    """log p(gold) at every loss-bearing position of the batch under the model's active weights.

    Args:
        model: a causal LM or token classifier (optionally peft-wrapped). batch: padded rows.
        task: "causal_lm" or "token_classification".
    Returns:
        TokenLogprobs; differentiable unless called under inference_mode.
    """
    return _causal(model, batch) if task == "causal_lm" else _tagged(model, batch)


def _row_sums(values: torch.Tensor, lp: TokenLogprobs) -> torch.Tensor:
    """(B,) per-row sums of (M,) values, in a fixed order on every device.

    index_add accumulates with atomics on CUDA (a different order each run); on CPU it is
    sequential, so the CPU keeps it (unchanged numerics) and other devices use ordered_row_sums."""
    if values.device.type == "cpu":
        zeros = torch.zeros(lp.rows, dtype=values.dtype, device=values.device)
        return zeros.index_add(0, lp.row, values)
    return ordered_row_sums(values, lp)


def ordered_row_sums(values: torch.Tensor, lp: TokenLogprobs) -> torch.Tensor:
    """Per-row sums through a one-hot (B, M) matmul: the same result on every run of a GPU
    (B x M floats, a few MB at the batch sizes used)."""
    rows = torch.arange(lp.rows, device=values.device)
    onehot = (rows.unsqueeze(1) == lp.row.unsqueeze(0)).to(values.dtype)  # (B, M)
    with torch.autocast(values.device.type, enabled=False):  # sums stay in the values' dtype
        return onehot @ values


def row_means(values: torch.Tensor, lp: TokenLogprobs) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row means of per-position `values`, and the per-row position counts.

    Returns:
        (means (B,), counts (B,)); a row with no positions has mean NaN.
    """
    sums = _row_sums(values, lp)
    counts = torch.bincount(lp.row, minlength=lp.rows).to(values.dtype)
    return sums / counts, counts


def row_weighted_sums(
    values: torch.Tensor, lp: TokenLogprobs, weights: torch.Tensor
) -> torch.Tensor:
    """Per-row sums of `weights * values` over the row's positions (token-classification scores).

    Args:
        values: (M,) per position. lp: their positions. weights: (M,) per position.
    Returns:
        (B,) sums; a row with no positions is NaN (never picked by score), as with row_means.
    """
    sums = _row_sums(values * weights.to(values.dtype), lp)
    counts = torch.bincount(lp.row, minlength=lp.rows)
    return torch.where(counts > 0, sums, torch.full_like(sums, float("nan")))


def mean_loss(lp: TokenLogprobs) -> torch.Tensor | None:
    """Training loss: mean over rows of each row's mean NLL; None if no row carries loss."""
    means, counts = row_means(-lp.values, lp)
    keep = counts > 0
    return means[keep].mean() if bool(keep.any()) else None


def loss_rows(batch: Batch, task: str) -> int:
    """Rows of the batch with at least one loss-bearing position (those `mean_loss` averages)."""
    labels = batch.labels[:, 1:] if task == "causal_lm" else batch.labels
    return int((labels != IGNORE).any(dim=1).sum())


def share_of_loss(lp: TokenLogprobs, rows: int) -> torch.Tensor | None:
    """A micro-batch's share of its batch's training loss: the sum of its rows' mean NLLs over
    the `rows` rows with loss in the whole batch (the shares add up to the batch's mean_loss,
    and so do their gradients); None if no row of the micro-batch carries loss."""
    means, counts = row_means(-lp.values, lp)
    keep = counts > 0
    return means[keep].sum() / rows if bool(keep.any()) else None
