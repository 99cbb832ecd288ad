"""Engine performance, as ratios against baselines measured in the same run.

    .venv/bin/python -m benchmarks.perf.bench_perf [--quick]      (make bench-perf)

- scoring_vs_forward_ratio: the engine's ToV scoring throughput (one round: two passes) over the
  throughput of the cheapest forward that yields the same losses (throughput.bare_forward: hidden
  states, then the head on loss-bearing positions only) on the same batches (SmolLM2-135M, a
  small pool). Two passes a row make 0.5 the true limit. The ratios against the plain forward
  (head on every position) and the transformer body alone are in the details.
- padding_waste: padded-token share of the scoring batches (demo pool; a synthetic long tail).
- peak_rss_mb_by_pool_size: peak RSS of a whole ToV job at N and 10N rows (tiny model).
- second_target_time_ratio: a second validation set on a cached pool / the first job
  (Method A, L=1, and Method B, L=2; the larger is reported). Small model.
- multi_target_time_ratio: run_multi_target with K=4 / four separate jobs (Method A, L=1, and
  Method B, L=2; the larger is reported). Small model.
- select speed on 10M scores against the previous implementation.
Ratios are of CPU seconds with torch on one thread (a shared machine's neighbours disturb wall
time far more); wall seconds are in the details. Storage figures (ingest, select over stored
scores, download) are copied from benchmarks/results/storage.json
(`python -m benchmarks.storage.bench_scores`). Results: benchmarks/results/perf.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.perf import reuse, selection_speed, throughput
from benchmarks.perf.workloads import build_small_lm, build_tiny_lm, synthetic_rows, write_jsonl

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
SMOLLM2 = ROOT / ".cache" / "models" / "smollm2-135m-instruct"
DEMO_POOL = ROOT / "demo" / "data" / "pool.jsonl"
DEMO_VALIDATION = ROOT / "demo" / "data" / "validation.jsonl"


def padding(tmp: Path) -> dict[str, Any]:
    """Padding waste of the scoring plan on the demo pool and on a synthetic long tail (SmolLM2's
    tokenizer), and the tokenising rate (validate + tokenise, CPU seconds)."""
    import time

    import numpy as np

    from tov_engine import JobConfig, ToVConfig
    from tov_engine.data.batching import padding_waste, plan_buckets
    from tov_engine.job import prepare_job

    out: dict[str, Any] = {}
    long_tail = write_jsonl(tmp / "long_tail.jsonl", synthetic_rows(5000, seed=1))
    for name, pool in (("demo_pool", DEMO_POOL), ("synthetic_long_tail", long_tail)):
        config = JobConfig(device="cpu", max_length=2048, tov=ToVConfig())
        start = time.process_time()
        job = prepare_job(
            pool_path=pool, validation_path=DEMO_VALIDATION, model=SMOLLM2, config=config
        )
        cpu = time.process_time() - start
        lengths = job.pool.seq_lengths
        batches = plan_buckets(lengths, np.arange(len(lengths)), config.tov.tokens_per_batch)
        out[name] = {
            "rows": len(lengths),
            "tokens_p50_p99_max": [int(np.percentile(lengths, q)) for q in (50, 99, 100)],
            "batches": len(batches),
            "padding_waste": padding_waste(lengths, batches),
            "prepare_rows_per_cpu_s": len(lengths) / cpu,
            "prepare_tokens_per_cpu_s": int(lengths.sum()) / cpu,
        }
    return out


def memory(tmp: Path, sizes: list[int]) -> dict[str, Any]:
    """Peak RSS of a ToV job (tiny model) per pool size, each in its own process."""
    val = write_jsonl(tmp / "mem_val.jsonl", synthetic_rows(16, seed=9))
    runs = {}
    for rows in sizes:
        pool = write_jsonl(tmp / f"mem_pool_{rows}.jsonl", synthetic_rows(rows, seed=2))
        cmd = [sys.executable, "-m", "benchmarks.perf.memory", "--model", str(tmp / "tiny")]
        cmd += ["--pool", str(pool), "--validation", str(val)]
        done = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
        runs[str(rows)] = json.loads(done.stdout.strip().splitlines()[-1])
    return runs


def storage_figures() -> dict[str, Any]:
    """ingest, select and download figures of the 10M-score run in storage.json (or None)."""
    path = RESULTS / "storage.json"
    if not path.exists():
        return {"ingest_scores_per_s": None, "select_10m_seconds": None, "download_mb_per_s": None}
    data = json.loads(path.read_text())
    big = max(data["sizes"], key=lambda s: s["rows"])
    return {
        "ingest_scores_per_s": big["write_scores_per_s"],
        "select_10m_seconds": big["select_seconds"],
        "download_mb_per_s": big["download_mb_per_s"],
        "storage_generated_at": data.get("generated_at"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller workloads (a smoke run)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import torch

    from tov_engine import JobConfig, SelectionConfig, ToVConfig

    torch.set_num_threads(1)  # CPU-second ratios; see reuse.py and throughput.py
    q = args.quick
    details: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="tov-perf-") as name:
        tmp = Path(name)
        build_tiny_lm(tmp / "tiny")
        details["memory"] = memory(tmp, [500, 5000] if q else [2000, 20000])
        details["padding"] = padding(tmp)
        tp_pool = write_jsonl(tmp / "tp_pool.jsonl", _demo_rows(32 if q else 64))
        details["throughput"] = throughput.measure(SMOLLM2, tp_pool, DEMO_VALIDATION)
        small = build_small_lm(tmp / "small", hidden=128 if q else 256, layers=2)
        pool = write_jsonl(tmp / "pool.jsonl", synthetic_rows(200 if q else 400, seed=3))
        vals = [
            write_jsonl(tmp / f"val{k}.jsonl", synthetic_rows(16, seed=10 + k)) for k in range(4)
        ]

        def config(variant: str, rounds: int) -> JobConfig:
            return JobConfig(
                device="cpu",
                tov=ToVConfig(variant=variant, rounds=rounds, learning_rate=1e-3),
                selection=SelectionConfig(budget=0.1),
            )

        details["second_target"] = [
            reuse.second_target(small, pool, vals, config("A", 1)),
            reuse.second_target(small, pool, vals, config("B", 2)),
        ]
        details["multi_target"] = [
            reuse.multi_target(small, pool, vals, config("A", 1)),
            reuse.multi_target(small, pool, vals, config("B", 2)),
        ]
    details["selection"] = selection_speed.measure(1_000_000 if q else 10_000_000)
    result = _summary(details)
    (RESULTS / "perf.json").write_text(json.dumps(result, indent=2) + "\n")
    _print(result)


def _demo_rows(n: int) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in DEMO_POOL.read_text().splitlines() if line.strip()]
    return rows[:n]


def _summary(details: dict[str, Any]) -> dict[str, Any]:
    from datetime import UTC, datetime

    mem = details["memory"]
    sizes = sorted(mem, key=int)
    return {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "scoring_vs_forward_ratio": details["throughput"]["scoring_vs_forward_ratio"],
        "padding_waste": {k: v["padding_waste"] for k, v in details["padding"].items()},
        "peak_rss_mb_by_pool_size": {k: mem[k]["peak_rss_mb"] for k in sizes},
        "second_target_time_ratio": max(
            s["second_target_time_ratio"] for s in details["second_target"]
        ),
        "multi_target_time_ratio": max(
            m["multi_target_time_ratio"] for m in details["multi_target"]
        ),
        "two_worker_speedup": _scale_out().get("two_worker_speedup"),
        **storage_figures(),
        "select_10m_seconds_engine": details["selection"]["select_seconds"],
        "details": details,
    }


def _scale_out() -> dict[str, Any]:
    """The two-worker figure from the scale-out benchmark's last run (it starts the service)."""
    path = RESULTS / "scale_out.json"
    return dict(json.loads(path.read_text())) if path.exists() else {}


def _print(result: dict[str, Any]) -> None:
    for key, value in result.items():
        if key != "details":
            print(f"{key:28s} {json.dumps(value)}")
    print(f"written to {RESULTS / 'perf.json'}")


if __name__ == "__main__":
    main()
