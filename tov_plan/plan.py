"""The passes a job will make, from its token counts and settings, without running it.

The engine's own rules (tov_plan.rules: the budget, U and L, the scoring batches and the training
micro-batches, which the engine imports from there) and the same passes as its methods
(model/training.py, methods/*): each training epoch's seeded row order and batches.
tests/engine/test_dry_run_plan.py checks the planned passes against the passes a real run makes
(forward hooks on a tiny model).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tov_plan.rules import (
    DEFAULT_STRATEGY,
    draw_base,
    micro_batches,
    plan_buckets,
    resolve_base_size,
    resolve_budget,
    resolve_rounds,
)

GRADIENT_BUFFER = 16  # tov_engine/methods/less/gradients.py
CHECK_ROWS = 2  # tov_engine/model/head.py: the head shortcut's one-time check, in rows


@dataclass(frozen=True)
class JobSettings:
    """What the plan depends on (a job body's knobs, defaults as the engine's)."""

    method: str = "tov"
    task: str = "causal_lm"
    budget: float = 0.1
    strategy: str = DEFAULT_STRATEGY  # score+diverse adds a forward of the pool for embeddings
    base_size: int | None = None
    rounds: int | None = None
    variant: str = "A"
    batch_size: int = 16
    tokens_per_batch: int = 8192
    lora: bool = True
    lora_rank: int = 8
    seed: int = 0
    max_length: int = 512
    precision: str = "auto"
    train_tokens_per_micro_batch: int = 4096  # ToVConfig's: a batch is cut into micro-batches
    gradient_checkpointing: bool = False  # resolved ("auto": on with CUDA, off on CPU)
    less_warmup_fraction: float = 0.05
    less_epochs: int = 4
    less_projection_dim: int = 8192


def settings_of(job: Any, device_class: str) -> JobSettings:
    """The JobSettings of a job's parameters: the API's JobCreate body or the engine's JobConfig
    (both have method, task, seed, max_length, precision, gradient_checkpointing, selection.* and
    tov.*; LESS's knobs where the object has `less`). "auto" gradient checkpointing resolves by
    the device class, as the engine resolves it by device: on with a GPU, off on CPU."""
    tov, checkpointing = job.tov, job.gradient_checkpointing
    less = getattr(job, "less", None)
    defaults = JobSettings()
    return JobSettings(
        method=job.method,
        task=job.task,
        budget=job.selection.budget,
        strategy=job.selection.strategy,
        base_size=tov.base_size,
        rounds=tov.rounds,
        variant=tov.variant,
        batch_size=tov.batch_size,
        tokens_per_batch=tov.tokens_per_batch,
        lora=tov.lora.enabled,
        lora_rank=tov.lora.rank,
        seed=job.seed,
        max_length=job.max_length,
        precision=job.precision,
        train_tokens_per_micro_batch=tov.train_tokens_per_micro_batch,
        gradient_checkpointing=checkpointing == "on"
        or (checkpointing == "auto" and device_class != "cpu"),
        less_warmup_fraction=less.warmup_fraction if less else defaults.less_warmup_fraction,
        less_epochs=less.epochs if less else defaults.less_epochs,
        less_projection_dim=less.projection_dim if less else defaults.less_projection_dim,
    )


@dataclass(frozen=True)
class Phase:
    """One kind of work, `passes` runs of it; rows, batches and tokens summed over the runs."""

    name: str  # e.g. "base epoch", "base pass", "validation epoch", "validation pass"
    backward: bool  # training (forward + backward) or forward only
    passes: int  # how many times it runs (rounds, epochs, checkpoints)
    rows: int  # row passes, all runs
    batches: int  # batches (micro-batches in training), all runs
    tokens: int  # padded tokens (what the model computes on), all runs
    loss_tokens: int  # loss-bearing tokens (where the head is needed), all runs
    widest: int = 0  # padded tokens of its largest batch (what the memory peak sees)


@dataclass
class Plan:
    """The budget, U, L and the phases; totals in row passes and tokens."""

    budget: int
    base_size: int
    rounds: int
    phases: list[Phase] = field(default_factory=list)
    reused_base_rounds: int = 0
    notes: list[str] = field(default_factory=list)

    def totals(self) -> dict[str, int]:
        back = [p for p in self.phases if p.backward]
        return {
            "forward_row_passes": sum(p.rows for p in self.phases),
            "backward_row_passes": sum(p.rows for p in back),
            "forward_batches": sum(p.batches for p in self.phases),
            "backward_batches": sum(p.batches for p in back),
            "forward_tokens": sum(p.tokens for p in self.phases),
            "backward_tokens": sum(p.tokens for p in back),
        }


def _padded(lengths: np.ndarray, batches: list[np.ndarray]) -> int:
    return sum(len(b) * max(1, int(lengths[b].max())) for b in batches if len(b))


def _loss(loss: np.ndarray, batches: list[np.ndarray]) -> int:
    return sum(int(loss[b].sum()) for b in batches)


def _pass(
    name: str, seq: np.ndarray, loss: np.ndarray, batches: list[np.ndarray], passes: int = 1
) -> Phase:
    rows = sum(len(b) for b in batches)
    widest = max((_padded(seq, [b]) for b in batches), default=0)
    tokens, lost = _padded(seq, batches), _loss(loss, batches)
    return Phase(
        name,
        False,
        passes,
        passes * rows,
        passes * len(batches),
        passes * tokens,
        passes * lost,
        widest,
    )


def _epochs(
    name: str,
    seq: np.ndarray,
    loss: np.ndarray,
    rows: np.ndarray,
    s: JobSettings,
    seeds: list[tuple[int, int, int]],
) -> Phase:
    """Training epochs (model/training.train_epoch): each seed's row order, sliced into batches
    and each batch into micro-batches (one forward and backward each); a micro-batch without a
    loss-bearing token is not run (a lone batch without one runs forward only: left out here)."""
    tokens = batches = kept = lost = widest = 0
    for seed in seeds:
        order = np.random.default_rng(list(seed)).permutation(rows)
        for i in range(0, len(order), s.batch_size):
            for b in micro_batches(
                seq, order[i : i + s.batch_size], s.train_tokens_per_micro_batch
            ):
                if int(loss[b].sum()) == 0:
                    continue
                batches += 1
                kept += len(b)
                padded = len(b) * max(1, int(seq[b].max()))
                tokens += padded
                widest = max(widest, padded)
                lost += int(loss[b].sum())
    return Phase(name, True, len(seeds), kept, batches, tokens, lost, widest)


def _head_check(
    s: JobSettings, seq: np.ndarray, loss: np.ndarray, rows: np.ndarray, seed: tuple[int, int, int]
) -> Phase:
    """The head shortcut's check (model/head.shortcut_ok): once per model, on the first training
    micro-batch with a loss-bearing token, its first CHECK_ROWS rows run two forwards (the
    shortcut and the model's own head). Causal LMs only."""
    order = np.random.default_rng(list(seed)).permutation(rows)
    for i in range(0, len(order), s.batch_size):
        for b in micro_batches(seq, order[i : i + s.batch_size], s.train_tokens_per_micro_batch):
            head = b[:CHECK_ROWS]
            if int(loss[b].sum()) and int(loss[head].sum()):
                width = max(1, int(seq[b].max()))
                n, lost = len(head), int(loss[head].sum())
                return Phase("head check", False, 2, 2 * n, 2, 2 * n * width, 2 * lost)
    return Phase("head check", False, 0, 0, 0, 0, 0)


def plan_job(
    s: JobSettings,
    pool_seq: np.ndarray,
    pool_loss: np.ndarray,
    val_seq: np.ndarray,
    val_loss: np.ndarray,
    cached_base_rounds: set[int] | None = None,
) -> Plan:
    """The phases of one job on a pool and a validation set of these token counts.

    Args:
        s: the settings. pool_seq, pool_loss: (N,) tokens and loss tokens per pool row; val_*
            likewise. cached_base_rounds: rounds whose base half is in the pool cache (ToV).
    Raises:
        ValueError: the budget exceeds the pool, or |U| leaves nothing to score (the engine's
            own refusals, worded alike).
    """
    size = len(pool_seq)
    budget = resolve_budget(s.budget, size)
    if budget > size:
        raise ValueError(f"the budget of {budget} rows exceeds the pool of {size} rows")
    if s.method == "random":
        return Plan(budget=budget, base_size=0, rounds=0, notes=["no model work: a uniform sample"])
    if s.method == "less":
        return _plan_less(s, budget, pool_seq, pool_loss, val_seq, val_loss)
    if s.method == "rds":
        return _plan_rds(s, budget, pool_seq, val_seq)
    if s.method not in ("tov", "uncertainty"):
        raise ValueError(
            f"the dry run has no plan for method {s.method!r}: tov, uncertainty, less, rds, random"
        )
    base_size = resolve_base_size(s.base_size, budget, size)
    if base_size >= size:
        raise ValueError(f"tov.base_size {base_size} leaves no row to score in a pool of {size}")
    rounds = resolve_rounds(s.rounds, base_size)
    base = draw_base(size, base_size, s.seed)
    rest = np.setdiff1d(np.arange(size, dtype=np.int64), base)
    score = plan_buckets(pool_seq, rest, s.tokens_per_batch)
    plan = Plan(budget=budget, base_size=base_size, rounds=rounds)
    if s.method == "uncertainty":
        if s.task == "causal_lm":
            plan.phases.append(_head_check(s, pool_seq, pool_loss, base, (s.seed, 0, 0)))
        seeds = [(s.seed, k, 0) for k in range(rounds)]
        plan.phases.append(_epochs("base epoch", pool_seq, pool_loss, base, s, seeds))
        plan.phases.append(_pass("uncertainty pass", pool_seq, pool_loss, score))
        _add_diverse(s, plan, pool_seq)
        return plan
    reusable = {k for k in range(rounds) if s.variant == "B" or k == 0}
    reused = sorted(reusable & (cached_base_rounds or set()))
    fresh = [k for k in range(rounds) if k not in reused]
    plan.reused_base_rounds = len(reused)
    if s.task == "causal_lm":
        first = (
            _head_check(s, pool_seq, pool_loss, base, (s.seed, 0, 0))
            if 0 not in reused
            else _head_check(
                s, val_seq, val_loss, np.arange(len(val_seq), dtype=np.int64), (s.seed, 0, 1)
            )
        )
        plan.phases.append(first)
    if fresh:
        seeds = [(s.seed, k, 0) for k in fresh]
        plan.phases.append(_epochs("base epoch", pool_seq, pool_loss, base, s, seeds))
        plan.phases.append(_pass("base pass", pool_seq, pool_loss, score, len(fresh)))
    val_rows = np.arange(len(val_seq), dtype=np.int64)
    seeds = [(s.seed, k, 1) for k in range(rounds)]
    plan.phases.append(_epochs("validation epoch", val_seq, val_loss, val_rows, s, seeds))
    plan.phases.append(_pass("validation pass", pool_seq, pool_loss, score, rounds))
    if reused:
        plan.notes.append(f"base half of round(s) {[k + 1 for k in reused]} from the pool cache")
    _add_diverse(s, plan, pool_seq)
    return plan


def _add_diverse(s: JobSettings, plan: Plan, pool_seq: np.ndarray) -> None:
    """score+diverse (engine: methods/common.diversity_embeddings): one forward of every pool row
    for its embedding, no head (free when the pool cache holds them, as for RDS+)."""
    if s.strategy != "score+diverse":
        return
    rows = np.arange(len(pool_seq), dtype=np.int64)
    phase = _pass(
        "pool embeddings",
        pool_seq,
        np.zeros(len(pool_seq), dtype=np.int64),
        plan_buckets(pool_seq, rows, s.tokens_per_batch),
    )
    plan.phases.append(dataclasses.replace(phase, loss_tokens=0))
    plan.notes.append("score+diverse: the pool's embeddings may come from the pool cache")


def gradient_batches(seq: np.ndarray) -> list[np.ndarray]:
    """methods.less.gradients.gradient_batches."""
    tokens = max(1, int(seq.max(initial=1))) * GRADIENT_BUFFER
    out: list[np.ndarray] = []
    for rows in plan_buckets(seq, np.arange(len(seq)), tokens):
        out.extend(rows[i : i + GRADIENT_BUFFER] for i in range(0, len(rows), GRADIENT_BUFFER))
    return out


def _plan_less(
    s: JobSettings,
    budget: int,
    pool_seq: np.ndarray,
    pool_loss: np.ndarray,
    val_seq: np.ndarray,
    val_loss: np.ndarray,
) -> Plan:
    """LESS: warmup epochs on a seeded 5% of the pool, then per checkpoint one forward and
    backward of every validation and pool row (per-row gradients, GRADIENT_BUFFER at a time)."""
    if not s.lora:
        raise ValueError("the LESS baseline needs LoRA (tov.lora.enabled = true)")
    size = len(pool_seq)
    count = max(1, math.floor(s.less_warmup_fraction * size + 0.5))
    rows = np.sort(np.random.default_rng([s.seed, 2]).choice(size, count, replace=False))
    seeds = [(s.seed, e, 2) for e in range(s.less_epochs)]
    plan = Plan(budget=budget, base_size=0, rounds=s.less_epochs)
    if s.task == "causal_lm":
        plan.phases.append(_head_check(s, pool_seq, pool_loss, rows, (s.seed, 0, 2)))
    plan.phases.append(_epochs("warmup epoch", pool_seq, pool_loss, rows, s, seeds))
    for name, seq, loss in (("validation", val_seq, val_loss), ("pool", pool_seq, pool_loss)):
        batches = gradient_batches(seq)
        phase = _pass(f"{name} gradients", seq, loss, batches, s.less_epochs)
        plan.phases.append(dataclasses.replace(phase, backward=True))
    return plan


def _plan_rds(s: JobSettings, budget: int, pool_seq: np.ndarray, val_seq: np.ndarray) -> Plan:
    """RDS+ (methods/rds.py): one forward of every pool and validation row for its embedding, no
    output head and no training (the pool's embeddings may come from the pool cache)."""
    plan = Plan(budget=budget, base_size=0, rounds=0)
    for name, seq in (("pool embeddings", pool_seq), ("validation embeddings", val_seq)):
        rows = np.arange(len(seq), dtype=np.int64)
        phase = _pass(
            name,
            seq,
            np.zeros(len(seq), dtype=np.int64),
            plan_buckets(seq, rows, s.tokens_per_batch),
        )
        plan.phases.append(dataclasses.replace(phase, loss_tokens=0))
    return plan
