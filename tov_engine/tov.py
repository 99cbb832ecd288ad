"""The Train-on-Validation trajectory (Algorithm 1): L rounds of base, validation, score.

Round k: (a) one epoch on U at eta -> theta_bas_k; (b) from theta_bas_k one epoch on Z_val at
epsilon * eta with a fresh AdamW -> theta_val_k; (c) score every row of R with the pair;
(d) Method A starts the next round from theta_val_k, Method B from theta_bas_k. The final score is
the mean over rounds.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from tov_engine.batching import plan_buckets
from tov_engine.checkpoint import RoundStore
from tov_engine.config import ToVConfig
from tov_engine.encoding import EncodedSet
from tov_engine.modeling import Surrogate
from tov_engine.progress import Tracker
from tov_engine.scoring import (
    TokenStore,
    paired_combine,
    run_pass,
    stored_combine,
    storing_combine,
)
from tov_engine.training import EpochPlan, make_optimizer, train_epoch

logger = logging.getLogger(__name__)


@dataclass
class Trajectory:
    """Inputs of a ToV run, and the timings it accumulates."""

    surrogate: Surrogate
    pool: EncodedSet
    val: EncodedSet
    base_rows: np.ndarray  # U, sorted pool indices
    score_rows: np.ndarray  # R, sorted pool indices
    config: ToVConfig
    rounds: int
    task: str
    seed: int
    pad_id: int
    tracker: Tracker
    store: RoundStore | None = None
    seconds: dict[str, float] = field(default_factory=lambda: {"train": 0.0, "score": 0.0})


def score_units(t: Trajectory) -> int:
    """Row passes one run scores: one per row with two adapters, two with full fine-tuning."""
    return t.rounds * len(t.score_rows) * (1 if t.surrogate.lora else 2)


def _train_base(t: Trajectory, optimizer: object, k: int) -> None:
    t.surrogate.use("base")
    plan = EpochPlan(t.pool, t.base_rows, t.config.batch_size, (t.seed, k, 0), t.task, t.pad_id)
    loss = train_epoch(t.surrogate.model, optimizer, plan, t.tracker)  # type: ignore[arg-type]
    logger.info("round %d: base epoch on %d rows, loss %.4f", k + 1, len(t.base_rows), loss)


def _train_val(t: Trajectory, k: int) -> None:
    t.surrogate.copy("base", "val")
    t.surrogate.use("val")
    # A fresh optimizer: Z_val must not pollute the base optimizer's moments.
    optimizer = make_optimizer(
        t.surrogate.params("val"), t.config.learning_rate * t.config.val_lr_factor
    )
    rows = np.arange(len(t.val), dtype=np.int64)
    plan = EpochPlan(t.val, rows, t.config.batch_size, (t.seed, k, 1), t.task, t.pad_id)
    loss = train_epoch(t.surrogate.model, optimizer, plan, t.tracker)
    logger.info("round %d: validation epoch on %d rows, loss %.4f", k + 1, len(t.val), loss)


def _round(t: Trajectory, optimizer: object, k: int, batches: list[np.ndarray]) -> np.ndarray:
    """One round; returns its (N,) scores. Leaves the weights where the next round starts."""
    s = t.surrogate
    start = time.perf_counter()
    _train_base(t, optimizer, k)
    model = s.model
    if s.lora:
        _train_val(t, k)
        t.seconds["train"] += time.perf_counter() - start
        start = time.perf_counter()
        combine = paired_combine(s, t.task, t.config.score_fn)
        scores = run_pass(model, t.pool, batches, combine, pad_id=t.pad_id, tracker=t.tracker)
        if t.config.variant == "A":
            s.copy("val", "base")
    else:
        t.seconds["train"] += time.perf_counter() - start
        start = time.perf_counter()
        store = TokenStore(t.pool)
        first = storing_combine(model, t.task, store)
        run_pass(model, t.pool, batches, first, pad_id=t.pad_id, tracker=t.tracker)
        snapshot = s.state("base") if t.config.variant == "B" else None
        t.seconds["score"] += time.perf_counter() - start
        start = time.perf_counter()
        _train_val(t, k)
        t.seconds["train"] += time.perf_counter() - start
        start = time.perf_counter()
        second = stored_combine(model, t.task, store, t.config.score_fn)
        scores = run_pass(model, t.pool, batches, second, pad_id=t.pad_id, tracker=t.tracker)
        if snapshot is not None:
            s.load_state("base", snapshot)
    t.seconds["score"] += time.perf_counter() - start
    s.use("base")
    return scores


def _resume(t: Trajectory, optimizer: object) -> list[np.ndarray]:
    if t.store is None:
        return []
    done = min(t.store.completed(), t.rounds)
    if done == 0:
        return []
    weights, state = t.store.state(done - 1)
    t.surrogate.load_state("base", weights)
    optimizer.load_state_dict(state)  # type: ignore[attr-defined]
    per_round = len(t.base_rows) + len(t.val)
    t.tracker.advance("train", done * per_round, f"resumed after round {done}")
    t.tracker.advance("score", done * score_units(t) // t.rounds)
    logger.info("resumed from %s after round %d of %d", t.store.root, done, t.rounds)
    return [t.store.scores(k) for k in range(done)]


def run_tov(t: Trajectory) -> tuple[np.ndarray, list[np.ndarray]]:
    """Run the remaining rounds of the trajectory.

    Args:
        t: the Trajectory (model, data, U and R, settings, progress, optional checkpoints).
    Returns:
        (scores (N,) float32 mean over rounds, NaN outside R; the per-round score arrays).
    """
    optimizer = make_optimizer(t.surrogate.params("base"), t.config.learning_rate)
    lengths = t.pool.seq_lengths
    batches = plan_buckets(lengths, t.score_rows, t.config.tokens_per_batch)
    per_round = _resume(t, optimizer)
    for k in range(len(per_round), t.rounds):
        scores = _round(t, optimizer, k, batches)
        per_round.append(scores)
        if t.store is not None:
            s = t.surrogate
            val = s.state("val") if s.lora else None
            t.store.save(k, scores, s.state("base"), optimizer.state_dict(), val)
    mean = np.mean(np.stack(per_round), axis=0).astype(np.float32)
    return mean, per_round
