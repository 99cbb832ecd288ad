"""Aggregate the finished runs into benchmarks/results/<name>.{json,md} and PNG plots.

<name> is "quality" for the full run, "quality-quick" for quick mode, "quality-large" for large
mode (run.results_name).

Per method: test loss (mean ± std over seeds), % lower than random paired by seed with the
standard error of the paired difference (SE = sd of the per-seed differences / sqrt(seeds)),
selection time and the selection child's peak RSS. Per setting: whether the best of ToV's
strategies is ahead of random by more than one SE of its paired difference."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.quality.plan import (
    ENGINE,
    LR_GRID,
    METHODS,
    ORACLES,
    RUNS,
    SWEEP_SEEDS,
    TOV_STRATEGIES,
    oracle_picks,
    run_of,
)

RESULTS = Path(__file__).resolve().parents[1] / "results"
LABELS = {
    "random": "random",
    "uncertainty": "uncertainty",
    "less": "LESS",
    "rds": "RDS+",
    "tov_score_only": "ToV score-only",
    "tov_score_random": "ToV score+random (A)",
    "tov_score_diverse": "ToV score+diverse",
    "tov_score_only_1bin": "ToV score-only, 1 length bin",
    "tov_method_b": "ToV Method B",
    "oracle": "oracle",
    "oracle_half": "oracle half + random",
}
# Methods whose selection also needs the pool's embeddings (jobs.embed_job, once per setting):
# their selection time adds that job's, their peak RSS is the larger of the two children's.
USES_EMBEDDINGS = ("tov_score_diverse",)


def _runs(bench: Any) -> tuple[str, ...]:
    return tuple(getattr(bench, "runs", ("random", "uncertainty", "less", "tov", "tov_b")))


def tov_run(bench: Any) -> str | None:
    """The bench's ToV Method A run (its scores feed the diagnostics and the score plot)."""
    return next((r for r in _runs(bench) if RUNS[r][:2] == ("tov", "A")), None)


def _load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def _sd(xs: list[float]) -> float:
    return float(np.std(xs, ddof=1)) if len(xs) > 1 else 0.0


def collect(bench: Any, setting: Any, seeds: int) -> dict[str, Any]:
    """Per-method numbers of one setting from the work folder (only seeds that finished)."""
    from benchmarks.quality.settings import load_meta

    folder = bench.folder(setting)
    sweep = _load(folder / "lr_sweep.json")
    base = _load(folder / "ft_base_s0_lr0.json")
    out: dict[str, Any] = {
        "sweep": sweep,
        "base_loss": base["test_loss"] if base else None,
        "losses": {},
        "runs": {},
        "target_picked": {},
        "target_picked_10bins": {},
        "by_subtask": {},
        "validation_losses": {},
        "embed": _load(folder / "embed.json"),
    }
    if sweep is None:
        return out
    lr = float(sweep["best"])
    meta = load_meta(bench.data(setting))
    mask = np.asarray(meta["target_mask"], dtype=bool)
    out["target_rows"] = int(mask.sum())
    methods = getattr(bench, "methods", METHODS)
    expected = [m for m in methods if m not in ORACLES or out["target_rows"]]
    complete = [
        seed
        for seed in range(seeds)
        if all((folder / f"ft_{m}_s{seed}_lr{lr:g}.json").exists() for m in expected)
    ]
    for seed in complete:  # only seeds every method finished: the same seeds in every row
        for method in expected:
            ft = _load(folder / f"ft_{method}_s{seed}_lr{lr:g}.json")
            if ft is None:
                continue
            out["losses"].setdefault(method, {})[seed] = ft["test_loss"]
            if "validation_loss" in ft:
                out["validation_losses"].setdefault(method, []).append(ft["validation_loss"])
            for sub, loss in ft.get("test_loss_by_subtask", {}).items():
                out["by_subtask"].setdefault(method, {}).setdefault(sub, []).append(loss)
            if method in ORACLES:
                idx = oracle_picks(method, meta, setting.budget, seed)
                sel = None
            else:
                sel = _load(folder / f"sel_{run_of(method, _runs(bench))}_s{seed}.json")
                idx = sel["selections"][method] if sel else []
                if sel:
                    out["runs"].setdefault(method, []).append(sel)
            out["target_picked"].setdefault(method, []).append(int(mask[idx].sum()))
            paper = sel["selections"].get(method + "@10bins") if sel else None
            if paper is not None:
                out["target_picked_10bins"].setdefault(method, []).append(int(mask[paper].sum()))
    return out


def paired(rand: dict[int, float], mine: dict[int, float]) -> dict[str, Any] | None:
    """A method against random, paired by seed: the mean per-seed difference random - method
    (positive = the method's test loss is lower) and its standard error sd / sqrt(n), in loss
    units and as % of random's loss; None without a common seed. One seed: SE None."""
    seeds = sorted(s for s in mine if s in rand)
    if not seeds:
        return None
    diff = np.array([rand[s] - mine[s] for s in seeds], dtype=np.float64)
    pct = np.array([100.0 * (rand[s] - mine[s]) / rand[s] for s in seeds], dtype=np.float64)
    n = len(seeds)

    def se(x: np.ndarray) -> float | None:
        return float(np.std(x, ddof=1) / np.sqrt(n)) if n > 1 else None

    return {
        "seeds": n,
        "diff_mean": float(diff.mean()),
        "diff_se": se(diff),
        "improvement_pct_mean": float(pct.mean()),
        "improvement_pct_se": se(pct),
    }


def tov_ahead(methods: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """Is the best of ToV's strategies (largest mean paired difference vs random) ahead of random
    by more than one SE of that difference? None when no ToV strategy ran or SE is undefined."""
    got = {k: methods[k]["_paired"] for k in TOV_STRATEGIES if methods.get(k, {}).get("_paired")}
    if not got:
        return None
    best = max(got, key=lambda k: got[k]["diff_mean"])
    p = got[best]
    holds = None if p["diff_se"] is None else bool(p["diff_mean"] > p["diff_se"])
    return {
        "method": best,
        "diff_mean": p["diff_mean"],
        "diff_se": p["diff_se"],
        "improvement_pct_mean": p["improvement_pct_mean"],
        "holds": holds,
    }


def summarize(c: dict[str, Any]) -> dict[str, dict[str, Any]]:
    losses = c["losses"]
    rand = losses.get("random", {})
    oracle = losses.get("oracle", {})
    methods: dict[str, dict[str, Any]] = {}
    for method, per_seed in losses.items():
        seeds = sorted(s for s in per_seed if s in rand)
        vals = [per_seed[s] for s in seeds]
        if not vals:
            continue
        imp = [100.0 * (rand[s] - per_seed[s]) / rand[s] for s in seeds]
        share = None
        both = [s for s in seeds if s in oracle]
        if both:
            r = np.mean([rand[s] for s in both])
            o = np.mean([oracle[s] for s in both])
            m = np.mean([per_seed[s] for s in both])
            share = float((r - m) / (r - o)) if r - o > 0 else None
        runs = c["runs"].get(method, [])
        seconds = float(np.mean([r["seconds"] for r in runs])) if runs else None
        peak = float(max(r["peak_rss_mb"] for r in runs)) if runs else None
        embed = c.get("embed")
        if seconds is not None and peak is not None and embed and method in USES_EMBEDDINGS:
            seconds += float(embed["seconds"])  # + the setting's one embedding job
            peak = max(peak, float(embed["peak_rss_mb"]))
        methods[method] = {
            "test_loss_mean": float(np.mean(vals)),
            "test_loss_std": _sd(vals),
            "improvement_pct_mean": float(np.mean(imp)),
            "oracle_gain_share": share,
            "selection_seconds": seconds,
            "peak_rss_mb": peak,
            "disk_mb": float(max(r["disk_mb"] for r in runs)) if runs else None,
            "_seeds": len(vals),
            "validation_loss_mean": (
                float(np.mean(c["validation_losses"][method]))
                if c.get("validation_losses", {}).get(method)
                else None
            ),
            "_target_picked": float(np.mean(c["target_picked"].get(method, [np.nan]))),
            "_paired": paired(rand, per_seed) if method != "random" else None,
        }
    return methods


def _fmt(x: Any, spec: str = ".3f") -> str:
    return "—" if x is None or (isinstance(x, float) and np.isnan(x)) else format(x, spec)


def _npz(bench: Any, s: Any, run: str, seed: int) -> Any:
    for name in (f"sel_{run}_s{seed}.npz", f"sel_{run}_s{seed}.partial.npz"):
        path = bench.folder(s) / name
        if path.exists():
            return np.load(path)
    return None


def score_auc(scores: np.ndarray, target: np.ndarray) -> float | None:
    """How well scores rank the target-like rows (bool mask) above the other scored rows: the
    probability that a target row outscores another, ties half (0.5 = no signal); NaN scores (U,
    rows without loss tokens) left out. None without rows on both sides."""
    ok = ~np.isnan(scores)
    pos, neg = scores[ok & target], scores[ok & ~target]
    if not len(pos) or not len(neg):
        return None
    return float((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())


def _diagnostics(bench: Any, s: Any) -> str:
    """Seed-0 score diagnostics: how well ToV's scores rank the target-like rows (AUC), and how
    close Method A's and Method B's scores are."""
    from benchmarks.quality.settings import load_meta

    run = tov_run(bench)
    a = _npz(bench, s, run, 0) if run else None
    b = _npz(bench, s, "tov_b", 0) if "tov_b" in _runs(bench) else None
    if a is None:
        return ""
    mask = np.asarray(load_meta(bench.data(s))["target_mask"], dtype=bool)
    sa = a["scores"]
    ok = ~np.isnan(sa)
    parts = []
    auc = score_auc(sa, mask)
    if auc is not None:
        parts.append(
            f"ToV (A) score AUC, target-like vs other scored rows (seed 0): {auc:.2f} "
            "(0.5 = no signal)"
        )
    if b is not None:
        both = ok & ~np.isnan(b["scores"])
        r = float(np.corrcoef(sa[both], b["scores"][both])[0, 1])
        parts.append(f"correlation of Method A and Method B scores: {r:.4f}")
    return ("Diagnostics: " + "; ".join(parts) + ".") if parts else ""


def _ceiling(name: str, share: float | None, half: dict[str, Any] | None) -> list[str]:
    """What the oracle-share goal means for score+random: its ceiling (score half perfect, the
    other half random) and the share of that ceiling ToV reaches."""
    ceiling = half["oracle_gain_share"] if half else None
    if ceiling is None or share is None:
        return []
    line = (
        f"- {name}: ceiling of any score+random selection (oracle half + random) "
        f"{ceiling:.2f} of the oracle's gain; ToV score+random reaches "
        f"{share / ceiling:.2f} of that ceiling"
        if ceiling > 0
        else f"- {name}: ceiling of any score+random selection {ceiling:.2f}"
    )
    if ceiling < 0.6 and share < 0.6:
        line += " (the ceiling is below 0.6 too: no score lifts score+random to the goal here)"
    return [line]


def _se(x: float | None, spec: str = ".4f") -> str:
    return "—" if x is None else format(x, spec)


def ahead_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Per setting: is the best of ToV's strategies ahead of random by more than one SE?"""
    out = []
    for r in rows:
        a = r.get("tov_ahead")
        if a is None:
            continue
        verdict = {True: "YES", False: "NO", None: "undecided (one seed: no SE)"}[a["holds"]]
        out.append(
            f"- {r['name']}: best of ToV's strategies ({LABELS[a['method']]}) ahead of random by "
            f"more than one SE: **{verdict}** (paired difference random - ToV "
            f"{a['diff_mean']:+.4f} ± {_se(a['diff_se'])} SE, {a['improvement_pct_mean']:+.1f}%)"
        )
    return out


def verdicts(rows: list[dict[str, Any]]) -> list[str]:
    out = ahead_lines(rows)
    imps = [
        r["methods"]["tov_score_random"]["improvement_pct_mean"]
        for r in rows
        if "tov_score_random" in r["methods"]
    ]
    if imps:
        mean = float(np.mean(imps))
        ok = "MET" if mean >= 10 else "NOT MET"
        out.append(
            f"- ToV score+random vs random, mean over settings: {mean:+.1f}% "
            f"(goal >= +10%): **{ok}**"
        )
    for r in rows:
        m = r["methods"]
        tov, less = m.get("tov_score_random"), m.get("less")
        if not tov:
            continue
        share = tov["oracle_gain_share"]
        if "oracle" in m:
            ok = "MET" if share is not None and share >= 0.6 else "NOT MET"
            out.append(
                f"- {r['name']}: ToV score+random share of the oracle's gain "
                f"{_fmt(share, '.2f')} (goal >= 0.6): **{ok}**"
            )
            out += _ceiling(r["name"], share, m.get("oracle_half"))
        if less:
            better = tov["test_loss_mean"] < less["test_loss_mean"]
            out.append(
                f"- {r['name']}: ToV score+random {'beats' if better else 'does not beat'}"
                f" LESS ({tov['test_loss_mean']:.4f} vs {less['test_loss_mean']:.4f})"
            )
            if tov["selection_seconds"] and less["selection_seconds"]:
                ratio = tov["selection_seconds"] / less["selection_seconds"]
                ok = "MET" if ratio <= 0.5 else "NOT MET"
                out.append(
                    f"- {r['name']}: ToV selection time {ratio:.2f}x LESS's "
                    f"(goal <= 0.5x): **{ok}**"
                )
    wins = sum(
        1
        for r in rows
        if "less" in r["methods"]
        and "tov_score_random" in r["methods"]
        and r["methods"]["tov_score_random"]["test_loss_mean"]
        < r["methods"]["less"]["test_loss_mean"]
    )
    if any("less" in r["methods"] for r in rows):
        out.append(
            f"- ToV score+random beats LESS in {wins} of {len(rows)} settings "
            f"(goal: most): **{'MET' if wins * 2 > len(rows) else 'NOT MET'}**"
        )
    return out


def plots(
    bench: Any, settings: list[Any], rows: list[dict[str, Any]], out_dir: Path, name: str
) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from benchmarks.quality.settings import load_meta

    written = []
    for s, r in zip(settings, rows, strict=True):
        m = r["methods"]
        if not m:
            continue
        names = [k for k in LABELS if k in m]
        fig, ax = plt.subplots(figsize=(8, 4))
        means = [m[k]["test_loss_mean"] for k in names]
        stds = [m[k]["test_loss_std"] for k in names]
        colors = [
            "#888" if k in ("random", *ORACLES) else "#3a7" if k.startswith("tov") else "#47b"
            for k in names
        ]
        ax.bar(range(len(names)), means, yerr=stds, color=colors, capsize=4)
        ax.axhline(m["random"]["test_loss_mean"], color="k", ls="--", lw=0.8, label="random")
        ax.set_xticks(range(len(names)), [LABELS[k] for k in names], rotation=25, ha="right")
        lo = min(a - b for a, b in zip(means, stds, strict=True))
        hi = max(a + b for a, b in zip(means, stds, strict=True))
        ax.set_ylim(max(0, lo - 0.15 * (hi - lo)), hi + 0.1 * (hi - lo))
        ax.set_ylabel("target test log-loss (lower is better)")
        ax.set_title(f"{s.name}: mean ± std over {m['random']['_seeds']} seeds")
        fig.tight_layout()
        path = out_dir / f"{name}_{s.name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path.name)
        # Score distribution by length bin (ToV Method A, seed 0).
        run = tov_run(bench)
        d = _npz(bench, s, run, 0) if run else None  # (runs before the rename: partial name)
        if d is None:
            continue
        mask = np.asarray(load_meta(bench.data(s))["target_mask"], dtype=bool)
        scores, lengths = d["scores"], d["lengths"]
        scored = np.flatnonzero(~np.isnan(scores))
        order = scored[np.lexsort((scored, lengths[scored]))]
        bins = np.array_split(order, 10)
        fig, ax = plt.subplots(figsize=(8, 4))
        ax.boxplot([scores[b] for b in bins], showfliers=False)
        rng = np.random.default_rng(0)
        for i, b in enumerate(bins):
            x = i + 1 + rng.uniform(-0.2, 0.2, len(b))
            ax.scatter(x[~mask[b]], scores[b][~mask[b]], s=6, c="#999", alpha=0.6)
            ax.scatter(
                x[mask[b]],
                scores[b][mask[b]],
                s=18,
                c="#d33",
                label="target-like" if i == 0 and mask[b].any() else None,
            )
        ax.set_xticks(
            range(1, len(bins) + 1),
            [f"{lengths[b].min()}-{lengths[b].max()}" if len(b) else "" for b in bins],
        )
        ax.set_xlabel("length bin (loss-bearing tokens)")
        ax.set_ylabel("ToV score (improvement)")
        ax.set_title(f"{s.name}: ToV scores by length bin (seed 0; red = target-like rows)")
        fig.tight_layout()
        path = out_dir / f"{name}_scores_{s.name}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path.name)
    return written


def write(
    bench: Any,
    settings: list[Any],
    mode: str,
    seeds: int,
    wall: float | None,
    out_dir: Path = RESULTS,
    name: str = "quality",
) -> None:
    """Write <name>.json, <name>.md and the PNGs to out_dir from the finished runs.

    wall: the run's wall time; None = the span of the stored runs' file times (report-only)."""
    from benchmarks.quality.jobs import RECIPE

    engine = getattr(bench, "engine", ENGINE)

    out_dir.mkdir(parents=True, exist_ok=True)
    rows, extras = [], []
    for s in settings:
        c = collect(bench, s, seeds)
        methods = summarize(c)
        rows.append(
            {"name": s.name, "task": s.task, "methods": methods, "tov_ahead": tov_ahead(methods)}
        )
        extras.append(c)
    done = min((m["_seeds"] for r in rows for m in r["methods"].values()), default=0)
    if done < seeds:  # a run cut short: say so in the mode
        mode = f"{mode} (partial: {done} of {seeds} seeds)"
    if wall is None:
        times = [f.stat().st_mtime for s in settings for f in bench.folder(s).glob("*.json")]
        starts = [f.stat().st_mtime for s in settings for f in bench.data(s).glob("meta.json")]
        wall = max(times) - min(starts + times) if times else 0.0
    payload = {
        "mode": mode,
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": [
            {
                "name": r["name"],
                "task": r["task"],
                "methods": {
                    k: {f: v for f, v in m.items() if not f.startswith("_")}
                    for k, m in r["methods"].items()
                },
                # random - method per seed: mean, its SE, and the same in % of random's loss
                "paired_vs_random": {
                    k: m["_paired"] for k, m in r["methods"].items() if m.get("_paired")
                },
                "tov_best_ahead_of_random_by_one_se": r["tov_ahead"],
                "test_loss_by_subtask": {
                    k: {sub: float(np.mean(v)) for sub, v in subs.items()}
                    for k, subs in c["by_subtask"].items()
                }
                or None,
            }
            for r, c in zip(rows, extras, strict=True)
        ],
    }
    (out_dir / f"{name}.json").write_text(json.dumps(payload, indent=2) + "\n")
    pngs = plots(bench, settings, rows, out_dir, name)
    md = [
        "# Quality benchmark: does the selected subset train a better model?",
        "",
        f"Mode **{mode}**, generated {payload['generated_at']} by "
        "`python -m benchmarks.quality.run`. "
        f"Run wall time {wall / 60:.1f} min on {os.cpu_count()} CPU cores "
        f"(torch threads {bench.threads}; load average now {os.getloadavg()[0]:.1f} — the "
        "cores are shared, so times vary up to 3x).",
        "",
        "Every method selects the same budget from the same pool; SmolLM2-135M-Instruct (or "
        "MiniLM for NER) is fine-tuned on each selection with one fixed recipe (its learning "
        "rate swept on random selection, or fixed: see each setting); the number is the mean "
        "NLL over the loss tokens of "
        "the held-out target test rows. Improvement = % lower test loss than random (paired by "
        "seed; ± its standard error, the sd of the per-seed differences / sqrt(seeds)). "
        "Oracle share = (random - method) / (random - oracle) on the means. Selection "
        "time, peak RSS (ru_maxrss of the child process that ran the selection, including "
        "~350 MB of imported libraries) and disk (checkpoints + outputs written) are per run; "
        "ToV's strategies (score-only, score+random, score+diverse) come from one run. "
        "Oracle = the target-like rows first; "
        "oracle half + random = score+random's score half filled with target-like rows and its "
        "other half uniformly random: the best any score can do under score+random.",
        "",
    ]
    notes = []
    if mode.startswith("large"):
        notes.append(
            "Large mode: 2,000-row pools and budgets of 100 rows, fixed learning rates (no sweep; "
            "run.LARGE_LR), LESS with one warmup checkpoint, every baseline, RDS+ and ToV's three "
            "strategies from one ToV run; score+diverse's selection time and peak RSS include "
            "the setting's one embedding job (the pool's frozen-model embeddings, seed-"
            "independent). RDS+ depends on no seed: its selection is the same for every seed, "
            "only the fine-tune differs."
        )
    elif getattr(bench, "fixed_lr", None) is not None:
        notes.append(
            "Quick mode: smaller pools and test sets of the same shape (target-like rows 5% of "
            "the pool, budget 5%), the learning rates the full run's sweep chose (no sweep), and "
            "no uncertainty baseline or Method B ablation. Its numbers are noisier than the full "
            "run's (benchmarks/results/quality.md), which they do not replace. The selection-time "
            "goal is judged on the full run: on these small pools ToV's fixed cost (model load, "
            "the epochs on U and on the validation set) weighs more, and LESS runs half its recipe."
        )
    less_epochs = {k.get("less_epochs") for k in engine.values()} - {None}
    if less_epochs:
        notes.append(
            f"LESS warms up for {'/'.join(map(str, sorted(less_epochs)))} epoch(s) (one "
            "checkpoint each; LESS's recipe and the full run: 4), so its selection time here is "
            "about that fraction of the full recipe's."
        )
    if getattr(bench, "jobs", 1) > 1:
        notes.append(
            f"{bench.jobs} (setting, seed) tasks ran at once (one child process each), so every "
            "selection time includes the other's competition for the cores."
        )
    if notes:
        md += [" ".join(notes), ""]
    for s, r, c in zip(settings, rows, extras, strict=True):
        m = r["methods"]
        md += [f"## {s.name} ({s.task})", "", s.description + ".", ""]
        if c.get("embed"):
            e = c["embed"]
            md.append(
                f"Pool embeddings for score+diverse (once per setting): {e['seconds']:.0f} s, "
                f"peak RSS {e['peak_rss_mb']:.0f} MB."
            )
        md.append(
            f"Pool {s.pool_size} rows ({c.get('target_rows', 0)} target-like), budget "
            f"{s.budget}, validation {s.n_validation}, test {s.n_test}. Base model test loss "
            f"(no fine-tuning): {_fmt(c['base_loss'], '.4f')}."
        )
        if c["sweep"] and c["sweep"].get("fixed"):
            md.append(f"Fine-tuning LR fixed at **{c['sweep']['best']:g}** (no sweep).")
        elif c["sweep"]:
            grid = ", ".join(f"{k}: {v:.4f}" for k, v in c["sweep"]["grid"].items())
            md.append(
                f"LR sweep on random ({len(LR_GRID[s.task])} LRs x {SWEEP_SEEDS} seeds, mean "
                f"test loss): {grid} → **{c['sweep']['best']:g}**."
            )
        md += [
            "",
            "| method | test loss (mean ± std) | vs random (± SE) | paired diff random - method "
            "(± SE) | oracle share | target rows picked | selection s | peak RSS MB | disk MB "
            "| seeds |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for k in LABELS:
            if k not in m:
                continue
            x = m[k]
            pd = x.get("_paired")
            vs = f"{x['improvement_pct_mean']:+.1f}%"
            diff = "—"
            if pd:
                vs += f" ± {_se(pd['improvement_pct_se'], '.1f')}"
                diff = f"{pd['diff_mean']:+.4f} ± {_se(pd['diff_se'])}"
            md.append(
                f"| {LABELS[k]} | {x['test_loss_mean']:.4f} ± {x['test_loss_std']:.4f} | "
                f"{vs} | {diff} | {_fmt(x['oracle_gain_share'], '.2f')} | "
                f"{_fmt(x['_target_picked'], '.1f')} | {_fmt(x['selection_seconds'], '.0f')} | "
                f"{_fmt(x['peak_rss_mb'], '.0f')} | {_fmt(x['disk_mb'], '.2f')} | {x['_seeds']} |"
            )
        val = {k: m[k]["validation_loss_mean"] for k in LABELS if k in m}
        if any(v is not None for v in val.values()):
            md += [
                "",
                "Validation loss after fine-tuning (mean over seeds; the rows every selection saw, "
                "the only signal the defaults sweep reads, never the test rows): "
                + "; ".join(f"{LABELS[k]} {v:.4f}" for k, v in val.items() if v is not None)
                + ".",
            ]
        ahead = ahead_lines([r])
        if ahead:
            md += ["", *ahead]
        subs = c["by_subtask"]
        if subs:
            names = sorted({sub for v in subs.values() for sub in v})
            md += [
                "",
                "Test loss per subtask (mean over seeds): "
                + "; ".join(
                    f"{LABELS[k]} "
                    + ", ".join(f"{n} {np.mean(subs[k][n]):.4f}" for n in names if n in subs[k])
                    for k in LABELS
                    if k in subs
                )
                + ".",
            ]
        diag = _diagnostics(bench, s)
        if diag:
            md.append(diag)
        paper = c["target_picked_10bins"]
        if paper and c.get("target_rows"):
            md.append(
                "Length bins: target-like rows picked (mean over seeds) with the benchmark's bins "
                "vs the paper's 10 bins, from the same scores: "
                + "; ".join(
                    f"{LABELS[k]} {np.mean(c['target_picked'][k]):.1f} vs {np.mean(v):.1f}"
                    for k, v in paper.items()
                )
                + "."
            )
        md.append("")
    md += ["## Goals", "", *verdicts(rows), ""]
    md += [
        "## Settings used",
        "",
        f"- Engine (all model-based methods): `{json.dumps(engine)}`",
        f"- Fine-tuning recipe: `{json.dumps(RECIPE)}`; AdamW, constant LR, weight decay 0.",
        "- Plots: " + ", ".join(f"`{p}`" for p in pngs),
        "",
    ]
    (out_dir / f"{name}.md").write_text("\n".join(md))
