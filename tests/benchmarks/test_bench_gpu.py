"""The GPU benchmark's CPU small mode end to end (`python -m benchmarks.gpu.run --small`): the
same parts as on a GPU (bf16 against float32, scoring against the cheapest forward, a whole job's
peak memory against the memory model) on tiny models, in a subprocess as `make bench-gpu` runs it.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PARTS = ("precision", "throughput", "memory_1b", "memory_8b")


def test_gpu_benchmark_small_mode_writes_sane_results(tmp_path: Path) -> None:
    out = tmp_path / "gpu.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "benchmarks.gpu.run", "--small", "--out", str(out)]
    cmd += ["--work-dir", str(tmp_path)]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(out.read_text())

    assert result["mode"] == "small"
    assert result["device"]["type"] == "cpu"
    assert {"torch", "transformers", "peft"} <= set(result["versions"])
    assert result["date"] == result["generated_at"][:10]
    assert list(result["parts"]) == list(PARTS)
    for name in PARTS:
        part = result["parts"][name]
        assert part["ok"], f"{name}: {part.get('error')}\n{part.get('traceback')}"
    assert list(tmp_path.glob("tov-gpu-bench-*")) == []  # the work folder is removed

    precision = result["parts"]["precision"]
    assert precision["policies"] == {"float32": "float32", "bfloat16": "bfloat16"}
    assert -1.0 <= precision["spearman"] <= 1.0
    assert 0.0 <= precision["score_half_overlap"] <= 1.0
    assert precision["rows_scored"] > 0 and precision["score_half_size"] > 0

    throughput = result["parts"]["throughput"]
    for key in ("scoring_vs_forward_ratio", "scoring_vs_float32_compute_forward_ratio"):
        assert math.isfinite(throughput[key]) and throughput[key] > 0
    assert throughput["tokens_per_pass"] > throughput["loss_tokens_per_pass"] > 0
    # the bare forward yields the engine's losses: bf16 rounding apart, and exactly when it
    # computes in float32 as the bf16 policy does
    assert throughput["nll_relative_difference_bf16"] < 1e-2
    assert throughput["nll_relative_difference_float32_compute"] < 1e-4

    for name in ("memory_1b", "memory_8b"):
        memory = result["parts"][name]
        assert memory["workload"]["precision"] == "bfloat16"
        assert memory["job_stats"]["precision"] == "bfloat16"
        assert memory["measured"]["peak_bytes"] >= memory["measured"]["rss_before_bytes"] > 0
        assert memory["predicted_peak_bytes"] > 0
        assert 0 < memory["predicted_over_measured"] < 10
        assert not memory["out_of_memory"]
    assert result["parts"]["memory_8b"]["parameters"] > result["parts"]["memory_1b"]["parameters"]
    summary = result["summary"]
    assert summary["spearman_bf16_vs_fp32"] == precision["spearman"]
    assert summary["scoring_vs_forward_ratio"] == throughput["scoring_vs_forward_ratio"]
