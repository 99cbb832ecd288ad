"""LESS gradient features: per-example LoRA gradients, Adam preconditioning, sparse random
projection."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from tov_engine.data.batching import make_batch, plan_buckets
from tov_engine.data.encoded import EncodedSet
from tov_engine.job import Job
from tov_engine.model.logprob import mean_loss, row_means, token_logprobs
from tov_engine.model.precision import compute

logger = logging.getLogger(__name__)

ADAM_BETAS = (0.9, 0.999)  # torch AdamW defaults, used by the warmup and the preconditioning
ADAM_EPS = 1e-8
GRADIENT_BUFFER = 16  # rows per gradient batch, projected at once (bounds memory to 16 x P floats)
SPARSITY = 4  # sparse JL: buckets (one per block of d / SPARSITY) each coordinate is added to
PROJECTION = "sparse-jl-block-v1"  # the projection's kind and layout (part of the checkpoint key)


@dataclass(frozen=True)
class Checkpoint:
    """One warmup epoch's end state."""

    weights: dict[str, torch.Tensor]
    exp_avg: torch.Tensor  # (P,) Adam first moments, flattened in parameter order
    exp_avg_sq: torch.Tensor  # (P,) Adam second moments
    mean_lr: float  # mean LR over the epoch's steps


class Projector:
    """A sparse Johnson-Lindenstrauss projection from P to d dimensions (Kane & Nelson 2014, the
    block construction): d is split into s blocks; each coordinate goes to one bucket of every block
    with a random sign, scaled by 1/sqrt(s), so inner products are preserved in expectation with
    the variance of a dense Gaussian or Rademacher projection (about (<x,y>^2 + |x|^2 |y|^2) / d).

    Within a block the buckets are filled evenly: a seeded random permutation of the coordinates
    (padded to a multiple of the block width) is laid out row by row over the block's buckets.
    Projecting a row costs O(s P), not O(P d) as a dense matrix would; the layout is drawn once per
    job on the CPU from `seed` (the same values on every device) and involves no atomic adds, so
    it is deterministic everywhere.
    """

    def __init__(
        self, p: int, d: int, seed: int, device: torch.device, sparsity: int = SPARSITY
    ) -> None:
        if d < 1 or p < 1:
            raise ValueError(f"a projection needs p >= 1 and d >= 1 (got p={p}, d={d})")
        self.p, self.d, self.seed, self.device = p, d, seed, device
        self.s = max(1, min(sparsity, d))
        widths = [len(part) for part in np.array_split(np.arange(d), self.s)]
        gen = torch.Generator().manual_seed(seed * 1_000_003 + 17)
        # Per block: the coordinate feeding each slot (slot j -> bucket j % width), and the signed
        # weight of that slot (0 for padding slots, which read coordinate 0).
        self.blocks: list[tuple[int, torch.Tensor, torch.Tensor]] = []
        for width in widths:
            slots = -(-p // width) * width
            order = torch.randperm(slots, generator=gen)
            signs = torch.randint(0, 2, (slots,), generator=gen, dtype=torch.int8)
            weight = (signs.float() * 2 - 1) / math.sqrt(self.s)
            weight[order >= p] = 0.0
            take = torch.where(order < p, order, torch.zeros_like(order)).to(torch.int32)
            self.blocks.append((width, take.to(device), weight.to(device)))

    def __call__(self, grads: torch.Tensor) -> torch.Tensor:
        """(B, P) -> (B, d)."""
        if grads.shape[-1] != self.p:
            raise ValueError(f"expected vectors of {self.p} values, got shape {tuple(grads.shape)}")
        parts = [
            (grads.index_select(1, take) * weight).view(len(grads), -1, width).sum(dim=1)
            for width, take, weight in self.blocks
        ]
        return torch.cat(parts, dim=1)


def example_gradient(
    model: nn.Module, params: list[nn.Parameter], job: Job, enc: EncodedSet, row: int
) -> torch.Tensor | None:
    """One row's flattened gradient (the reference path; batch_gradients computes the same)."""
    device = params[0].device
    batch = make_batch(enc, [row], int(job.tokenizer.pad_token_id), device)
    with compute(model):
        loss = mean_loss(token_logprobs(model, batch, job.config.task))
    if loss is None:
        return None
    grads = torch.autograd.grad(loss, params)
    return torch.cat([g.reshape(-1).float() for g in grads])  # (P,)


def adam_direction(g: torch.Tensor, ck: Checkpoint) -> torch.Tensor:
    # The update Adam would take from this checkpoint's moments (as in LESS's implementation).
    m = ADAM_BETAS[0] * ck.exp_avg + (1 - ADAM_BETAS[0]) * g
    v = ADAM_BETAS[1] * ck.exp_avg_sq + (1 - ADAM_BETAS[1]) * g * g
    return m / (v.sqrt() + ADAM_EPS)


def linear_owners(model: nn.Module, params: list[nn.Parameter]) -> dict[int, nn.Linear] | None:
    """The nn.Linear owning each trainable parameter (LoRA A/B, a classifier head), or None when
    some parameter is not a Linear weight or bias (then gradients are taken one row at a time)."""
    wanted = {id(p) for p in params}
    owners: dict[int, nn.Linear] = {}
    for module in model.modules():
        if isinstance(module, nn.Linear):
            for p in (module.weight, module.bias):
                if p is not None and id(p) in wanted:
                    owners[id(p)] = module
    return owners if len(owners) == len(wanted) else None


def batch_gradients(
    model: nn.Module,
    params: list[nn.Parameter],
    owners: dict[int, nn.Linear],
    batch: Any,
    task: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row gradients of a batch from one forward and backward pass.

    The batch loss is the sum of the rows' mean losses, so each row's gradient is separable: for a
    Linear y = x W^T + b, row i's gradient is sum_t g_it x_it^T (and sum_t g_it for b), from the
    layer inputs x and output gradients g caught by hooks. Padding positions get zero gradient
    (no loss position depends on them), so the result equals one backward per row.

    Returns:
        ((B, P) float32 gradients in `params` order, (B,) bool: rows that carry loss).
    """
    modules = {id(m): m for m in owners.values()}
    inputs: dict[int, torch.Tensor] = {}
    grads: dict[int, torch.Tensor] = {}
    handles = []

    def forward_hook(module: nn.Module, args: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        key = id(module)
        inputs[key] = args[0].detach()

        def keep(g: torch.Tensor) -> None:
            grads[key] = g.detach()

        out.register_hook(keep)

    for m in modules.values():
        handles.append(m.register_forward_hook(forward_hook))
    try:
        lp = token_logprobs(model, batch, task)
        means, counts = row_means(-lp.values, lp)
        has_loss = counts > 0
        if not bool(has_loss.any()):
            rows = len(batch.rows)
            return torch.zeros(rows, sum(p.numel() for p in params)), has_loss.cpu()
        means[has_loss].sum().backward()
    finally:
        for h in handles:
            h.remove()
    parts = []
    for p in params:
        m = owners[id(p)]
        x, g = inputs[id(m)].float(), grads[id(m)].float()  # (B, T, in), (B, T, out)
        if x.dim() == 2:  # an unbatched call cannot happen with padded batches; be safe
            x, g = x.unsqueeze(1), g.unsqueeze(1)
        if p is m.weight:
            parts.append(torch.einsum("bto,bti->boi", g, x).reshape(len(g), -1))
        else:
            parts.append(g.sum(dim=1))
    for p in params:
        p.grad = None
    return torch.cat(parts, dim=1), has_loss.cpu()  # (B, P)


def gradient_batches(enc: EncodedSet) -> list[np.ndarray]:
    """The rows of `enc` in gradient batches of up to GRADIENT_BUFFER rows, length-bucketed."""
    tokens = max(1, int(enc.seq_lengths.max(initial=1))) * GRADIENT_BUFFER
    out: list[np.ndarray] = []
    for rows in plan_buckets(enc.seq_lengths, np.arange(len(enc)), tokens):
        out.extend(rows[i : i + GRADIENT_BUFFER] for i in range(0, len(rows), GRADIENT_BUFFER))
    return out
