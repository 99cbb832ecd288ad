"""Per-token log-probabilities of the gold labels, the one forward computation everything uses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tov_engine.data.batching import Batch
from tov_engine.data.encoded import IGNORE

HEAD_CHUNK = 2048  # loss positions per output-head call: bounds the (M, V) logits held at once


@dataclass(frozen=True)
class TokenLogprobs:
    """Gold log-probs of the loss-bearing positions of a batch, in row-major order."""

    values: torch.Tensor  # (M,) float32
    row: torch.Tensor  # (M,) long, batch row of each position
    rows: int  # B


def _plain_head(model: Any) -> bool:
    # The hidden-state shortcut is exact only when logits = head(hidden), with no soft-capping or
    # scaling applied after the head; otherwise fall back to the model's own forward.
    config = getattr(model, "config", None)
    extras = ("final_logit_softcapping", "logit_scale", "output_multiplier_scale")
    return config is not None and all(getattr(config, name, None) in (None, 1.0) for name in extras)


def _unwrap(model: nn.Module) -> Any:
    # A peft model keeps the transformers model at .base_model.model; LoRA layers live inside it.
    inner = getattr(getattr(model, "base_model", None), "model", None)
    return inner if hasattr(model, "peft_config") and inner is not None else model


def _causal(model: nn.Module, batch: Batch) -> TokenLogprobs:
    hf = _unwrap(model)
    targets = batch.labels[:, 1:]  # (B, T-1): token t is predicted at position t-1
    where = (targets != IGNORE).nonzero(as_tuple=True)
    if _plain_head(hf):
        # Run only the loss-bearing positions through the head: prompts and padding cost nothing.
        hidden = hf.base_model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask
        ).last_hidden_state[:, :-1]  # (B, T-1, H)
        picked = hidden[where]  # (M, H)
        gold = targets[where]  # (M,)
        head = hf.get_output_embeddings()
        parts = [
            -F.cross_entropy(
                head(picked[i : i + HEAD_CHUNK]).float(), gold[i : i + HEAD_CHUNK], reduction="none"
            )
            for i in range(0, len(gold), HEAD_CHUNK)
        ]
        values = torch.cat(parts) if parts else picked.new_zeros(0)
    else:
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        values = -F.cross_entropy(logits[:, :-1][where].float(), targets[where], reduction="none")
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


def row_means(values: torch.Tensor, lp: TokenLogprobs) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row means of per-position `values`, and the per-row position counts.

    Returns:
        (means (B,), counts (B,)); a row with no positions has mean NaN.
    """
    sums = torch.zeros(lp.rows, dtype=values.dtype, device=values.device)
    sums = sums.index_add(0, lp.row, values)
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
    sums = torch.zeros(lp.rows, dtype=values.dtype, device=values.device)
    sums = sums.index_add(0, lp.row, values * weights.to(values.dtype))
    counts = torch.bincount(lp.row, minlength=lp.rows)
    return torch.where(counts > 0, sums, torch.full_like(sums, float("nan")))


def mean_loss(lp: TokenLogprobs) -> torch.Tensor | None:
    """Training loss: mean over rows of each row's mean NLL; None if no row carries loss."""
    means, counts = row_means(-lp.values, lp)
    keep = counts > 0
    return means[keep].mean() if bool(keep.any()) else None
