"""bf16 against float32 on CPU with the real SmolLM2-135M-Instruct on the demo data (issue 14).

Runs the demo's ToV job (scripts/demo.py's settings) once under each precision policy and prints
the Spearman correlation of the two score vectors (rows scored by both) and the overlap of the
score halves of the two selections. Done when Spearman >= 0.95 and overlap >= 80%.

Run: .venv/bin/python -m benchmarks.perf.precision   (minutes on 2 cores; the model folder comes
from scripts/prepare_model.py)
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from tov_engine import JobConfig, SelectionConfig, SelectionOutcome, ToVConfig, run_selection

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / ".cache" / "models" / "smollm2-135m-instruct"
POOL, VALIDATION = (
    REPO / "demo" / "data" / "pool.jsonl",
    REPO / "demo" / "data" / "validation.jsonl",
)


def _ranks(x: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(x, kind="stable"), kind="stable").astype(np.float64)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation (no ties in real-valued scores)."""
    return float(np.corrcoef(_ranks(a), _ranks(b))[0, 1])


def score_half(outcome: SelectionOutcome) -> set[int]:
    """The rows a selection picked by score."""
    sel = outcome.selection
    return {int(i) for i, s in zip(sel.indices, sel.sources, strict=True) if s == "score"}


def compare(fp32: SelectionOutcome, bf16: SelectionOutcome) -> dict[str, float | int]:
    """Spearman of the two score vectors over the rows both scored, and the overlap of the score
    halves of the two selections (the GPU benchmark compares its two policies with this too)."""
    scored = ~np.isnan(fp32.scores) & ~np.isnan(bf16.scores)
    a, b = score_half(fp32), score_half(bf16)
    return {
        "rows_scored": int(scored.sum()),
        "spearman": round(spearman(fp32.scores[scored], bf16.scores[scored]), 4),
        "score_half_overlap": round(len(a & b) / max(1, len(a)), 4),
        "score_half_size": len(a),
    }


def run(precision: str) -> tuple[SelectionOutcome, float]:
    """The demo's job under `precision`, and its seconds."""
    config = JobConfig(
        tov=ToVConfig(rounds=2, learning_rate=1e-3, batch_size=8),
        selection=SelectionConfig(budget=24, strategy="score+random"),
        max_length=128,
        device="cpu",
        precision=precision,
    )
    start = time.perf_counter()
    outcome = run_selection(pool_path=POOL, validation_path=VALIDATION, model=MODEL, config=config)
    return outcome, time.perf_counter() - start


def main() -> None:
    torch.set_num_threads(2)
    (fp32, t32), (bf16, t16) = run("float32"), run("bfloat16")
    result = {
        "model": MODEL.name,
        **compare(fp32, bf16),
        "seconds_float32": round(t32, 1),
        "seconds_bfloat16": round(t16, 1),
        "date": time.strftime("%Y-%m-%d"),
        "device": "cpu",
    }
    print(json.dumps(result, indent=2))
    out = REPO / "benchmarks" / "results" / "precision.json"
    out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
