"""Probe: how should a token-classification row's ToV score be reduced over its tokens?

    python -m benchmarks.quality.ner_probe [--seeds 0 1 2] [--setting wnut-company]

Runs ToV (the benchmark's engine settings) on the NER setting, records every scored token's
Delta_t = log p_t(theta_val) - log p_t(theta_bas) with its gold label in each round, and
compares row reductions by how well they rank the target-like rows: AUC (target vs other scored
rows) and how many target rows land in the top 10 / top 20 by score. The reduction the engine
uses is `tov_engine.model.scoring.TAGGED_REDUCTION`; this probe only reads the per-token values.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import numpy as np


def _auc(scores: np.ndarray, mask: np.ndarray) -> float:
    ok = ~np.isnan(scores)
    pos, neg = scores[ok & mask], scores[ok & ~mask]
    if not len(pos) or not len(neg):
        return float("nan")
    return float((pos[:, None] > neg[None, :]).mean() + 0.5 * (pos[:, None] == neg[None, :]).mean())


def _reduce(
    n: int, row: np.ndarray, label: np.ndarray, d: np.ndarray, how: str, labels_n: int
) -> np.ndarray:
    """Row scores from token deltas of one round."""
    counts = np.bincount(row, minlength=n).astype(np.float64)
    freq = np.bincount(label, minlength=labels_n).astype(np.float64)
    if how == "mean":
        w = np.ones_like(d)
    elif how == "sum":
        return np.where(counts > 0, np.bincount(row, weights=d, minlength=n), np.nan)
    elif how == "max":
        out = np.full(n, -np.inf)
        np.maximum.at(out, row, d)
        return np.where(counts > 0, out, np.nan)
    elif how == "inv_freq":  # class-balanced: token weight 1 / (pool frequency of its label)
        w = 1.0 / freq[label]
    elif how == "inv_freq_sum":
        w = 1.0 / freq[label]
        return np.where(counts > 0, np.bincount(row, weights=w * d, minlength=n), np.nan)
    elif how in ("centered", "centered_sum", "centered_max"):
        means = np.bincount(label, weights=d, minlength=labels_n) / np.maximum(freq, 1)
        c = d - means[label]
        if how == "centered":
            return np.where(counts > 0, np.bincount(row, weights=c, minlength=n) / counts, np.nan)
        if how == "centered_sum":
            return np.where(counts > 0, np.bincount(row, weights=c, minlength=n), np.nan)
        out = np.full(n, -np.inf)
        np.maximum.at(out, row, c)
        return np.where(counts > 0, out, np.nan)
    elif how == "non_majority":
        major = int(np.argmax(freq))
        w = (label != major).astype(np.float64)
    else:
        raise ValueError(how)
    ws = np.bincount(row, weights=w, minlength=n)
    return np.where(
        ws > 0, np.bincount(row, weights=w * d, minlength=n) / np.maximum(ws, 1e-12), np.nan
    )


REDUCTIONS = [
    "mean",
    "sum",
    "max",
    "inv_freq",
    "inv_freq_sum",
    "centered",
    "centered_sum",
    "centered_max",
    "non_majority",
]


def probe(setting_name: str, seed: int, engine: dict[str, Any], threads: int) -> dict[str, Any]:
    import torch

    torch.set_num_threads(threads)
    import tov_engine.methods.tov.scoring as tov_mod
    from benchmarks.quality.jobs import min_per_bin
    from benchmarks.quality.run import MODELS, WORK
    from benchmarks.quality.settings import ALL_SETTINGS, build, load_meta
    from tov_engine import JobConfig, LoraSettings, SelectionConfig, ToVConfig, run_selection
    from tov_engine.data.encoded import IGNORE
    from tov_engine.selection import bins_for

    s = ALL_SETTINGS[setting_name]
    data = build(s, WORK / "data")
    meta = load_meta(data)
    mask = np.asarray(meta["target_mask"], dtype=bool)
    records: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = []
    original = tov_mod.stored_combine

    def spy(model: Any, task: str, store: Any, score_fn: str) -> Any:
        inner = original(model, task, store, score_fn)
        from tov_engine.model.logprob import token_logprobs

        records.append([])

        def combine(batch: Any) -> torch.Tensor:
            after = token_logprobs(model, batch, task)
            before = store.get(batch, after.values.device)
            lab = batch.labels[batch.labels != IGNORE]
            rows = torch.as_tensor(batch.rows)[after.row.cpu()]
            records[-1].append(
                (rows.numpy(), lab.cpu().numpy(), (after.values - before).float().cpu().numpy())
            )
            return inner(batch)

        return combine

    tov_mod.stored_combine = spy  # type: ignore[assignment]
    e = engine
    tov = ToVConfig(
        rounds=e["rounds"],
        learning_rate=e["learning_rate"],
        val_lr_factor=e["val_lr_factor"],
        batch_size=e["batch_size"],
        score_fn=e["score_fn"],
        lora=LoraSettings(rank=e["lora_rank"], target_modules=tuple(e["lora_target_modules"])),
    )
    spec = {"budget": s.budget, "engine": e}
    config = JobConfig(
        task=s.task,
        method="tov",
        tov=tov,
        selection=SelectionConfig(
            budget=s.budget, num_bins=bins_for(s.budget - s.budget // 2, 10, min_per_bin(spec))
        ),
        seed=seed,
        max_length=e["max_length"],
        device="cpu",
    )
    outcome = run_selection(
        pool_path=data / "pool.jsonl",
        validation_path=data / "validation.jsonl",
        model=str(MODELS / s.model),
        config=config,
    )
    tov_mod.stored_combine = original  # type: ignore[assignment]
    n = len(mask)
    nl = len(meta["labels"])
    out: dict[str, Any] = {"seed": seed, "engine_auc": _auc(outcome.scores, mask)}
    ok = ~np.isnan(outcome.scores)
    for how in REDUCTIONS:
        per_round = []
        for rec in records:
            row = np.concatenate([r[0] for r in rec])
            lab = np.concatenate([r[1] for r in rec])
            d = np.concatenate([r[2] for r in rec]).astype(np.float64)
            per_round.append(_reduce(n, row, lab, d, how, nl))
        sc = np.mean(per_round, axis=0)
        sc[~ok] = np.nan
        order = np.argsort(-np.nan_to_num(sc, nan=-np.inf), kind="stable")
        out[how] = {
            "auc": _auc(sc, mask),
            "top10": int(mask[order[:10]].sum()),
            "top20": int(mask[order[:20]].sum()),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    from benchmarks.quality.plan import ENGINE

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--setting", default="wnut-company")
    ap.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--set", nargs="*", default=[], help="engine overrides key=json")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    engine = dict(ENGINE["token_classification"])
    for kv in args.set:
        k, v = kv.split("=", 1)
        engine[k] = json.loads(v)
    results = [probe(args.setting, seed, engine, args.threads) for seed in args.seeds]
    print(f"engine {engine} (pid {os.getpid()})")
    print(f"{'reduction':14s} " + " ".join(f"s{r['seed']}:auc/top10/top20" for r in results))
    for how in REDUCTIONS:
        cells = [f"{r[how]['auc']:.2f}/{r[how]['top10']}/{r[how]['top20']}" for r in results]
        mean_auc = np.mean([r[how]["auc"] for r in results])
        print(f"{how:14s} " + "  ".join(f"{c:>20s}" for c in cells) + f"   mean AUC {mean_auc:.3f}")
    print("engine AUC", [round(r["engine_auc"], 3) for r in results])
    if args.out:
        args.out.write_text(json.dumps({"engine": engine, "results": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
