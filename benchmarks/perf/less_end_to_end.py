"""LESS end to end on CPU: the engine CLI's `--method less` at its defaults on the first 200 demo
pool rows with SmolLM2-135M-Instruct (wall and CPU time), and the projection's fidelity on real
gradients: LESS scores of a sample of pool rows from the sparse JL projection (d = 8192) against
the exact, unprojected cosines (and, with --dense, against the former dense Rademacher matrix).

Writes benchmarks/results/less.json. The model: `.venv/bin/python scripts/prepare_model.py
smollm2-135m-instruct --dest .cache/models`.

Run: .venv/bin/python -m benchmarks.perf.less_end_to_end [--dense] [--skip-cli]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from benchmarks.perf.less_projection import Dense
from tov_engine import JobConfig, SelectionConfig
from tov_engine.data.batching import make_batch
from tov_engine.job import prepare_job
from tov_engine.methods.common import build_surrogate
from tov_engine.methods.less.gradients import (
    Projector,
    adam_direction,
    batch_gradients,
    gradient_batches,
    linear_owners,
)
from tov_engine.methods.less.run import _warmup
from tov_engine.model.precision import compute
from tov_engine.progress import Tracker

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / ".cache/models/smollm2-135m-instruct"
POOL, VALIDATION = ROOT / "demo/data/pool.jsonl", ROOT / "demo/data/validation.jsonl"
OUT = ROOT / "benchmarks/results/less.json"


def run_cli(pool: Path, budget: int, folder: Path) -> dict[str, object]:
    """The CLI at its defaults: wall seconds, CPU seconds (user, system), load averages."""
    cmd = [
        sys.executable, "-m", "tov_engine", "select", "--pool", str(pool),
        "--validation", str(VALIDATION), "--model", str(MODEL), "--method", "less",
        "--budget", str(budget), "--out", str(folder / "selection.jsonl"),
    ]  # fmt: skip
    load_before = os.getloadavg()
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    output = proc.stdout.read().decode() if proc.stdout else ""
    if status != 0:
        raise SystemExit(f"the LESS CLI run failed (status {status}):\n{output[-3000:]}")
    selected = sum(1 for line in (folder / "selection.jsonl").read_text().splitlines() if line)
    return {
        "command": " ".join(["python", *cmd[1:]]),
        "wall_seconds": round(wall, 1),
        "user_seconds": round(usage.ru_utime, 1),
        "system_seconds": round(usage.ru_stime, 1),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "selected": selected,
        "summary_tail": output.strip().splitlines()[-12:],
    }


def _scores(pool: torch.Tensor, val: torch.Tensor) -> np.ndarray:
    """A checkpoint's LESS score of each pool row: mean cosine over the validation rows."""
    pool = torch.nn.functional.normalize(pool, dim=1)
    val = torch.nn.functional.normalize(val, dim=1)
    return (pool @ val.T).mean(dim=1).numpy()


def fidelity(pool_path: Path, sample: int, dense: bool) -> dict[str, object]:
    """Sparse (and dense) projected LESS scores against exact ones on real gradients at the
    first warmup checkpoint (the heaviest weighted one)."""
    job = prepare_job(
        pool_path=pool_path,
        validation_path=VALIDATION,
        model=MODEL,
        config=JobConfig(method="less", selection=SelectionConfig(budget=40)),
    )
    s = build_surrogate(job)
    tracker = Tracker(
        {"train": 1 << 40, "score": 1 << 40, "select": 1},
        {"train": 1.0, "score": 1.0, "select": 0.0},
        None,
        None,
    )
    start = time.perf_counter()
    ck = _warmup(job, s, tracker)[0]
    warmup = time.perf_counter() - start
    s.load_state("base", ck.weights)
    s.model.eval()
    params = s.params("base")
    owners = linear_owners(s.model, params)
    assert owners is not None
    pad = int(job.tokenizer.pad_token_id)

    def grads(enc: object, batches: list[np.ndarray], adam: bool) -> torch.Tensor:
        out = []
        for rows in batches:
            batch = make_batch(enc, rows, pad, torch.device("cpu"))  # type: ignore[arg-type]
            with compute(s.model):
                g, ok = batch_gradients(s.model, params, owners, batch, "causal_lm")
            g = g[ok]
            out.append(adam_direction(g, ck) if adam else g)
        return torch.cat(out)

    chosen, rows = [], 0
    for b in gradient_batches(job.pool):
        if rows >= sample:
            break
        chosen.append(b)
        rows += len(b)
    start = time.perf_counter()
    pool_g = grads(job.pool, chosen, True)
    per_row_gradient = (time.perf_counter() - start) / len(pool_g)
    val_g = grads(job.val, gradient_batches(job.val), False)
    exact = _scores(pool_g, val_g)
    p = pool_g.shape[1]
    both = torch.cat([pool_g, val_g])
    start = time.perf_counter()
    projected = Projector(p, 8192, seed=0, device=torch.device("cpu"))(both)
    per_row_sparse = (time.perf_counter() - start) / len(both)  # includes drawing the layout
    sparse = _scores(projected[: len(pool_g)], projected[len(pool_g) :])
    k = max(1, len(exact) // 5)
    top = set(np.argsort(-exact)[:k])
    result: dict[str, object] = {
        "pool_rows_sampled": len(pool_g),
        "validation_rows": len(val_g),
        "lora_params": p,
        "warmup_seconds": round(warmup, 1),
        "seconds_per_row_gradient": round(per_row_gradient, 3),
        "seconds_per_row_sparse_projection": round(per_row_sparse, 4),
        "spearman_sparse_vs_exact": round(float(spearmanr(sparse, exact).statistic), 4),
        "top20pct_overlap_sparse_vs_exact": len(top & set(np.argsort(-sparse)[:k])) / k,
        "max_abs_score_error_sparse": round(float(np.abs(sparse - exact).max()), 4),
    }
    if dense:
        start = time.perf_counter()
        projected = Dense(p, 8192, seed=0)(both)
        result["seconds_per_row_dense_projection"] = round(
            (time.perf_counter() - start) / len(both), 3
        )
        d_scores = _scores(projected[: len(pool_g)], projected[len(pool_g) :])
        result["spearman_dense_vs_exact"] = round(float(spearmanr(d_scores, exact).statistic), 4)
        result["spearman_sparse_vs_dense"] = round(float(spearmanr(sparse, d_scores).statistic), 4)
        result["top20pct_overlap_dense_vs_exact"] = len(top & set(np.argsort(-d_scores)[:k])) / k
        result["max_abs_score_error_dense"] = round(float(np.abs(d_scores - exact).max()), 4)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pool-rows", type=int, default=200)
    ap.add_argument("--budget", type=int, default=40)
    ap.add_argument("--sample", type=int, default=48, help="pool rows in the fidelity check")
    ap.add_argument("--dense", action="store_true", help="also the former dense projection (slow)")
    ap.add_argument("--skip-cli", action="store_true", help="only the fidelity check")
    a = ap.parse_args()
    torch.set_num_threads(2)
    result: dict[str, object] = {"date": datetime.date.today().isoformat()}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        pool = folder / "pool.jsonl"
        lines = [line for line in POOL.read_text().splitlines() if line.strip()]
        pool.write_text("\n".join(lines[: a.pool_rows]) + "\n")
        if not a.skip_cli:
            cli = run_cli(pool, a.budget, folder)
            wall = float(cli["wall_seconds"])  # type: ignore[arg-type]
            cli["seconds_per_pool_row"] = round(wall / a.pool_rows, 2)
            result["cli"] = cli
        result["fidelity"] = fidelity(pool, a.sample, a.dense)
    OUT.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
