"""Peak memory of validating + tokenising + encoding a pool (runner.prepare_job) at N and 10N rows.

    .venv/bin/python -m benchmarks.perf.encode_memory [--rows 20000] [--factor 10] [--in-memory]

Each size runs in a fresh process on a synthetic long-tailed prompt/completion pool, tokenised with
SmolLM2's tokenizer (max_length 512), through the pool cache (so the tokenised pool is also
published there) and the per-row length counts. Reported per size: VmHWM (peak RSS: anonymous +
file pages mapped into the process), the peak of RssAnon (the process's own memory, sampled every
5 ms; what cannot be reclaimed), both after imports and tokenizer load as a baseline, and the
pool's token count. `--in-memory` keeps the whole pool in RAM buffers (no spill to disk), for
contrast. Results: benchmarks/results/encode_memory.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SMOLLM2 = ROOT / ".cache" / "models" / "smollm2-135m-instruct"
RESULTS = ROOT / "benchmarks" / "results" / "encode_memory.json"


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class _AnonPeak(threading.Thread):
    """Samples RssAnon every 5 ms (the kernel keeps no high-water mark for it)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak, self.stop = 0, threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, _status_kb("RssAnon"))
            time.sleep(0.005)


def child(pool: Path, validation: Path, model: Path, in_memory: bool) -> dict[str, Any]:
    """One measurement in this process."""
    import torch  # noqa: F401  (imported by every real job; counted in the baseline)
    import transformers  # noqa: F401

    from tov_engine import JobConfig
    from tov_engine.data import encoded as encoding
    from tov_engine.job import prepare_job
    from tov_engine.model.loading import load_tokenizer

    if in_memory:
        encoding.CHUNK_TOKENS = 1 << 62  # never spill: the pool's arrays stay in RAM buffers
    load_tokenizer(model)
    base = {"vmhwm_mb": _status_kb("VmHWM") / 1024, "rss_anon_mb": _status_kb("RssAnon") / 1024}
    sampler = _AnonPeak()
    sampler.start()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tov-encode-mem-") as cache:
        job = prepare_job(
            pool_path=pool,
            validation_path=validation,
            model=model,
            config=JobConfig(max_length=512, device="cpu"),
            cache_dir=cache,
        )
        job.pool.seq_lengths  # noqa: B018  (what planning the batches computes)
        seconds = time.perf_counter() - start
        sampler.peak = max(sampler.peak, _status_kb("RssAnon"))
        sampler.stop.set()
        sampler.join()
        on_disk = sum(p.stat().st_size for p in Path(cache).rglob("*.bin"))
        return {
            "rows": len(job.pool),
            "tokens": len(job.pool.ids),
            "on_disk": bool(job.pool.on_disk),
            "pool_cache_bin_mb": on_disk / 2**20,
            "peak_vmhwm_mb": _status_kb("VmHWM") / 1024,
            "peak_rss_anon_mb": sampler.peak / 1024,
            "baseline": base,
            "seconds": seconds,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=20000, help="N")
    parser.add_argument("--factor", type=int, default=10, help="the larger pool is factor x N")
    parser.add_argument("--in-memory", action="store_true", help="no spill to disk (contrast)")
    parser.add_argument("--model", type=Path, default=SMOLLM2, help="a folder with a tokenizer")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--validation", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        result = child(args.child, args.validation, args.model, args.in_memory)
        print(json.dumps(result))
        return
    from benchmarks.perf.workloads import synthetic_rows, write_jsonl

    runs: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="tov-encode-mem-") as name:
        tmp = Path(name)
        val = write_jsonl(tmp / "val.jsonl", synthetic_rows(16, seed=9))
        for rows in (args.rows, args.rows * args.factor):
            pool = write_jsonl(tmp / f"pool_{rows}.jsonl", synthetic_rows(rows, seed=2))
            cmd = [
                sys.executable,
                "-m",
                "benchmarks.perf.encode_memory",
                "--model",
                str(args.model),
            ]
            cmd += ["--child", str(pool), "--validation", str(val)]
            cmd += ["--in-memory"] if args.in_memory else []
            done = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
            runs[str(rows)] = json.loads(done.stdout.strip().splitlines()[-1])
            print(json.dumps({str(rows): runs[str(rows)]}), flush=True)
            pool.unlink()
    key = "in_memory" if args.in_memory else "streamed"
    data = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    data[key] = {"generated_at": time.strftime("%Y-%m-%dT%H:%M:%S"), "runs": runs}
    RESULTS.write_text(json.dumps(data, indent=1) + "\n")


if __name__ == "__main__":
    main()
