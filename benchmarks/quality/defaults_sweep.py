"""The defaults sweep: ToV's knobs chosen by validation rows only, never by test rows.

Each setting's validation set is split in two halves (stratified by `subtask` where rows carry
one): ToV selects with the first half, and the held-out second half plays the test set. The
setting's real test rows are never read. Every engine configuration of the grid runs one ToV
selection per seed, from whose scores the three strategies and score-only in one length bin are
taken (plan.RUNS["tov_all"]); each is fine-tuned with the benchmark's recipe and scored by the
held-out half's loss, paired by seed with random selection of the same size.

    python -m benchmarks.quality.defaults_sweep                       # every large setting
    python -m benchmarks.quality.defaults_sweep --settings elements-2pct --seeds 1 \\
        --configs bench lr2x

Writes benchmarks/results/defaults-sweep.{json,md}; the records cache in the work folder (a cut
run resumes). Sized for the 2 cores: one (setting, config, seed) costs one ToV run and five
fine-tunes (about 10 CPU-minutes for a causal-LM setting, 4 for NER).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.quality.plan import RUNS
from benchmarks.quality.report import LABELS, paired, score_auc
from benchmarks.quality.run import LARGE_LR, Bench, _engine, log
from benchmarks.quality.settings import LARGE_SETTINGS, Setting, load_meta

RESULTS = Path(__file__).resolve().parents[1] / "results"
WORK = Path(__file__).resolve().parents[2] / ".cache" / "defaults-sweep"
# Engine configurations on top of the large benchmark's engine (plan.ENGINE with its overrides):
# the learning rate, the rounds and |U| (base_size; default n/2, half the budget: 50 here).
CONFIGS: dict[str, dict[str, Any]] = {
    "bench": {},
    "lr2x": {"learning_rate": 2e-4},
    "rounds1": {"rounds": 1},
    "lr2x-rounds1": {"learning_rate": 2e-4, "rounds": 1},
    "U2": {"base_size": 2},
    # the service's own rule for L, clamp(16384 // |U|, 1, 8): 8 rounds at these budgets (|U| 50)
    "rounds-rule": {"rounds": None},
}
# What each ToV run yields (strategies and the one-bin rule), from the same scores.
TOV_METHODS = tuple(RUNS["tov_all"][2])
SPLIT_SEED = 0


def split_validation(data: Path, out: Path, seed: int = SPLIT_SEED) -> Path:
    """A copy of a setting's data folder whose validation set is the first half of the real one
    and whose test set is the second half (stratified by `subtask`); the real test set is not
    copied. Deterministic for the seed; an existing copy is reused."""
    if (out / "meta.json").exists():
        return out
    rows = [json.loads(line) for line in (data / "validation.jsonl").read_text().splitlines()]
    groups: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(str(row.get("subtask", "")), []).append(i)
    rng = random.Random(seed)
    select, held = [], []
    for key in sorted(groups):
        members = groups[key][:]
        rng.shuffle(members)
        half = len(members) // 2
        select += members[:half]
        held += members[half:]
    if not select or not held:
        raise ValueError(f"{data}: {len(rows)} validation rows cannot be split in two halves")
    tmp = out.with_name(out.name + ".writing")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shutil.copyfile(data / "pool.jsonl", tmp / "pool.jsonl")
    for name, part in (("validation.jsonl", select), ("test.jsonl", held)):
        (tmp / name).write_text("".join(json.dumps(rows[i]) + "\n" for i in sorted(part)))
    meta = json.loads((data / "meta.json").read_text())
    meta["validation_split"] = {"seed": seed, "selection_rows": sorted(select), "held_out": held}
    (tmp / "meta.json").write_text(json.dumps(meta))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return out


class SplitBench(Bench):
    """A Bench over the validation-split copies of the settings' data (the held-out half is its
    test set). `shared`: the bench whose pool embeddings this one reuses (they depend on the pool
    and the model only)."""

    def __init__(self, *args: Any, shared: Bench | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.shared = shared

    def data(self, s: Setting) -> Path:
        real = super().data(s)
        return split_validation(real, self.work / "split" / real.name)

    def embeddings(self, s: Setting) -> Path | None:
        return self.shared.embeddings(s) if self.shared else super().embeddings(s)


def _held_out_loss(bench: Bench, s: Setting, method: str, seed: int, lr: float) -> float | None:
    path = bench.folder(s) / f"ft_{method}_s{seed}_lr{lr:g}.json"
    return float(json.loads(path.read_text())["test_loss"]) if path.exists() else None


def score_signal(bench: Bench, s: Setting, seeds: int) -> dict[str, Any]:
    """How the configuration's ToV scores find the pool's target-like rows (known by the
    setting's construction; no test row is read): the scores' AUC and each method's target rows
    picked, means over the seeds that ran. Empty where the pool holds no target-like row."""
    mask = np.asarray(load_meta(bench.data(s))["target_mask"], dtype=bool)
    if not mask.any():
        return {}
    aucs: list[float] = []
    picked: dict[str, list[int]] = {}
    for seed in range(seeds):
        record, scores = (bench.folder(s) / f"sel_tov_all_s{seed}.{x}" for x in ("json", "npz"))
        if not record.exists() or not scores.exists():
            continue
        if (auc := score_auc(np.load(scores)["scores"], mask)) is not None:
            aucs.append(auc)
        for method, idx in json.loads(record.read_text())["selections"].items():
            picked.setdefault(method, []).append(int(mask[idx].sum()))
    return {
        "target_rows": int(mask.sum()),
        "score_auc": float(np.mean(aucs)) if aucs else None,
        "target_picked": {m: float(np.mean(v)) for m, v in picked.items()},
    }


def collect(benches: dict[str, Bench], settings: list[Setting], seeds: int) -> list[dict[str, Any]]:
    """Per setting and configuration: each ToV method's held-out loss per seed and its paired
    difference with random (random's fine-tunes are shared by every configuration), with the
    configuration's score signal (`score_signal`)."""
    reference = benches[next(iter(benches))]
    rows = []
    for s in settings:
        lr = LARGE_LR[s.name]
        rand = {
            seed: loss
            for seed in range(seeds)
            if (loss := _held_out_loss(reference, s, "random", seed, lr)) is not None
        }
        for config, bench in benches.items():
            signal = score_signal(bench, s, seeds)
            for method in TOV_METHODS:
                mine = {
                    seed: loss
                    for seed in range(seeds)
                    if (loss := _held_out_loss(bench, s, method, seed, lr)) is not None
                }
                p = paired(rand, mine)
                rows.append(
                    {
                        "setting": s.name,
                        "config": config,
                        "engine": CONFIGS[config],
                        "method": method,
                        "held_out_loss_mean": float(np.mean(list(mine.values()))) if mine else None,
                        "random_loss_mean": float(np.mean(list(rand.values()))) if rand else None,
                        "paired_vs_random": p,
                        "target_rows": signal.get("target_rows"),
                        "score_auc": signal.get("score_auc"),
                        "target_picked": signal.get("target_picked", {}).get(method),
                    }
                )
    return rows


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (configuration, method): the mean % vs random over the settings where it ran, and in
    how many settings it was ahead of random; best first."""
    by: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        if r["paired_vs_random"]:
            by.setdefault((r["config"], r["method"]), []).append(r)
    out = [
        {
            "config": config,
            "method": method,
            "settings": len(rs),
            "mean_pct_vs_random": float(
                np.mean([r["paired_vs_random"]["improvement_pct_mean"] for r in rs])
            ),
            "ahead_of_random": sum(r["paired_vs_random"]["diff_mean"] > 0 for r in rs),
        }
        for (config, method), rs in by.items()
    ]
    return sorted(out, key=lambda x: -x["mean_pct_vs_random"])


def _signal_table(
    cells: dict[tuple[str, str, str], dict[str, Any]], settings: list[Setting], configs: list[str]
) -> list[str]:
    """The score-signal table: AUC and target rows picked, per setting with target-like rows."""
    lines = [
        "",
        "Score signal (seed mean): how each configuration's scores find the pool's target-like "
        "rows, known by the setting's construction (no test row is read). AUC: a target row "
        "outscores another scored row (0.5 = no signal); picks: target rows in the selection.",
        "",
        "| setting | config | target rows | score AUC | "
        + " | ".join(f"picks: {LABELS[m]}" for m in TOV_METHODS)
        + " |",
        "|---|---|---|---|" + "---|" * len(TOV_METHODS),
    ]
    for s in settings:
        for config in configs:
            first = cells.get((s.name, config, TOV_METHODS[0]))
            if not first or not first["target_rows"] or first["score_auc"] is None:
                continue
            picks = [cells[(s.name, config, m)]["target_picked"] for m in TOV_METHODS]
            lines.append(
                f"| {s.name} | {config} | {first['target_rows']} | {first['score_auc']:.3f} | "
                + " | ".join("—" if p is None else f"{p:.1f}" for p in picks)
                + " |"
            )
    return lines


def write(
    rows: list[dict[str, Any]],
    settings: list[Setting],
    seeds: int,
    wall: float | None,
    out_dir: Path | None = None,
    name: str = "defaults-sweep",
) -> None:
    """defaults-sweep.{json,md}: every cell, then the ranking over settings."""
    ranked = summary(rows)
    configs = {c: CONFIGS[c] for c in dict.fromkeys(r["config"] for r in rows)}
    payload: dict[str, Any] = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seeds": seeds,
        "wall_seconds": wall,
        "split_seed": SPLIT_SEED,
        "configs": configs,
        "cells": rows,
        "ranking": ranked,
    }
    out_dir = out_dir or RESULTS
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    md = [
        "# Defaults sweep (validation rows only)",
        "",
        f"Generated {payload['generated_at']} by `python -m benchmarks.quality.defaults_sweep`; "
        f"{seeds} seed(s)" + (f", {wall / 60:.0f} min wall" if wall else "") + ". ToV selects "
        "with one half of each setting's validation rows; the loss is the other half's after "
        "fine-tuning on the selection (the test rows are never read). % vs random paired by seed "
        "(± SE over seeds where there are two or more).",
        "",
        "| setting | config | engine | random | "
        + " | ".join(LABELS[m] for m in TOV_METHODS)
        + " |",
        "|---|---|---|---|" + "---|" * len(TOV_METHODS),
    ]
    cells = {(r["setting"], r["config"], r["method"]): r for r in rows}
    for s in settings:
        for config in configs:
            rand = next((r["random_loss_mean"] for r in rows if r["setting"] == s.name), None)
            out = ["—" if rand is None else f"{rand:.3f}"]
            for m in TOV_METHODS:
                r = cells.get((s.name, config, m))
                p = r["paired_vs_random"] if r else None
                if not r or not p:
                    out.append("—")
                    continue
                se = p["improvement_pct_se"]
                out.append(
                    f"{r['held_out_loss_mean']:.3f} ({p['improvement_pct_mean']:+.1f}%"
                    + (f" ± {se:.1f}" if se is not None else "")
                    + ")"
                )
            md.append(
                f"| {s.name} | {config} | `{json.dumps(CONFIGS[config])}` | "
                + " | ".join(out)
                + " |"
            )
    md += _signal_table(cells, settings, list(configs))
    md += [
        "",
        "Ranking over settings (mean % vs random; settings where ahead of random):",
        "",
        "| config | method | mean % vs random | ahead in |",
        "|---|---|---|---|",
        *(
            f"| {x['config']} | {LABELS[x['method']]} | {x['mean_pct_vs_random']:+.1f}% | "
            f"{x['ahead_of_random']} of {x['settings']} |"
            for x in ranked
        ),
        "",
    ]
    (out_dir / f"{name}.md").write_text("\n".join(md))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--settings", nargs="*", default=list(LARGE_SETTINGS), choices=LARGE_SETTINGS)
    ap.add_argument("--configs", nargs="*", default=list(CONFIGS), choices=list(CONFIGS))
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--jobs", type=int, default=2, help="(setting, config, seed) tasks at once")
    ap.add_argument("--work", type=Path, default=WORK)
    ap.add_argument("--results-name", default="defaults-sweep")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args(argv)
    settings = [LARGE_SETTINGS[n] for n in args.settings]
    configs = list(dict.fromkeys(args.configs))
    base = {"less_epochs": 1}  # large mode's engine (run.MODES["large"].engine)
    first: Bench | None = None
    benches: dict[str, Bench] = {}
    for config in configs:
        overrides = [f"{k}={json.dumps(v)}" for k, v in CONFIGS[config].items()]
        runs = ("random", "tov_all") if first is None else ("tov_all",)
        bench = SplitBench(
            args.work, 1, runs, LARGE_LR, _engine(overrides, base), oracles=(), shared=first
        )
        benches[config] = bench
        first = first or bench
    start = time.time()
    if not args.report_only:
        log(f"defaults sweep: {settings=} {configs=} seeds {args.seeds}, {args.jobs} at once")
        for s in settings:  # data, splits, base loss and the shared embeddings, one at a time
            for b in benches.values():
                b.prepare(s)
        tasks = [
            (s, b, seed) for seed in range(args.seeds) for s in settings for b in benches.values()
        ]

        report_lock = threading.Lock()

        def one(task: tuple[Setting, Bench, int]) -> None:
            s, bench, seed = task
            bench.run_seed(s, seed, LARGE_LR[s.name], oracles=False)
            with report_lock:  # a partial report after every task (a cut run keeps its cells)
                rows = collect(benches, settings, args.seeds)
                write(rows, settings, args.seeds, None, name=args.results_name)

        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            for future in [pool.submit(one, t) for t in tasks]:
                future.result()
        log(f"defaults sweep done in {time.time() - start:.0f}s")
    wall: float | None = time.time() - start
    if args.report_only:  # keep the last run's wall time, if its results are there
        last = RESULTS / f"{args.results_name}.json"
        wall = json.loads(last.read_text()).get("wall_seconds") if last.exists() else None
    write(
        collect(benches, settings, args.seeds), settings, args.seeds, wall, name=args.results_name
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
