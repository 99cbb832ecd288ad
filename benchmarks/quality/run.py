"""Quality benchmark: does the selected subset train a better model? (issue #6)

    python -m benchmarks.quality.run --mode quick     # 3 seeds, smaller settings, < 20 min
    python -m benchmarks.quality.run --mode full      # 10 seeds (make bench-quality)
    python -m benchmarks.quality.run --report-only    # rebuild the report from finished runs
    python -m benchmarks.quality.run --mode full --settings wnut-company   # one setting
    python -m benchmarks.quality.run --engine tagged_reduction='"mean"'   # an engine knob

For every setting (settings.py) and seed, each method selects the same budget from the pool; the
base model is fine-tuned on each selection with one fixed recipe (jobs.RECIPE; its learning rate
is swept on random selection first, as in the paper) and the target test log-loss is measured.
Every selection and every fine-tune runs in a child process (forked from a server that has
imported torch once), one per (setting, seed) task and the mode's `jobs` tasks at once, and its
result is written to the work folder as soon as it finishes, so an interrupted run resumes where
it stopped.

Modes (MODES): full = the settings of settings.SETTINGS, every method, 10 seeds (the paper
reports the mean of 10 runs), the LR sweep;
writes benchmarks/results/quality.{json,md} and quality_*.png. quick = settings.QUICK_SETTINGS
(the same shape with smaller pools and test sets), no uncertainty baseline and no Method B
ablation, 3 seeds, and the learning rates the full run's sweep chose (no sweep); writes
quality-quick.*. A run restricted with --settings/--runs/--engine writes under its own name
(e.g. quality-wnut-company.*), never over the mode's files.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.quality import report
from benchmarks.quality.plan import (
    ENGINE,
    LR_GRID,
    ORACLES,
    RUNS,
    SWEEP_SEEDS,
    methods_of,
    oracle_picks,
)
from benchmarks.quality.settings import QUICK_SETTINGS, SETTINGS, Setting, build, load_meta

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / ".cache" / "models"
WORK = REPO / ".cache" / "bench-quality"

# The learning rates the full run's sweep chose (benchmarks/results/quality.md); quick mode uses
# them instead of sweeping (its fine-tunes take the same number of optimizer steps per epoch).
FULL_RUN_LR = {"wnut-company": 3e-4, "elements-in-pool": 3e-3, "latin-not-in-pool": 1e-3}


@dataclass(frozen=True)
class Mode:
    """What a mode runs: settings, selection runs, seeds, fixed LRs (None: sweep), output name,
    engine overrides (on top of ENGINE) and how many (setting, seed) tasks run at once."""

    settings: dict[str, Setting]
    runs: tuple[str, ...]
    seeds: int
    fixed_lr: dict[str, float] | None
    results: str
    engine: dict[str, Any] = field(default_factory=dict)
    jobs: int = 1


MODES = {
    # Full: two (setting, seed) tasks at once, one torch thread each (as quick).
    "full": Mode(SETTINGS, tuple(RUNS), 10, None, "quality", jobs=2),
    # Quick: LESS warms up for 2 epochs (2 checkpoints) instead of 4, which halves its pool
    # gradients; two (setting, seed) tasks run at once, one torch thread each.
    "quick": Mode(
        QUICK_SETTINGS,
        ("random", "less", "tov"),
        3,
        FULL_RUN_LR,
        "quality-quick",
        engine={"less_epochs": 2},
        jobs=2,
    ),
}
SEEDS = {name: m.seeds for name, m in MODES.items()}


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


class Bench:
    """Runs (or finds) the selections and fine-tunes of one benchmark configuration.

    Args:
        work: the work folder. threads: torch threads per child. runs: the selection runs (keys
        of RUNS). fixed_lr: setting name -> fine-tuning LR (no sweep); None sweeps LR_GRID.
        engine: ENGINE with overrides; records of another engine dict live in another folder.
    """

    def __init__(
        self,
        work: Path,
        threads: int,
        runs: tuple[str, ...] | list[str] = tuple(RUNS),
        fixed_lr: dict[str, float] | None = None,
        engine: dict[str, dict[str, Any]] | None = None,
    ) -> None:
        self.work = work
        self.ctx = _context()
        self.threads = threads
        self.runs = tuple(runs)
        self.methods = methods_of(self.runs)
        self.fixed_lr = fixed_lr
        self.engine = engine if engine is not None else ENGINE
        self.jobs = 1  # tasks run at once (main sets it; the report says so)
        os.environ["BENCH_THREADS"] = str(threads)

    def folder(self, s: Setting) -> Path:
        blob = json.dumps(self.engine[s.task], sort_keys=True).encode()
        engine_key = hashlib.sha256(blob).hexdigest()[:8]
        return self.work / "records" / f"{s.name}-{s.key()}-e{engine_key}"

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
                "engine": self.engine[s.task],
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
        """Data, the base model's test loss, and the LR (sweep, or fixed); returns the LR."""
        self.data(s)
        self.base_loss(s)
        if self.fixed_lr is None:
            return self.sweep(s)
        lr = float(self.fixed_lr[s.name])
        self.folder(s).mkdir(parents=True, exist_ok=True)
        (self.folder(s) / "lr_sweep.json").write_text(
            json.dumps({"grid": {}, "best": lr, "fixed": True}) + "\n"
        )
        return lr

    def run_seed(self, s: Setting, seed: int, lr: float) -> None:
        meta = load_meta(self.data(s))
        picks: dict[str, list[int]] = {}
        for run in self.runs:
            picks.update(self.selection(s, run, seed)["selections"])
        if meta["target_rows"]:
            for name in ORACLES:
                picks[name] = oracle_picks(name, meta, s.budget, seed)
        for name in self.methods:
            if name in picks:
                self.finetune(s, name, picks[name], seed, lr)


def _engine(overrides: list[str], base: dict[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """ENGINE with the mode's knobs (`base`) and KEY=JSON overrides applied to every task."""
    engine = {task: {**knobs, **(base or {})} for task, knobs in ENGINE.items()}
    for item in overrides:
        key, _, value = item.partition("=")
        for knobs in engine.values():
            knobs[key] = json.loads(value)
    return engine


def results_name(mode: str, settings: list[str], runs: list[str], overrides: list[str]) -> str:
    """The output stem: the mode's, plus what restricts or changes the run (so a partial or
    altered run never overwrites the mode's files)."""
    m = MODES[mode]
    parts = [m.results]
    if sorted(settings) != sorted(m.settings):
        parts += settings
    if tuple(runs) != m.runs:
        parts.append("runs_" + "_".join(runs))
    parts += ["".join(c if c.isalnum() or c in "._" else "_" for c in o) for o in overrides]
    return "-".join(parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--mode", choices=sorted(MODES), default="quick")
    ap.add_argument(
        "--settings", nargs="*", default=None, choices=list(SETTINGS), help="default: all"
    )
    ap.add_argument(
        "--runs", nargs="*", default=None, choices=list(RUNS), help="default: the mode's runs"
    )
    ap.add_argument(
        "--engine",
        nargs="*",
        default=[],
        metavar="KEY=JSON",
        help="override an ENGINE knob for every task, e.g. tagged_reduction='\"mean\"'",
    )
    ap.add_argument("--results-name", default=None, help="output stem (default: see results_name)")
    ap.add_argument("--work", type=Path, default=WORK)
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads per task (default: 1 when tasks run in parallel or the machine "
        "is busy, i.e. load average >= 1.5, else 2)",
    )
    ap.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="(setting, seed) tasks run at once (default: the mode's)",
    )
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args(argv)
    mode = MODES[args.mode]
    names = args.settings or list(mode.settings)
    runs = args.runs or list(mode.runs)
    jobs = max(1, args.jobs or mode.jobs)
    threads = args.threads or (1 if jobs > 1 or os.getloadavg()[0] >= 1.5 else 2)
    settings = [mode.settings[n] for n in names]
    name = args.results_name or results_name(args.mode, names, runs, args.engine)
    bench = Bench(args.work, threads, runs, mode.fixed_lr, _engine(args.engine, mode.engine))
    bench.jobs = jobs
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
            f"mode {args.mode}: {mode.seeds} seeds, runs {runs}, {jobs} task(s) at once, "
            f"{threads} torch thread(s) each, load average {os.getloadavg()[0]:.1f}, "
            f"work folder {args.work}, results {name}"
        )

        def partial_report(seeds_done: int) -> None:
            try:
                wall = time.time() - start
                report.write(bench, settings, args.mode, seeds_done, wall, name=name)
            except Exception as exc:  # a report bug must not stop a long run
                log(f"report failed: {exc!r}")

        if jobs == 1:
            lrs = {s.name: bench.prepare(s) for s in settings}
            for seed in range(mode.seeds):  # seed-major: a cut-short run has every setting
                for s in settings:
                    bench.run_seed(s, seed, lrs[s.name])
                log(f"seed {seed} done ({time.time() - start:.0f}s)")
                partial_report(seed + 1)
        else:  # (setting, seed) tasks, `jobs` at once, the costliest (causal LM) first
            with ThreadPoolExecutor(max_workers=jobs) as pool:  # data, base loss, LR sweep
                lrs = dict(zip(names, pool.map(bench.prepare, settings), strict=True))
            order = sorted(settings, key=lambda s: (s.task != "causal_lm", s.name))
            tasks = [(s, seed) for s in order for seed in range(mode.seeds)]

            def one(task: tuple[Setting, int]) -> None:
                s, seed = task
                bench.run_seed(s, seed, lrs[s.name])
                log(f"{s.name} seed {seed} done ({time.time() - start:.0f}s)")

            with ThreadPoolExecutor(max_workers=jobs) as pool:
                for future in [pool.submit(one, t) for t in tasks]:
                    future.result()
        log(f"done in {time.time() - start:.0f}s")
    wall = None if args.report_only else time.time() - start
    report.write(bench, settings, args.mode, mode.seeds, wall, name=name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
