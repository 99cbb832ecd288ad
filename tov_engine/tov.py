"""The Train-on-Validation trajectory (Algorithm 1): L rounds of base, validation, score.

Round k: (a) one epoch on U at eta -> theta_bas_k; (b) from theta_bas_k one epoch on Z_val at
epsilon * eta with a fresh AdamW -> theta_val_k; (c) score every row of R with the pair;
(d) Method A starts the next round from theta_val_k, Method B from theta_bas_k. The final score is
the mean over rounds.

The validation-free half of a round (the base epoch, theta_bas_k, and the base log-probs of R) can
come from a RoundSource (the pool cache, or the other targets of a multi-target run): every round
for Method B, round 0 for Method A. Such a round trains only on Z_val and scores with one pass.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tov_engine.batching import plan_buckets
from tov_engine.checkpoint import RoundStore
from tov_engine.config import ToVConfig
from tov_engine.encoding import EncodedSet
from tov_engine.merged import merged
from tov_engine.modeling import Surrogate
from tov_engine.poolcache import BaseSide, PendingRound, RoundSource
from tov_engine.progress import Tracker
from tov_engine.scoring import TokenStore, run_pass, stored_combine, storing_combine
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
    shared: RoundSource | None = None  # validation-free round halves to reuse and to keep
    reset: Callable[[], None] | None = None  # restores the initial weights before a fresh round 0
    seconds: dict[str, float] = field(default_factory=lambda: {"train": 0.0, "score": 0.0})
    reused: int = 0  # rounds whose base half came from `shared`


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


def train_round(t: Trajectory, optimizer: object, k: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Round k's two epochs and no scoring (staged runs score later, elsewhere: staged.py).

    The same epochs, seeds and order as `_round`, so the adapters are the ones a one-process run
    scores with. Returns CPU copies of (theta_bas_k, theta_val_k); leaves the weights where
    round k + 1 starts. LoRA only.
    """
    _train_base(t, optimizer, k)
    base = t.surrogate.state("base")
    _train_val(t, k)
    val = t.surrogate.state("val")
    if t.config.variant == "A":
        t.surrogate.copy("val", "base")
    t.surrogate.use("base")
    return base, val


def _shareable(t: Trajectory, k: int) -> bool:
    # Method A's round k > 0 starts from theta_val_{k-1}: it depends on Z_val.
    return t.shared is not None and (t.config.variant == "B" or k == 0)


def _base_half(
    t: Trajectory, optimizer: object, k: int, batches: list[np.ndarray]
) -> tuple[TokenStore | None, PendingRound | None, dict[str, Any] | None]:
    """theta_bas_k into the base weights: from `shared`, else a base epoch.

    Returns (the base log-probs of R if they came from `shared`; a PendingRound to fill and commit
    if this round's base half should be kept; the base weights as loaded, or None).
    """
    shared = t.shared if _shareable(t, k) else None
    side: BaseSide | None = shared.load(k) if shared is not None else None
    if side is not None:
        t.surrogate.load_state("base", side.weights)
        optimizer.load_state_dict(side.optimizer)  # type: ignore[attr-defined]
        t.tracker.advance("train", len(t.base_rows), f"round {k + 1}: base epoch reused")
        t.reused += 1
        return TokenStore(t.pool, batches, side.logprobs), None, side.weights
    if k == 0 and t.reset is not None:
        t.reset()
    _train_base(t, optimizer, k)
    if shared is None:
        return None, None, None
    return None, shared.begin(k, TokenStore.size_for(t.pool, batches)), None


def _round(t: Trajectory, optimizer: object, k: int, batches: list[np.ndarray]) -> np.ndarray:
    """One round; returns its (N,) scores. Leaves the weights where the next round starts."""
    start = time.perf_counter()
    kept, pending, loaded = _base_half(t, optimizer, k, batches)
    try:
        scores = _score_round(t, optimizer, k, batches, kept, pending, loaded, start)
    finally:
        if pending is not None:
            pending.abort()  # a no-op once committed
    t.surrogate.use("base")
    return scores


def _first_half(n: int) -> int:
    return (n + 1) // 2


def _second_half(n: int) -> int:
    return n // 2


def _weights(t: Trajectory, which: str) -> contextlib.AbstractContextManager[None]:
    """Adapter `which` folded into the weights for a scoring pass (LoRA); the live weights else."""
    return merged(t.surrogate, which) if t.surrogate.lora else contextlib.nullcontext()


def _score_round(
    t: Trajectory,
    optimizer: object,
    k: int,
    batches: list[np.ndarray],
    kept: TokenStore | None,
    pending: PendingRound | None,
    loaded: dict[str, Any] | None,
    start: float,
) -> np.ndarray:
    """The base pass (unless `kept` holds it), the validation epoch, the validation pass.

    Progress: with LoRA a row counts once per round (half in each pass); with full fine-tuning
    once per pass.
    """
    s, model, lora = t.surrogate, t.surrogate.model, t.surrogate.lora
    opt_state = optimizer.state_dict  # type: ignore[attr-defined]
    first, second = (_first_half, _second_half) if lora else (None, None)
    t.seconds["train"] += time.perf_counter() - start
    start = time.perf_counter()
    snapshot = loaded
    if kept is None:
        kept = TokenStore(t.pool, batches, pending.logprobs if pending is not None else None)
        with _weights(t, "base"):
            keep = storing_combine(model, t.task, kept)
            run_pass(model, t.pool, batches, keep, pad_id=t.pad_id, tracker=t.tracker, units=first)
        if not lora and (pending is not None or t.config.variant == "B"):
            snapshot = s.state("base")  # the val epoch trains these weights in place
        if pending is not None:
            pending.commit(snapshot if snapshot is not None else s.state("base"), opt_state())
    else:
        done = sum(first(len(b)) for b in batches) if first else len(t.score_rows)
        t.tracker.advance("score", done, f"round {k + 1}: base pass reused")
    t.seconds["score"] += time.perf_counter() - start
    start = time.perf_counter()
    _train_val(t, k)
    t.seconds["train"] += time.perf_counter() - start
    start = time.perf_counter()
    with _weights(t, "val"):
        combine = stored_combine(
            model, t.task, kept, t.config.score_fn, reduction=t.config.token_score
        )
        scores = run_pass(
            model, t.pool, batches, combine, pad_id=t.pad_id, tracker=t.tracker, units=second
        )
    if lora and t.config.variant == "A":
        s.copy("val", "base")
    if not lora and t.config.variant == "B" and snapshot is not None:
        s.load_state("base", snapshot)
    t.seconds["score"] += time.perf_counter() - start
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
