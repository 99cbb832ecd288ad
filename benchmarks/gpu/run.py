"""The GPU benchmark (issue 14): the engine on one GPU, at the sizes it exists for.

    PYTHONPATH=. python3 -m benchmarks.gpu.run [--small] [--out PATH]      (make bench-gpu)

Four parts, each guarded (a failure is recorded with its traceback and the others still run)
and each under a time budget, the whole run under 8 minutes on one H100:

- precision: one ToV job under the bfloat16 precision policy and under float32 on the same
  device, model and data: the Spearman correlation of the two score vectors and the overlap of
  the score halves of the two selections (benchmarks/perf/precision.py's comparison).
- throughput: ToV scoring tokens/s (one round: the engine's base and validation passes) against
  the tokens/s of the cheapest forward that yields the same losses, the model in bf16
  (benchmarks/perf/throughput.py's bare_forward: hidden states, then the head on loss-bearing
  positions only), for a Llama-3.2-1B-shaped model. ToV runs each row twice, so 0.5 is the true
  limit. The same bare forward computing in float32 from the bf16 weights, as the bf16 policy
  does, is in the details.
- memory_1b, memory_8b: the peak GPU memory of a whole ToV LoRA job at the engine's defaults
  (torch.cuda.max_memory_reserved plus the device memory outside torch's allocator, the CUDA
  context; max_memory_allocated in the details) for Llama-3.2-1B- and Llama-3.1-8B-shaped
  models, against the memory model's prediction (tov_plan.memory, through the engine's
  workload_from_job), which includes the context.

The models are built from configs with seeded random weights on the GPU itself and the tokenizer
is trained in-process (benchmarks/gpu/models.py): the GPU machine has no network. Scores of random
models say nothing of selection quality; the comparisons (precision, speed, memory) hold.

--small runs the same code on CPU in seconds (a CI test): tiny models stand in for the 1B and 8B
ones, the two policies are compared on CPU, and the memory parts measure the process's peak RSS.
Results: benchmarks/results/gpu.json (--out elsewhere), written after every part.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import gc
import json
import logging
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_OUT = ROOT / "benchmarks" / "results" / "gpu.json"
GB = 1e9
SEED = 0

logger = logging.getLogger("benchmarks.gpu")


@dataclass(frozen=True)
class Sizes:
    """What one mode runs: the model shapes (models.SHAPES), rows, lengths, and seconds."""

    device: str
    precision_model: str
    precision_rows: int
    precision_words: float  # median words of a completion
    precision_max_length: int
    precision_budget: int
    throughput_model: str
    throughput_rows: int
    throughput_words: float
    throughput_max_length: int
    throughput_reps: int
    memory_models: tuple[tuple[str, str, str], ...]  # (part, shape, the size it stands for)
    memory_rows: int  # pool rows (16 of them train, the rest are scored)
    memory_max_length: int
    memory_score_tokens: int  # tov.tokens_per_batch: a whole number of rows, so batches are full
    memory_train_tokens: int  # tov.train_tokens_per_micro_batch, likewise
    memory_precision: str
    budgets: dict[str, float]  # seconds per part
    total_seconds: float


FULL = Sizes(
    device="cuda",
    precision_model="llama-1b",
    precision_rows=320,
    precision_words=40,
    precision_max_length=256,
    precision_budget=64,
    throughput_model="llama-1b",
    throughput_rows=256,
    throughput_words=120,
    throughput_max_length=1024,
    throughput_reps=3,
    memory_models=(("memory_1b", "llama-1b", "1B"), ("memory_8b", "llama-8b", "8B")),
    memory_rows=48,
    memory_max_length=512,  # JobConfig's default
    memory_score_tokens=8192,  # ToVConfig's default
    memory_train_tokens=4096,  # ToVConfig's default
    memory_precision="auto",  # bfloat16 on a bf16-capable GPU
    budgets={"precision": 100, "throughput": 110, "memory_1b": 60, "memory_8b": 180},
    total_seconds=440,  # + imports and CUDA's start: under 8 minutes
)

SMALL = Sizes(
    device="cpu",
    precision_model="tiny",
    precision_rows=64,
    precision_words=12,
    precision_max_length=64,
    precision_budget=16,
    throughput_model="small",
    throughput_rows=40,
    throughput_words=12,
    throughput_max_length=96,
    throughput_reps=2,
    memory_models=(("memory_1b", "tiny", "1B"), ("memory_8b", "small", "8B")),
    memory_rows=24,
    memory_max_length=64,
    memory_score_tokens=512,
    memory_train_tokens=256,
    memory_precision="bfloat16",  # the policy a GPU gets, on CPU
    budgets={"precision": 90, "throughput": 90, "memory_1b": 60, "memory_8b": 60},
    total_seconds=300,
)


def no_leak_check() -> Any:
    """The jobs here skip the leakage check: it runs on the CPU before any model loads and needs
    `datasketch`, which the GPU machine's python3 lacks."""
    from tov_engine.leakage import LeakageConfig

    return LeakageConfig(enabled=False)


class PartTimeout(Exception):
    """A part ran past its time budget."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise PartTimeout in the block after `seconds` (SIGALRM: between Python bytecodes, so a
    running GPU kernel or C call finishes first)."""

    def expire(signum: int, frame: Any) -> None:
        raise PartTimeout(f"the part ran past its time budget of {seconds:.0f} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.001))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def free_memory() -> None:
    """Drop what the last part left: Python garbage and the CUDA allocator's cached blocks."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def _rss_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024  # kB
    raise OSError(f"/proc/self/status has no {field}")


class PeakMemory:
    """The peak memory of one stretch of work on the device.

    CUDA: the caching allocator's peak reserved memory (reset per stretch) plus the device memory
    torch does not count: the device's used memory minus torch's reserved memory (the GPU is this
    process's alone), the larger of its value when CUDA started and at the end of the stretch
    (kernels and library handles load lazily). CPU: the process's peak RSS, reset per stretch
    through /proc/self/clear_refs.
    """

    def __init__(self, device: Any) -> None:
        import torch

        self.device = device
        self.cuda = device.type == "cuda"
        self.context_bytes = 0
        if self.cuda:
            torch.zeros(1, device=device)  # starts CUDA
            self.context_bytes = self._outside_torch()
        self.before = 0
        self.reset = "allocator peaks reset at the start"

    def _outside_torch(self) -> int:
        """Device memory in use that torch's allocator does not hold: the CUDA context, and the
        kernels and library handles loaded since (lazily, on first use)."""
        import torch

        free, total = torch.cuda.mem_get_info(self.device)
        return int(total - free - torch.cuda.memory_reserved(self.device))

    def start(self) -> None:
        """Free what can be freed and reset the peaks."""
        import torch

        free_memory()
        if self.cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
            self.before = int(torch.cuda.memory_allocated(self.device))
        else:
            try:
                Path("/proc/self/clear_refs").write_text("5")  # peak RSS := current RSS
                self.reset = "peak RSS reset at the start"
            except OSError as exc:  # a kernel or sandbox without it: the process's whole peak
                self.reset = f"peak RSS not reset ({exc}): the process's peak so far"
            self.before = _rss_bytes("VmRSS")

    def read(self) -> dict[str, Any]:
        """The peaks since start(); `peak_bytes` is what the memory model predicts."""
        import torch

        if self.cuda:
            torch.cuda.synchronize(self.device)
            reserved = int(torch.cuda.max_memory_reserved(self.device))
            outside = max(self.context_bytes, self._outside_torch())
            return {
                "max_allocated_bytes": int(torch.cuda.max_memory_allocated(self.device)),
                "max_reserved_bytes": reserved,
                "allocated_before_bytes": self.before,
                "outside_torch_bytes": outside,
                "peak_bytes": reserved + outside,
                "how": self.reset,
            }
        # the kernel's RSS counters lag by a few pages: never below the RSS read at the start
        peak = max(_rss_bytes("VmHWM"), self.before)
        return {
            "peak_rss_bytes": peak,
            "rss_before_bytes": self.before,
            "peak_bytes": peak,
            "how": self.reset,
        }


class Bench:
    """What the parts share: the device, the work folder, the tokenizer and the model folders
    (each shape built once, on first use, its time counted in the part that builds it)."""

    def __init__(self, sizes: Sizes, work: Path) -> None:
        import torch

        from tests.tiny_models import build_tiny_bpe_tokenizer

        self.sizes = sizes
        self.work = work
        self.device = torch.device(sizes.device)
        self.tokenizer = build_tiny_bpe_tokenizer()
        self.models: dict[str, Path] = {}
        self.builds: dict[str, dict[str, Any]] = {}
        self.peak = PeakMemory(self.device)
        self.deadline = time.perf_counter() + sizes.total_seconds  # the running part's

    def time_left(self) -> float:
        """Seconds the running part has left."""
        return self.deadline - time.perf_counter()

    def model(self, shape: str) -> Path:
        """The folder of a `shape` model, built (bf16, on the device) on first use."""
        import torch

        from benchmarks.gpu.models import build_model

        if shape not in self.models:
            folder = self.work / "models" / shape
            self.builds[shape] = build_model(
                folder, shape, self.tokenizer, self.device, torch.bfloat16, SEED
            )
            free_memory()
            self.models[shape] = folder
        return self.models[shape]

    def timed(self, fn: Callable[[], Any]) -> tuple[float, Any]:
        """(seconds, result) of fn(): wall seconds between synchronised points on a GPU; CPU
        seconds of this process on CPU (a shared machine's neighbours disturb wall time)."""
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            start = time.perf_counter()
            value = fn()
            torch.cuda.synchronize(self.device)
            return time.perf_counter() - start, value
        start = time.process_time()
        value = fn()
        return time.process_time() - start, value


def part_precision(b: Bench) -> dict[str, Any]:
    """ToV scores under bfloat16 against float32: same device, model, data and job."""
    from benchmarks.gpu.models import text_rows
    from benchmarks.perf.precision import compare
    from tov_engine import JobConfig, SelectionConfig, ToVConfig, run_selection

    s = b.sizes
    model = b.model(s.precision_model)
    pool = text_rows(b.work / "precision_pool.jsonl", s.precision_rows, 3, s.precision_words)
    val = text_rows(b.work / "precision_val.jsonl", 32, 4, s.precision_words)
    outcomes, seconds, resolved = {}, {}, {}
    for name in ("float32", "bfloat16"):
        config = JobConfig(
            device=s.device,
            precision=name,
            max_length=s.precision_max_length,
            tov=ToVConfig(rounds=2, learning_rate=1e-3, batch_size=8),
            selection=SelectionConfig(budget=s.precision_budget, strategy="score+random"),
        )
        start = time.perf_counter()
        outcomes[name] = run_selection(
            pool_path=pool, validation_path=val, model=model, config=config, leakage=no_leak_check()
        )
        seconds[name] = round(time.perf_counter() - start, 2)
        resolved[name] = outcomes[name].stats.get("precision")
        free_memory()
    return {
        "model": s.precision_model,
        **compare(outcomes["float32"], outcomes["bfloat16"]),
        "pool_rows": s.precision_rows,
        "policies": resolved,
        "job_seconds": seconds,
    }


def part_throughput(b: Bench) -> dict[str, Any]:
    """ToV scoring tokens/s against the cheapest bf16 forward's, on the same batches."""
    import numpy as np
    import torch

    from benchmarks.gpu.models import text_rows
    from benchmarks.perf.throughput import bare_forward, tov_scoring
    from tov_engine import JobConfig, SelectionConfig, ToVConfig
    from tov_engine.data.batching import plan_buckets
    from tov_engine.job import prepare_job
    from tov_engine.methods.common import build_surrogate, split_pool
    from tov_engine.model.loading import load_model
    from tov_engine.model.precision import float32_compute

    s = b.sizes
    model = b.model(s.throughput_model)
    pool = text_rows(b.work / "tp_pool.jsonl", s.throughput_rows, 5, s.throughput_words)
    val = text_rows(b.work / "tp_val.jsonl", 8, 6, s.throughput_words)
    config = JobConfig(
        device=s.device,
        precision="bfloat16",
        max_length=s.throughput_max_length,
        tov=ToVConfig(rounds=1, base_size=8),
        selection=SelectionConfig(budget=16),
    )
    job = prepare_job(
        pool_path=pool, validation_path=val, model=model, config=config, leakage=no_leak_check()
    )
    _, rest, _ = split_pool(job)
    lengths = job.pool.seq_lengths
    batches = plan_buckets(lengths, rest, config.tov.tokens_per_batch)
    tokens = int(lengths[rest].sum())
    pad = int(job.tokenizer.pad_token_id)
    surrogate = build_surrogate(job)  # the engine's bf16 policy
    plain = load_model(model, task="causal_lm", device=b.device, dtype=torch.bfloat16).eval()

    def bare() -> float:
        return bare_forward(plain, job.pool, batches, pad)

    def scoring() -> Any:
        return tov_scoring(surrogate, job, batches)

    bare_forward(plain, job.pool, batches[:1], pad)  # warm-up: kernels, allocator, head check
    tov_scoring(surrogate, job, batches[:1])
    times: dict[str, list[float]] = {"bare_forward": [], "scoring": []}
    for k in range(s.throughput_reps):  # best of the reps the part's time allows (one at least)
        if k > 0 and b.time_left() < 3 * (times["bare_forward"][0] + times["scoring"][0]):
            break
        seconds, bare_nll = b.timed(bare)
        times["bare_forward"].append(seconds)
        seconds, (store, _) = b.timed(scoring)
        times["scoring"].append(seconds)
    engine_nll = -float(np.asarray(store.values, dtype=np.float64).sum())
    rate = {k: tokens / min(v) for k, v in times.items()}
    # the same bare forward computing in float32 from the bf16 weights, as the bf16 policy does
    # (about half a scoring round's time: run when it fits)
    f32: dict[str, float | None] = {"rate": None, "nll_difference": None}
    if b.time_left() > 2 * min(times["scoring"]):
        float32_compute(plain)
        bare_forward(plain, job.pool, batches[:1], pad)
        seconds, f32_nll = b.timed(bare)
        times["bare_forward_float32_compute"] = [seconds]
        f32["rate"] = tokens / seconds
        f32["nll_difference"] = abs(engine_nll - f32_nll) / max(abs(f32_nll), 1e-12)
    return {
        "model": s.throughput_model,
        "parameters": b.builds.get(s.throughput_model, {}).get("parameters"),
        "scored_rows": len(rest),
        "tokens_per_pass": tokens,
        "loss_tokens_per_pass": int(job.pool.loss_lengths[rest].sum()),
        "batches": len(batches),
        "tokens_per_batch": config.tov.tokens_per_batch,
        "scoring_tokens_per_s": rate["scoring"],
        "bare_forward_tokens_per_s": rate["bare_forward"],
        "bare_forward_dtype": "bfloat16",
        "bare_forward_float32_compute_tokens_per_s": f32["rate"],
        "scoring_vs_forward_ratio": rate["scoring"] / rate["bare_forward"],
        "scoring_vs_float32_compute_forward_ratio": (
            rate["scoring"] / f32["rate"] if f32["rate"] else None
        ),
        # the losses agree: the engine's base pass (LoRA B = 0 at init) against the bare forward
        "nll_relative_difference_bf16": abs(engine_nll - bare_nll) / max(abs(bare_nll), 1e-12),
        "nll_relative_difference_float32_compute": f32["nll_difference"],
        "seconds": times,
        "clock": "wall, synchronised" if b.device.type == "cuda" else "CPU seconds",
    }


def part_memory(b: Bench, shape: str, stands_for: str) -> dict[str, Any]:
    """The measured peak of a whole ToV LoRA job against the memory model's prediction."""
    import torch

    from benchmarks.gpu.models import long_rows
    from tov_engine import JobConfig, SelectionConfig, ToVConfig, run_selection
    from tov_engine.model.footprint import workload_from_job
    from tov_plan.memory import estimate_peak_memory

    s = b.sizes
    model = b.model(shape)
    pool = long_rows(b.work / f"mem_pool_{shape}.jsonl", s.memory_rows, 7, s.memory_max_length)
    val = long_rows(b.work / f"mem_val_{shape}.jsonl", 16, 8, s.memory_max_length)
    config = JobConfig(
        device=s.device,
        precision=s.memory_precision,
        max_length=s.memory_max_length,
        tov=ToVConfig(
            rounds=1,
            base_size=16,  # the default batch_size, LoRA settings and score function
            tokens_per_batch=s.memory_score_tokens,
            train_tokens_per_micro_batch=s.memory_train_tokens,
        ),
        selection=SelectionConfig(budget=16),
    )
    workload = workload_from_job(config, model)
    estimate = estimate_peak_memory(workload)
    b.peak.start()
    failure: dict[str, Any] = {}
    stats: dict[str, Any] = {}
    out_of_memory = False
    start = time.perf_counter()
    try:
        outcome = run_selection(
            pool_path=pool, validation_path=val, model=model, config=config, leakage=no_leak_check()
        )
        stats = outcome.stats
        del outcome
    except Exception as exc:  # the prediction and the peak so far are still recorded
        out_of_memory = isinstance(exc, torch.cuda.OutOfMemoryError)
        failure = {
            "ok": False,
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(),
        }
    seconds = time.perf_counter() - start
    measured = b.peak.read()
    settings = dataclasses.asdict(workload)
    settings.pop("model_config")
    predicted = estimate.peak_bytes
    return {
        **failure,
        "model": shape,
        "stands_for": stands_for,
        "parameters": b.builds.get(shape, {}).get("parameters"),
        "workload": settings,
        "predicted_peak_bytes": predicted,
        "predicted_phase": estimate.phase,
        "predicted_parts": estimate.parts,
        "measured": measured,
        "predicted_over_measured": predicted / measured["peak_bytes"],
        "predicted_fits_80gb": predicted <= 80 * GB,
        "out_of_memory": out_of_memory,
        "job_seconds": round(seconds, 1),
        "job_stats": {
            k: stats.get(k)
            for k in ("precision", "rows", "loss_tokens", "truncated_rows", "seconds_train")
        }
        | {k: v for k, v in stats.items() if "checkpoint" in k or "micro" in k},
    }


def guarded(name: str, budget: float, fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """fn() under a time budget; any failure becomes {"ok": False, "error", "traceback"}."""
    start = time.perf_counter()
    if budget < 5:
        return {"ok": False, "error": "skipped: the run's time budget was spent", "seconds": 0.0}
    logger.warning("part %s (budget %.0f s)", name, budget)
    try:
        with time_limit(budget):
            result = {"ok": True, **fn()}
    except Exception as exc:  # recorded, and the next part runs
        result = {
            "ok": False,
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc(),
        }
    finally:
        free_memory()
    result["seconds"] = round(time.perf_counter() - start, 1)
    result["budget_seconds"] = budget
    logger.warning(
        "part %s: %s in %.1f s", name, "ok" if result["ok"] else "FAILED", result["seconds"]
    )
    return result


def environment(b: Bench) -> dict[str, Any]:
    """The device, the library versions and the date."""
    import peft
    import tokenizers
    import torch
    import transformers

    device: dict[str, Any] = {"type": b.device.type}
    if b.device.type == "cuda":
        props = torch.cuda.get_device_properties(b.device)
        device |= {
            "name": torch.cuda.get_device_name(b.device),
            "total_memory_bytes": int(props.total_memory),
            "capability": list(torch.cuda.get_device_capability(b.device)),
            "bf16_supported": torch.cuda.is_bf16_supported(),
            "cuda_context_bytes": b.peak.context_bytes,
        }
    else:
        device |= {
            "name": platform.processor() or platform.machine(),
            "threads": torch.get_num_threads(),
        }
    now = datetime.now(UTC)
    return {
        "generated_at": now.isoformat(timespec="seconds"),
        "date": now.date().isoformat(),
        "device": device,
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
            "tokenizers": tokenizers.__version__,
        },
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
    }


def summary(parts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The headline figures (None where a part failed)."""

    def get(part: str, key: str) -> Any:
        return parts.get(part, {}).get(key)

    out = {
        "spearman_bf16_vs_fp32": get("precision", "spearman"),
        "score_half_overlap_bf16_vs_fp32": get("precision", "score_half_overlap"),
        "scoring_vs_forward_ratio": get("throughput", "scoring_vs_forward_ratio"),
    }
    for name in ("memory_1b", "memory_8b"):
        measured = get(name, "measured")
        out[f"{name}_measured_peak_gb"] = None if measured is None else measured["peak_bytes"] / GB
        predicted = get(name, "predicted_peak_bytes")
        out[f"{name}_predicted_peak_gb"] = None if predicted is None else predicted / GB
        out[f"{name}_predicted_over_measured"] = get(name, "predicted_over_measured")
        out[f"{name}_out_of_memory"] = get(name, "out_of_memory")
    return out


def run(sizes: Sizes, out: Path, work: Path) -> dict[str, Any]:
    """Every part, in order, with the JSON rewritten after each."""
    start = time.perf_counter()
    bench = Bench(sizes, work)
    result: dict[str, Any] = {
        "mode": "small" if sizes is SMALL else "full",
        **environment(bench),
        "summary": {},
        "parts": {},
    }
    parts: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("precision", lambda: part_precision(bench)),
        ("throughput", lambda: part_throughput(bench)),
    ]
    for name, shape, stands_for in sizes.memory_models:
        parts.append((name, functools.partial(part_memory, bench, shape, stands_for)))
    for name, fn in parts:
        left = sizes.total_seconds - (time.perf_counter() - start)
        budget = min(sizes.budgets[name], left)
        bench.deadline = time.perf_counter() + budget
        result["parts"][name] = guarded(name, budget, fn)
        result["summary"] = summary(result["parts"])
        result["model_builds"] = bench.builds
        result["seconds_total"] = round(time.perf_counter() - start, 1)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="CPU, tiny models (seconds; CI)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the result JSON")
    parser.add_argument("--work-dir", type=Path, default=None, help="models and rows (temp)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    sizes = SMALL if args.small else FULL
    from tov_engine.model.precision import CUBLAS_WORKSPACE

    # deterministic cuBLAS (the engine's determinism switch); read when CUDA starts
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
    import torch

    if sizes.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here: `--small` runs the CPU mode", file=sys.stderr)
        return 2
    if args.small:
        torch.set_num_threads(1)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    work = Path(tempfile.mkdtemp(prefix="tov-gpu-bench-", dir=args.work_dir))
    try:
        result = run(sizes, args.out, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result["summary"], indent=2))
    failed = [name for name, part in result["parts"].items() if not part["ok"]]
    print(f"written to {args.out}" + (f"; failed parts: {failed}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
