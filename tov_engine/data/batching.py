"""Turning rows of an EncodedSet into padded tensors, and planning length-bucketed batches."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from tov_engine.data.encoded import IGNORE, EncodedSet
from tov_plan.rules import MAX_BATCH_WASTE, MIN_BATCH_ROWS, plan_buckets  # one rule, also planned

__all__ = ["MAX_BATCH_WASTE", "MIN_BATCH_ROWS", "Batch", "make_batch", "plan_buckets"]


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


def padding_waste(lengths: np.ndarray, batches: list[np.ndarray]) -> float:
    """Fraction of padded batch tokens that are padding."""
    padded = sum(len(b) * int(lengths[b].max()) for b in batches if len(b))
    real = sum(int(lengths[b].sum()) for b in batches)
    return 0.0 if padded == 0 else 1.0 - real / padded


def training_batches(order: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Consecutive slices of a (shuffled) row order; the last may be short."""
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
