"""Quality benchmark: does the selected subset train a better model? (issue #6)

    python -m benchmarks.quality.run --mode quick     # 3 seeds  (make bench-quality-quick)
    python -m benchmarks.quality.run --mode full      # 5 seeds  (make bench-quality)
    python -m benchmarks.quality.run --report-only    # rebuild the report from finished runs

For every setting (settings.py) and seed, each method selects the same budget from the pool; the
base model is fine-tuned on each selection with one fixed recipe (jobs.RECIPE; its learning rate
is swept on random selection first, as in the paper) and the target test log-loss is measured.
Every selection and every fine-tune runs in a child process (forked from a server that has
imported torch once), one at a time, and its result is written to the work folder as soon as it
finishes, so an interrupted run resumes where it stopped. Quick mode is the first 3 seeds of full
mode: running full after quick only adds seeds 3 and 4.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.quality import report
from benchmarks.quality.settings import SETTINGS, Setting, build, load_meta

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / ".cache" / "models"
WORK = REPO / ".cache" / "bench-quality"
SEEDS = {"quick": 3, "full": 5}

# The surrogate / selection settings every model-based method shares (engine knobs).
ENGINE = {
    "causal_lm": {
        "rounds": 2,
        "learning_rate": 1e-4,
        "val_lr_factor": 0.1,
        "batch_size": 16,
        "score_fn": "improvement",
        "lora_rank": 8,
        "lora_target_modules": ["q_proj", "v_proj"],
        "max_length": 64,
        "less_projection_dim": 128,
        "min_per_bin": 5,
    },
    "token_classification": {
        "rounds": 2,
        "learning_rate": 1e-4,
        "val_lr_factor": 0.1,
        "batch_size": 16,
        "score_fn": "improvement",
        "lora_rank": 8,
        "lora_target_modules": ["query", "value"],
        "max_length": 64,
        "less_projection_dim": 128,
        "min_per_bin": 5,
    },
}
LR_GRID = {"causal_lm": [3e-4, 1e-3, 3e-3], "token_classification": [1e-4, 3e-4, 1e-3]}
SWEEP_SEEDS = 3

# Selection runs: engine method, variant, and the benchmark methods each run yields.
RUNS = {
    "random": ("random", "A", {"random": None}),
    "uncertainty": ("uncertainty", "A", {"uncertainty": "score+random"}),
    "less": ("less", "A", {"less": None}),
    "tov": ("tov", "A", {"tov_score_random": "score+random", "tov_score_only": "score-only"}),
    "tov_b": ("tov", "B", {"tov_method_b": "score+random"}),
}
METHODS = [
    "random",
    "uncertainty",
    "less",
    "tov_score_only",
    "tov_score_random",
    "tov_method_b",
    "oracle",
]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _context() -> Any:
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "transformers", "peft", "tov_engine.methods"])
    return ctx


def run_child(ctx: Any, fn_name: str, spec: dict[str, Any], out: Path) -> dict[str, Any]:
    """Run benchmarks.quality.jobs.<fn_name>(spec, out) in a child process; return its JSON."""
    from benchmarks.quality import jobs

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".partial.json")
    tmp.unlink(missing_ok=True)
    proc = ctx.Process(target=getattr(jobs, fn_name), args=(spec, str(tmp)))
    proc.start()
    proc.join()
    if proc.exitcode != 0 or not tmp.exists():
        raise RuntimeError(f"{fn_name} failed (exit {proc.exitcode}) for {out.name}")
    data = json.loads(tmp.read_text())
    side = tmp.with_suffix(".npz")  # selection scores, if the job wrote them
    if side.exists():
        side.replace(out.with_suffix(".npz"))
    tmp.replace(out)
    return data


def cached(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def oracle_indices(meta: dict[str, Any], budget: int, seed: int) -> list[int]:
    """Target-like rows first (a seeded sample if more than the budget), then random others."""
    mask = np.asarray(meta["target_mask"], dtype=bool)
    rng = np.random.default_rng([seed, 99])
    target = np.flatnonzero(mask)
    others = np.flatnonzero(~mask)
    take = rng.permutation(target)[:budget]
    fill = rng.permutation(others)[: budget - len(take)]
    return sorted(int(i) for i in np.concatenate([take, fill]))


class Bench:
    def __init__(self, work: Path, threads: int) -> None:
        self.work = work
        self.ctx = _context()
        self.threads = threads
        os.environ["BENCH_THREADS"] = str(threads)

    def folder(self, s: Setting) -> Path:
        return self.work / "records" / f"{s.name}-{s.key()}"

    def data(self, s: Setting) -> Path:
        return build(s, self.work / "data")

    def _ft_spec(self, s: Setting, meta: dict, indices: list[int], seed: int, lr: float) -> dict:
        return {
            "data": str(self.data(s)),
            "task": s.task,
            "model": str(MODELS / s.model),
            "labels": meta["labels"],
            "indices": [int(i) for i in indices],
            "seed": seed,
            "lr": lr,
        }

    def finetune(self, s: Setting, name: str, indices: list[int], seed: int, lr: float) -> dict:
        out = self.folder(s) / f"ft_{name}_s{seed}_lr{lr:g}.json"
        got = cached(out)
        if got is None:
            meta = load_meta(self.data(s))
            spec = self._ft_spec(s, meta, indices, seed, lr)
            got = run_child(self.ctx, "finetune_job", spec, out)
            log(
                f"{s.name} fine-tune {name} seed {seed} lr {lr:g}: test loss "
                f"{got['test_loss']:.4f} ({got['seconds']:.0f}s)"
            )
        return got

    def base_loss(self, s: Setting) -> float:
        return float(self.finetune(s, "base", [], 0, 0.0)["test_loss"])

    def selection(self, s: Setting, run: str, seed: int) -> dict:
        out = self.folder(s) / f"sel_{run}_s{seed}.json"
        got = cached(out)
        if got is None:
            method, variant, strategies = RUNS[run]
            spec = {
                "data": str(self.data(s)),
                "task": s.task,
                "model": str(MODELS / s.model),
                "method": method,
                "variant": variant,
                "seed": seed,
                "budget": s.budget,
                "engine": ENGINE[s.task],
                "strategies": strategies,
            }
            got = run_child(self.ctx, "selection_job", spec, out)
            log(
                f"{s.name} selection {run} seed {seed}: {got['seconds']:.0f}s, "
                f"peak {got['peak_rss_mb']:.0f} MB, disk {got['disk_mb']:.2f} MB"
            )
        return got

    def sweep(self, s: Setting) -> float:
        """LR sweep of the fine-tuning recipe on random selections; returns the best LR."""
        means = {}
        for lr in LR_GRID[s.task]:
            losses = []
            for seed in range(SWEEP_SEEDS):
                idx = self.selection(s, "random", seed)["selections"]["random"]
                losses.append(self.finetune(s, "random", idx, seed, lr)["test_loss"])
            means[lr] = float(np.mean(losses))
        best = min(means, key=means.get)  # type: ignore[arg-type]
        (self.folder(s) / "lr_sweep.json").write_text(
            json.dumps({"grid": {f"{k:g}": v for k, v in means.items()}, "best": best}) + "\n"
        )
        log(f"{s.name} LR sweep (random): {means} -> {best:g}")
        return best

    def prepare(self, s: Setting) -> float:
        """Data, the base model's test loss, and the LR sweep; returns the chosen LR."""
        self.data(s)
        self.base_loss(s)
        return self.sweep(s)

    def run_seed(self, s: Setting, seed: int, lr: float) -> None:
        meta = load_meta(self.data(s))
        picks: dict[str, list[int]] = {}
        for run in RUNS:
            picks.update(self.selection(s, run, seed)["selections"])
        if meta["target_rows"]:
            picks["oracle"] = oracle_indices(meta, s.budget, seed)
        for name in METHODS:
            if name in picks:
                self.finetune(s, name, picks[name], seed, lr)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--mode", choices=sorted(SEEDS), default="quick")
    ap.add_argument("--settings", nargs="*", default=list(SETTINGS), choices=list(SETTINGS))
    ap.add_argument("--work", type=Path, default=WORK)
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: 1 when "
        "the machine is busy, i.e. load average >= 1.5, else 2)",
    )
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args(argv)
    threads = args.threads or (1 if os.getloadavg()[0] >= 1.5 else 2)
    settings = [SETTINGS[n] for n in args.settings]
    bench = Bench(args.work, threads)
    start = time.time()
    if not args.report_only:
        for model in {s.model for s in settings}:
            if not (MODELS / model / "config.json").exists():
                log(
                    f"missing model {model}: run scripts/prepare_model.py {model} "
                    "--dest .cache/models"
                )
                return 2
        log(
            f"mode {args.mode}: {SEEDS[args.mode]} seeds, {threads} torch thread(s), "
            f"load average {os.getloadavg()[0]:.1f}, work folder {args.work}"
        )
        lrs = {s.name: bench.prepare(s) for s in settings}
        for seed in range(SEEDS[args.mode]):  # seed-major: a cut-short run has every setting
            for s in settings:
                bench.run_seed(s, seed, lrs[s.name])
            log(f"seed {seed} done ({time.time() - start:.0f}s)")
            try:
                report.write(bench, settings, args.mode, seed + 1, time.time() - start)
            except Exception as exc:  # a report bug must not stop a long run
                log(f"report failed: {exc!r}")
        log(f"done in {time.time() - start:.0f}s")
    wall = None if args.report_only else time.time() - start
    report.write(bench, settings, args.mode, SEEDS[args.mode], wall)
    return 0


if __name__ == "__main__":
    sys.exit(main())
