"""LESS's random projection: seconds per pool row, one projection per 16-row gradient batch
(before issue 14) against one per gathering of up to PROJECTION_BYTES of gradients (after).

The projection is SmolLM2-135M's at the CLI defaults (LoRA rank 8 on every linear layer,
d = 8192); generating its blocks costs more than multiplying by them, so the cost per row falls
with the rows that share a generated block. To stay short the script times the first BLOCKS
blocks and scales to the whole projection (the cost is linear in the blocks). The projected values
are the same both ways (checked). Before: the former block generation, one projection per
16-row batch; after: the one-pass generation and one projection per gathering.

Run: .venv/bin/python -m benchmarks.perf.less_projection
"""

from __future__ import annotations

import json
import math
import time

import torch

from tov_engine.methods.less.features import PROJECTION_BYTES
from tov_engine.methods.less.gradients import CACHED_PROJECTION, GRADIENT_BUFFER, Projector

# SmolLM2-135M: 30 layers, hidden 576, intermediate 1536, 3 KV heads of 64; LoRA rank 8 adds
# 8 * (in + out) weights to each of q, k, v, o, gate, up and down.
LAYER = 8 * ((576 + 576) * 2 + (576 + 192) * 2 + (576 + 1536) * 3)
P, D, BLOCKS = 30 * LAYER, 8192, 12


class Before(Projector):
    """The projection as generated before issue 14 (same values, three passes per block)."""

    def _matrix(self, start: int, stop: int) -> torch.Tensor:
        gen = torch.Generator(device=self.device).manual_seed(self.seed * 1_000_003 + start)
        shape = (stop - start, self.d)
        signs = torch.randint(0, 2, shape, generator=gen, device=self.device, dtype=torch.int8)
        return (signs.float() * 2 - 1).div_(math.sqrt(self.d))


def seconds_per_row(grads: torch.Tensor, kind: type[Projector]) -> tuple[float, torch.Tensor]:
    """Seconds per row to project the rows of `grads` at once, and the projection."""
    rows, part = grads.shape
    project = kind(part, D, seed=0, device=torch.device("cpu"))
    start = time.perf_counter()
    out = project(grads)
    return (time.perf_counter() - start) / rows, out


def main() -> None:
    torch.set_num_threads(2)
    block = CACHED_PROJECTION // D
    part = BLOCKS * block
    gathered = max(GRADIENT_BUFFER, PROJECTION_BYTES // (4 * P))
    grads = torch.randn(gathered, part, generator=torch.Generator().manual_seed(0))
    before, a = seconds_per_row(grads[:GRADIENT_BUFFER], Before)
    after, b = seconds_per_row(grads, Projector)
    same = torch.allclose(a, b[:GRADIENT_BUFFER], rtol=1e-5, atol=1e-6)
    scale = P / part
    print(
        json.dumps(
            {
                "lora_params": P,
                "projection_dim": D,
                "rows_per_projection_before": GRADIENT_BUFFER,
                "rows_per_projection_after": gathered,
                "seconds_per_row_before": round(before * scale, 3),
                "seconds_per_row_after": round(after * scale, 3),
                "speedup": round(before / after, 2),
                "same_projection": bool(same),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
