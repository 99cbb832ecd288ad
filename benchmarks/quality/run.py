"""Quality benchmark: does the selected subset train a better model? (issue #6)

    python -m benchmarks.quality.run --mode quick     # 3 seeds, smaller settings, < 20 min
    python -m benchmarks.quality.run --mode full      # 10 seeds (make bench-quality)
    python -m benchmarks.quality.run --mode large     # 2,000-row pools, 3 seeds (make
                                                      #   bench-quality-large, < 120 min)
    python -m benchmarks.quality.run --mode large --settings elements-2pct --seeds 1  # sizing
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
quality-quick.*. large = settings.LARGE_SETTINGS (2,000-row pools, budgets of 100: target-like
rows 2% of the pool, none, two target tasks in one pool, NER), random, uncertainty, LESS, RDS+,
ToV score+random / score-only / score+diverse (one ToV run) and the oracle, 3 seeds, fixed
learning rates (LARGE_LR), LESS with one warmup checkpoint; writes quality-large.*. A run
restricted with --settings/--runs/--engine/--seeds writes under its own name (e.g.
quality-wnut-company.*), never over the mode's files.

A child that fails leaves its traceback (and, for a crash in C code or a fatal signal, the
faulthandler dump of every thread) in the log; it is retried once, and a child whose result file
is whole but whose exit code is not 0 (a crash at interpreter teardown) has its result accepted
with a warning (run_child).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import os
import shutil
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.quality import child, report
from benchmarks.quality.plan import (
    ENGINE,
    LR_GRID,
    ORACLES,
    RUNS,
    SEED_FREE_RUNS,
    SWEEP_SEEDS,
    methods_of,
    needs_embeddings,
    oracle_picks,
)
from benchmarks.quality.settings import (
    ALL_SETTINGS,
    LARGE_SETTINGS,
    QUICK_SETTINGS,
    SETTINGS,
    Setting,
    build,
    load_meta,
)

REPO = Path(__file__).resolve().parents[2]
MODELS = REPO / ".cache" / "models"
WORK = REPO / ".cache" / "bench-quality"

# The learning rates the full run's sweep chose (benchmarks/results/quality.md); quick mode uses
# them instead of sweeping (its fine-tunes take the same number of optimizer steps per epoch).
FULL_RUN_LR = {"wnut-company": 3e-4, "elements-in-pool": 3e-3, "latin-not-in-pool": 1e-3}
# Large mode's fixed learning rates (no sweep). A 100-row budget takes 75 optimizer steps (causal
# LM, batch 4, 3 epochs) or 78 (NER, batch 8, 6 epochs), about 12x the full run's; the causal-LM
# rate is the full run's choice where the budget was largest (latin, 1e-3; the engine's verify
# recipe uses the same) rather than elements' 3e-3 (6 steps); NER keeps the full run's 3e-4.
LARGE_LR = {
    "elements-2pct": 1e-3,
    "latin-none": 1e-3,
    "capitals-latin-multi": 1e-3,
    "wnut-company-large": 3e-4,
}
# Times a failed child is started again before the run stops (run_child).
CHILD_RETRIES = 1


@dataclass(frozen=True)
class Mode:
    """What a mode runs: settings, selection runs, seeds, fixed LRs (None: sweep), output name,
    engine overrides (on top of ENGINE), how many (setting, seed) tasks run at once, and the
    oracles fine-tuned where a pool holds target-like rows."""

    settings: dict[str, Setting]
    runs: tuple[str, ...]
    seeds: int
    fixed_lr: dict[str, float] | None
    results: str
    engine: dict[str, Any] = field(default_factory=dict)
    jobs: int = 1
    oracles: tuple[str, ...] = ORACLES
    # Run each (setting, seed) as two tasks: the ToV runs with their fine-tunes, and the other
    # runs with theirs and the oracles' (Bench.parts): halves of similar cost balance two workers.
    split_tov: bool = False


MODES = {
    # Full: two (setting, seed) tasks at once, one torch thread each (as quick).
    "full": Mode(
        SETTINGS, ("random", "uncertainty", "less", "tov", "tov_b"), 10, None, "quality", jobs=2
    ),
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
    # Large: 2,000-row pools, budgets of 100; every baseline, RDS+, ToV's three strategies from
    # one run, the oracle (not oracle half + random); LESS warms up for 1 epoch (1 checkpoint: its
    # pool gradients dominate its cost); two (setting, seed) tasks at once, one torch thread each.
    # Sized by measurement (benchmarks/quality/README.md, "Large mode").
    "large": Mode(
        LARGE_SETTINGS,
        ("random", "uncertainty", "less", "rds", "tov_all"),
        3,
        LARGE_LR,
        "quality-large",
        engine={"less_epochs": 1},
        jobs=2,
        oracles=("oracle",),
        split_tov=True,
    ),
}
SEEDS = {name: m.seeds for name, m in MODES.items()}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def _context() -> Any:
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "transformers", "peft", "tov_engine.methods"])
    return ctx


class ChildFailed(RuntimeError):
    """A benchmark child failed on every try; the message holds its traceback."""


def _whole_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in `path`, or None when the file is missing, cut short or not an object
    (the jobs write their result atomically, so a file that parses is the whole result)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _evidence(error_file: Path, fault_log: Path) -> str:
    """What a failed child left: the traceback it wrote, and faulthandler's dump if any."""
    parts = []
    for path, title in ((error_file, ""), (fault_log, "faulthandler output:\n")):
        text = path.read_text(errors="replace").strip() if path.exists() else ""
        if text:
            parts.append(title + text)
    return "\n".join(parts)


def run_child(
    ctx: Any,
    fn_name: str,
    spec: dict[str, Any],
    out: Path,
    *,
    module: str = "benchmarks.quality.jobs",
    retries: int | None = None,
) -> dict[str, Any]:
    """Run <module>.<fn_name>(spec, partial_path) in a child process; return its JSON, which is
    then stored at `out` (and a side .npz the job wrote next to it at out's .npz).

    The child runs under child.run_wrapped: an exception's traceback goes to a side file and
    faulthandler writes to a per-child log, both printed here when the child fails. A failed child
    is started again `retries` times (default CHILD_RETRIES); a child whose result file is whole
    but whose exit code is not 0 (a crash at interpreter teardown, after the job finished) has its
    result accepted with a warning. Raises ChildFailed, with the last traceback, when every try
    failed."""
    retries = CHILD_RETRIES if retries is None else retries
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.stem + ".partial.json")
    side = tmp.with_suffix(".npz")  # selection scores / embeddings, if the job wrote them
    error_file = out.with_name(out.stem + ".error.txt")
    fault_log = out.with_name(out.stem + ".fault.log")
    data: dict[str, Any] | None = None
    for attempt in range(1, retries + 2):
        writing = tmp.with_name(tmp.name + ".writing")  # a result cut short (jobs._write_result)
        for path in (tmp, side, error_file, fault_log, writing):
            path.unlink(missing_ok=True)
        proc = ctx.Process(
            target=child.run_wrapped,
            args=(module, fn_name, spec, str(tmp), str(fault_log), str(error_file)),
        )
        proc.start()
        proc.join()
        data = _whole_json(tmp)
        evidence = _evidence(error_file, fault_log)
        if data is not None:
            if proc.exitcode != 0:
                log(
                    f"WARNING: {fn_name} for {out.name} exited {proc.exitcode} after writing its "
                    "whole result; accepting the result"
                    + (f". What the child left:\n{evidence}" if evidence else "")
                )
            break
        what = (
            f"{fn_name} failed (exit {proc.exitcode}) for {out.name}, "
            f"try {attempt} of {retries + 1}"
        )
        detail = evidence or "(no traceback: the child died without raising; see stderr above)"
        log(f"{what}:\n{detail}")
        if attempt > retries:
            raise ChildFailed(f"{what}:\n{detail}")
        log(f"retrying {fn_name} for {out.name}")
    assert data is not None
    if side.exists():
        side.replace(out.with_suffix(".npz"))
    tmp.replace(out)
    error_file.unlink(missing_ok=True)
    if fault_log.exists() and not fault_log.read_text(errors="replace").strip():
        fault_log.unlink()  # kept only when faulthandler wrote something
    return data


def cached(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


class Bench:
    """Runs (or finds) the selections and fine-tunes of one benchmark configuration.

    Args:
        work: the work folder. threads: torch threads per child. runs: the selection runs (keys
        of RUNS). fixed_lr: setting name -> fine-tuning LR (no sweep); None sweeps LR_GRID.
        engine: ENGINE with overrides; records of another engine dict live in another folder.
        oracles: the ORACLES fine-tuned where the pool holds target-like rows.
    """

    def __init__(
        self,
        work: Path,
        threads: int,
        runs: tuple[str, ...] | list[str] = tuple(RUNS),
        fixed_lr: dict[str, float] | None = None,
        engine: dict[str, dict[str, Any]] | None = None,
        oracles: tuple[str, ...] = ORACLES,
    ) -> None:
        self.work = work
        self.ctx = _context()
        self.threads = threads
        self.runs = tuple(runs)
        self.oracles = tuple(oracles)
        self.methods = methods_of(self.runs, self.oracles)
        self.fixed_lr = fixed_lr
        self.engine = engine if engine is not None else ENGINE
        self.jobs = 1  # tasks run at once (main sets it; the report says so)
        os.environ["BENCH_THREADS"] = str(threads)
        # One lock per result file: tasks running at once never compute the same file twice
        # (a seed-free run's later seeds wait for seed 0's selection).
        self._locks: dict[Path, threading.Lock] = {}
        self._locks_guard = threading.Lock()

    def _lock(self, path: Path) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(path, threading.Lock())

    def parts(self, split: bool) -> list[tuple[str, ...]]:
        """The runs of one (setting, seed), as one task or (split) two: the ToV runs, then the
        others (whose task also fine-tunes the oracles)."""
        tov = tuple(r for r in self.runs if RUNS[r][0] == "tov")
        rest = tuple(r for r in self.runs if r not in tov)
        return [p for p in (tov, rest) if p] if split else [self.runs]

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
        with self._lock(out):
            return self._finetune(s, name, indices, seed, lr, out)

    def _finetune(
        self, s: Setting, name: str, indices: list[int], seed: int, lr: float, out: Path
    ) -> dict:
        got = cached(out)
        if got is None:
            meta = load_meta(self.data(s))
            spec = self._ft_spec(s, meta, indices, seed, lr)
            got = run_child(self.ctx, "finetune_job", spec, out)
            log(
                f"{s.name} fine-tune {name} seed {seed} lr {lr:g}: test loss "
                f"{got['test_loss']:.4f} ({got['seconds']:.0f}s, cpu {got['cpu_seconds']:.0f}s)"
            )
        return got

    def base_loss(self, s: Setting) -> float:
        return float(self.finetune(s, "base", [], 0, 0.0)["test_loss"])

    def embeddings(self, s: Setting) -> Path | None:
        """The pool's frozen-model embeddings (one embed_job per setting, seed-independent) when
        a run derives score+diverse; the .npz path, or None."""
        if not needs_embeddings(self.runs):
            return None
        out = self.folder(s) / "embed.json"
        with self._lock(out):
            self._embed(s, out)
        return out.with_suffix(".npz")

    def _embed(self, s: Setting, out: Path) -> None:
        if cached(out) is None:
            spec = {
                "data": str(self.data(s)),
                "task": s.task,
                "model": str(MODELS / s.model),
                "engine": self.engine[s.task],
            }
            got = run_child(self.ctx, "embed_job", spec, out)
            log(
                f"{s.name} pool embeddings ({got['rows']} x {got['dim']}): {got['seconds']:.0f}s, "
                f"cpu {got['cpu_seconds']:.0f}s, peak {got['peak_rss_mb']:.0f} MB"
            )

    def selection_spec(self, s: Setting, run: str, seed: int) -> dict[str, Any]:
        """What jobs.selection_job needs for one selection run of a setting and seed."""
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
        if any(v == "score+diverse" for v in strategies.values()):
            spec["embeddings"] = str(self.embeddings(s))
        return spec

    def selection(self, s: Setting, run: str, seed: int) -> dict:
        out = self.folder(s) / f"sel_{run}_s{seed}.json"
        with self._lock(out):
            return self._selection(s, run, seed, out)

    def _selection(self, s: Setting, run: str, seed: int, out: Path) -> dict:
        got = cached(out)
        if got is None and run in SEED_FREE_RUNS and seed > 0:
            # the same selection for every seed (plan.SEED_FREE_RUNS): seed 0's, recorded as such
            got = {**self.selection(s, run, 0), "reused_from_seed": 0}
            side = out.with_name(f"sel_{run}_s0.npz")
            if side.exists():
                shutil.copyfile(side, out.with_suffix(".npz"))
            out.write_text(json.dumps(got) + "\n")
            log(f"{s.name} selection {run} seed {seed}: seed 0's (seed-independent)")
        if got is None:
            got = run_child(self.ctx, "selection_job", self.selection_spec(s, run, seed), out)
            log(
                f"{s.name} selection {run} seed {seed}: {got['seconds']:.0f}s, "
                f"cpu {got['cpu_seconds']:.0f}s, peak {got['peak_rss_mb']:.0f} MB, "
                f"disk {got['disk_mb']:.2f} MB"
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
        """Data, the base model's test loss, the pool embeddings (if a run needs them) and the
        LR (sweep, or fixed); returns the LR."""
        self.data(s)
        self.base_loss(s)
        self.embeddings(s)
        if self.fixed_lr is None:
            return self.sweep(s)
        lr = float(self.fixed_lr[s.name])
        self.folder(s).mkdir(parents=True, exist_ok=True)
        (self.folder(s) / "lr_sweep.json").write_text(
            json.dumps({"grid": {}, "best": lr, "fixed": True}) + "\n"
        )
        return lr

    def run_seed(
        self,
        s: Setting,
        seed: int,
        lr: float,
        runs: tuple[str, ...] | None = None,
        oracles: bool = True,
    ) -> None:
        """Select with `runs` (default: all of the bench's) for one seed and fine-tune on every
        selection; the oracles too (where the pool holds target-like rows) unless told not."""
        meta = load_meta(self.data(s))
        picks: dict[str, list[int]] = {}
        for run in runs or self.runs:
            picks.update(self.selection(s, run, seed)["selections"])
        if meta["target_rows"] and oracles:
            for name in self.oracles:
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


def results_name(
    mode: str,
    settings: list[str],
    runs: list[str],
    overrides: list[str],
    seeds: int | None = None,
) -> str:
    """The output stem: the mode's, plus what restricts or changes the run (so a partial or
    altered run never overwrites the mode's files)."""
    m = MODES[mode]
    parts = [m.results]
    if sorted(settings) != sorted(m.settings):
        parts += settings
    if tuple(runs) != m.runs:
        parts.append("runs_" + "_".join(runs))
    if seeds is not None and seeds != m.seeds:
        parts.append(f"seeds{seeds}")
    parts += ["".join(c if c.isalnum() or c in "._" else "_" for c in o) for o in overrides]
    return "-".join(parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--mode", choices=sorted(MODES), default="quick")
    ap.add_argument(
        "--settings",
        nargs="*",
        default=None,
        choices=list(ALL_SETTINGS),
        help="default: all of the mode's",
    )
    ap.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1 (default: the mode's)")
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
    unknown = [n for n in names if n not in mode.settings]
    if unknown:
        ap.error(f"mode {args.mode} has no setting {unknown}; it has {list(mode.settings)}")
    runs = args.runs or list(mode.runs)
    seeds = args.seeds or mode.seeds
    jobs = max(1, args.jobs or mode.jobs)
    threads = args.threads or (1 if jobs > 1 or os.getloadavg()[0] >= 1.5 else 2)
    settings = [mode.settings[n] for n in names]
    name = args.results_name or results_name(args.mode, names, runs, args.engine, seeds)
    bench = Bench(
        args.work,
        threads,
        runs,
        mode.fixed_lr,
        _engine(args.engine, mode.engine),
        oracles=mode.oracles,
    )
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
            f"mode {args.mode}: {seeds} seeds, runs {runs}, {jobs} task(s) at once, "
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
            for seed in range(seeds):  # seed-major: a cut-short run has every setting
                for s in settings:
                    bench.run_seed(s, seed, lrs[s.name])
                log(f"seed {seed} done ({time.time() - start:.0f}s)")
                partial_report(seed + 1)
        else:  # (setting, seed) tasks, `jobs` at once, the costliest (causal LM) first
            with ThreadPoolExecutor(max_workers=jobs) as pool:  # data, base loss, LR sweep
                lrs = dict(zip(names, pool.map(bench.prepare, settings), strict=True))
            order = sorted(settings, key=lambda s: (s.task != "causal_lm", s.name))
            parts = bench.parts(mode.split_tov)
            tasks = [(s, seed, p) for s in order for seed in range(seeds) for p in parts]

            def one(task: tuple[Setting, int, tuple[str, ...]]) -> None:
                s, seed, part = task
                bench.run_seed(s, seed, lrs[s.name], part, oracles=part == parts[-1])
                what = "" if len(parts) == 1 else f" ({', '.join(part)})"
                log(f"{s.name} seed {seed}{what} done ({time.time() - start:.0f}s)")

            with ThreadPoolExecutor(max_workers=jobs) as pool:
                for future in [pool.submit(one, t) for t in tasks]:
                    future.result()
        log(f"done in {time.time() - start:.0f}s")
    wall = None if args.report_only else time.time() - start
    report.write(bench, settings, args.mode, seeds, wall, name=name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
