"""What the quality benchmark runs: the engine knobs, the LR grid, the selection runs and the
methods they yield, and the oracles' picks. run.py runs them; report.py reports them."""

from __future__ import annotations

from typing import Any

import numpy as np


def _engine_knobs(lora_target_modules: list[str], **extra: Any) -> dict[str, Any]:
    """The engine knobs every model-based method shares, for a model with these LoRA target
    modules (a task's extra knobs last)."""
    return {
        "rounds": 2,
        "learning_rate": 1e-4,
        "val_lr_factor": 0.1,
        "batch_size": 16,
        "score_fn": "improvement",
        "lora_rank": 8,
        "lora_target_modules": lora_target_modules,
        "max_length": 64,
        "less_projection_dim": 128,
        "min_per_bin": 5,
        **extra,
    }


# The surrogate / selection settings every model-based method shares, per task.
ENGINE = {
    "causal_lm": _engine_knobs(["q_proj", "v_proj"]),
    "token_classification": _engine_knobs(["query", "value"], tagged_reduction="class_balanced"),
}
LR_GRID = {"causal_lm": [3e-4, 1e-3, 3e-3], "token_classification": [1e-4, 3e-4, 1e-3]}
SWEEP_SEEDS = 3

# A strategy name with this suffix is selected in a single length bin (jobs.selection_job).
ONE_BIN = "@1bin"

# Selection runs: engine method, variant, and the benchmark methods each run yields.
RUNS: dict[str, tuple[str, str, dict[str, str | None]]] = {
    "random": ("random", "A", {"random": None}),
    "uncertainty": ("uncertainty", "A", {"uncertainty": "score+random"}),
    "less": ("less", "A", {"less": None}),
    "tov": ("tov", "A", {"tov_score_random": "score+random", "tov_score_only": "score-only"}),
    "tov_b": ("tov", "B", {"tov_method_b": "score+random"}),
    # RDS+ (embedding similarity, round-robin): its ranking, score-only in one bin (the engine's
    # tov_engine.selection.selection_for_method), whatever strategy the job names.
    "rds": ("rds", "A", {"rds": None}),
    # One ToV run, three strategies from its scores (large mode). score+diverse also needs the
    # pool's embeddings: computed once per setting (jobs.embed_job), its cost added to the run's.
    "tov_all": (
        "tov",
        "A",
        {
            "tov_score_random": "score+random",
            "tov_score_only": "score-only",
            "tov_score_diverse": "score+diverse",
            # The length-bins sweep: score-only from the same scores in one bin (no length
            # stratification); a bins setting, not one of ToV's strategies (TOV_STRATEGIES).
            "tov_score_only_1bin": "score-only" + ONE_BIN,
        },
    ),
}
# Runs whose selection depends on no seed: RDS+ embeds with the frozen base model and takes rows
# round-robin by cosine, with no random draw. Seed 0's selection (and its measured cost) serves
# every seed; only the fine-tunes differ by seed (tests/benchmarks/test_quality_large_report.py
# checks that a real run with another seed selects the same rows).
SEED_FREE_RUNS = ("rds",)
METHODS = [
    "random",
    "uncertainty",
    "less",
    "rds",
    "tov_score_only",
    "tov_score_random",
    "tov_score_diverse",
    "tov_score_only_1bin",
    "tov_method_b",
    "oracle",
    "oracle_half",
]
# The ToV methods (one per strategy); "best of ToV's strategies" is over those a run has.
TOV_STRATEGIES = ("tov_score_random", "tov_score_only", "tov_score_diverse")
# Methods that pick by the benchmark's knowledge of the target-like rows (no selection run).
ORACLES = ("oracle", "oracle_half")


def methods_of(
    runs: tuple[str, ...] | list[str], oracles: tuple[str, ...] | list[str] = ORACLES
) -> list[str]:
    """The benchmark methods the selection runs yield (plus the oracles), in METHODS order."""
    made = {m for r in runs for m in RUNS[r][2]} | set(oracles)
    return [m for m in METHODS if m in made]


def run_of(method: str, runs: tuple[str, ...] | list[str]) -> str | None:
    """The selection run (of `runs`) that yields `method`; None for the oracles."""
    return next((r for r in runs if method in RUNS[r][2]), None)


def needs_embeddings(runs: tuple[str, ...] | list[str]) -> bool:
    """Whether a run derives a strategy that draws from the pool's embeddings (score+diverse)."""
    return any(strategy == "score+diverse" for r in runs for strategy in RUNS[r][2].values())


def oracle_indices(
    meta: dict[str, Any], budget: int, seed: int, known: int | None = None
) -> list[int]:
    """Target-like rows first (a seeded sample if more than fit), then random others.

    known: how many slots may use the knowledge of the target-like rows (default: the whole
    budget). `known = budget - budget // 2` is the ceiling of any score+random selection: its
    score half perfect, its other half uniformly random over the rest of the pool, as
    score+random's is."""
    known = budget if known is None else known
    mask = np.asarray(meta["target_mask"], dtype=bool)
    rng = np.random.default_rng([seed, 99])
    target = np.flatnonzero(mask)
    others = np.flatnonzero(~mask)
    take = rng.permutation(target)[:known]
    fill = rng.permutation(others)[: known - len(take)]
    picked = np.concatenate([take, fill])
    rest = np.setdiff1d(np.arange(len(mask)), picked)
    drawn = np.random.default_rng([seed, 98]).permutation(rest)[: budget - len(picked)]
    return sorted(int(i) for i in np.concatenate([picked, drawn]))


def oracle_picks(method: str, meta: dict[str, Any], budget: int, seed: int) -> list[int]:
    """The indices an ORACLES method picks: `oracle` knows every slot, `oracle_half` the score
    half of score+random (the other half is random)."""
    known = budget if method == "oracle" else budget - budget // 2
    return oracle_indices(meta, budget, seed, known)
