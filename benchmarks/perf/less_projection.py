"""LESS's random projection: seconds per pool row, the former dense Rademacher matrix (generated
in seeded blocks, one generation per gathering of up to 1 GiB of gradients) against the sparse JL
transform the engine uses now (tov_engine.methods.less.gradients.Projector), in the same run.

The projection is SmolLM2-135M's at the CLI defaults (LoRA rank 8 on every linear layer,
P = 2,442,240, d = 8192). To stay short the dense projection is timed on its first BLOCKS blocks
and scaled to the whole projection (its cost is linear in the blocks); the sparse one is timed
whole. Both are checked to keep the cosines of correlated random vectors (mean absolute error).

Run: .venv/bin/python -m benchmarks.perf.less_projection
"""

from __future__ import annotations

import json
import math
import time

import torch

from tov_engine.methods.less.gradients import GRADIENT_BUFFER, Projector

# SmolLM2-135M: 30 layers, hidden 576, intermediate 1536, 3 KV heads of 64; LoRA rank 8 adds
# 8 * (in + out) weights to each of q, k, v, o, gate, up and down.
LAYER = 8 * ((576 + 576) * 2 + (576 + 192) * 2 + (576 + 1536) * 3)
P, D, BLOCKS = 30 * LAYER, 8192, 12
DENSE_BLOCK = (1 << 25) // D  # rows of the dense matrix generated at once (the former layout)
GATHERED = (1 << 30) // (4 * P)  # rows the former code projected per generation (1 GiB)


class Dense:
    """The former projection: a Rademacher (+-1/sqrt(d)) matrix generated in seeded blocks."""

    def __init__(self, p: int, d: int, seed: int) -> None:
        self.p, self.d, self.seed = p, d, seed

    def _matrix(self, start: int, stop: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + start)
        signs = torch.randint(0, 2, (stop - start, self.d), generator=gen, dtype=torch.int8)
        scale = torch.ones(()).div_(math.sqrt(self.d))
        return torch.where(signs.view(torch.bool), scale, -scale)

    def __call__(self, grads: torch.Tensor) -> torch.Tensor:
        out = grads.new_zeros(len(grads), self.d)
        for start in range(0, self.p, DENSE_BLOCK):
            stop = min(self.p, start + DENSE_BLOCK)
            out += grads[:, start:stop] @ self._matrix(start, stop)
        return out


def _cosine_error(project: Dense | Projector, p: int, rows: int) -> float:
    """Mean |projected cosine - exact cosine| over rows correlated with one target vector."""
    gen = torch.Generator().manual_seed(1)
    target = torch.randn(p, generator=gen)
    target /= target.norm()
    exact = torch.linspace(-0.9, 0.9, rows)
    noise = torch.randn(rows, p, generator=gen)
    noise -= (noise @ target).unsqueeze(1) * target
    noise /= noise.norm(dim=1, keepdim=True)
    vecs = exact.unsqueeze(1) * target + (1 - exact**2).sqrt().unsqueeze(1) * noise
    out = project(torch.cat([target.unsqueeze(0), vecs]))
    cos = torch.nn.functional.cosine_similarity(out[1:], out[:1])
    return float((cos - exact).abs().mean())


def main() -> None:
    torch.set_num_threads(2)
    gen = torch.Generator().manual_seed(0)
    part = BLOCKS * DENSE_BLOCK
    grads = torch.randn(GATHERED, part, generator=gen)
    dense = Dense(part, D, seed=0)
    start = time.perf_counter()
    dense(grads)
    before = (time.perf_counter() - start) / GATHERED * (P / part)
    sparse = Projector(P, D, seed=0, device=torch.device("cpu"))
    rows = torch.randn(GRADIENT_BUFFER, P, generator=gen)
    start = time.perf_counter()
    sparse(rows)
    after = (time.perf_counter() - start) / GRADIENT_BUFFER
    # Cosine error at d = 8192 on correlated vectors (the dense one over the timed part only).
    print(
        json.dumps(
            {
                "lora_params": P,
                "projection_dim": D,
                "dense_rows_per_generation": GATHERED,
                "sparse_rows_per_call": GRADIENT_BUFFER,
                "seconds_per_row_dense_before": round(before, 3),
                "seconds_per_row_sparse_after": round(after, 4),
                "speedup": round(before / after, 1),
                "mean_cosine_error_dense": round(_cosine_error(Dense(part, D, 3), part, 32), 4),
                "mean_cosine_error_sparse": round(_cosine_error(sparse, P, 32), 4),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
