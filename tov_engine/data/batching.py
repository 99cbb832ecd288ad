"""Turning rows of an EncodedSet into padded tensors, and planning length-bucketed batches."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from tov_engine.data.encoded import IGNORE, EncodedSet


@dataclass(frozen=True)
class Batch:
    """Right-padded rows; `rows` are their indices in the EncodedSet."""

    rows: np.ndarray  # (B,) int64
    input_ids: torch.Tensor  # (B, T) long
    attention_mask: torch.Tensor  # (B, T) long
    labels: torch.Tensor  # (B, T) long, IGNORE on padding and non-loss positions


def make_batch(
    encoded: EncodedSet, rows: Sequence[int] | np.ndarray, pad_id: int, device: torch.device
) -> Batch:
    """Pad the given rows to their longest and move them to `device`.

    Args:
        encoded: the tokenised set. rows: indices into it. pad_id: the pad token id.
        device: where the tensors go.
    Returns:
        A Batch.
    """
    rows = np.asarray(rows, dtype=np.int64)
    width = max(1, int(encoded.seq_lengths[rows].max())) if len(rows) else 1
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)  # (B, T)
    labels = np.full((len(rows), width), IGNORE, dtype=np.int64)  # (B, T)
    mask = np.zeros((len(rows), width), dtype=np.int64)  # (B, T)
    for k, r in enumerate(rows):
        row_ids, row_labels = encoded.row(int(r))
        ids[k, : len(row_ids)] = row_ids
        labels[k, : len(row_ids)] = row_labels
        mask[k, : len(row_ids)] = 1
    return Batch(
        rows=rows,
        input_ids=torch.from_numpy(ids).to(device),
        attention_mask=torch.from_numpy(mask).to(device),
        labels=torch.from_numpy(labels).to(device),
    )


MAX_BATCH_WASTE = 0.08  # cut a batch early rather than pad it by more than this
MIN_BATCH_ROWS = 4  # ...but not below this many rows, so long tails do not run one by one


def plan_buckets(lengths: np.ndarray, rows: np.ndarray, tokens_per_batch: int) -> list[np.ndarray]:
    """Group rows of similar length so each padded batch holds at most `tokens_per_batch` tokens.

    Rows are sorted by length (ties by index) and cut greedily: when the next row would break the
    token budget, or would pad the batch by more than MAX_BATCH_WASTE once it holds
    MIN_BATCH_ROWS rows. A row longer than the budget gets a batch of its own. The order is
    deterministic, so scores do not depend on batch composition beyond floating-point noise.

    Args:
        lengths: (N,) tokens per row of the whole set. rows: the rows to batch.
        tokens_per_batch: padded-token budget of one batch.
    Returns:
        A list of row-index arrays.
    """
    rows = np.asarray(rows, dtype=np.int64)
    order = rows[np.lexsort((rows, lengths[rows]))]
    batches: list[np.ndarray] = []
    start, real = 0, 0
    for end in range(len(order)):
        width = int(lengths[order[end]])  # sorted ascending: the new row sets the batch width
        count = end - start + 1
        over_budget = count * width > tokens_per_batch
        wasteful = count > MIN_BATCH_ROWS and real + width < (1 - MAX_BATCH_WASTE) * count * width
        if end > start and (over_budget or wasteful):
            batches.append(order[start:end])
            start, real = end, 0
        real += width
    if start < len(order):
        batches.append(order[start:])
    return batches


def padding_waste(lengths: np.ndarray, batches: list[np.ndarray]) -> float:
    """Fraction of padded batch tokens that are padding."""
    padded = sum(len(b) * int(lengths[b].max()) for b in batches if len(b))
    real = sum(int(lengths[b].sum()) for b in batches)
    return 0.0 if padded == 0 else 1.0 - real / padded


def training_batches(order: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Consecutive slices of a (shuffled) row order; the last may be short."""
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
