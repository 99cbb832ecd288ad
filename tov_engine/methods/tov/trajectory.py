"""The Train-on-Validation trajectory (Algorithm 1): L rounds of base, validation, score.

Round k: (a) one epoch on U at eta -> theta_bas_k; (b) from theta_bas_k one epoch on Z_val at
epsilon * eta with a fresh AdamW -> theta_val_k; (c) score every row of R with the pair;
(d) Method A starts the next round from theta_val_k, Method B from theta_bas_k. The final score is
the mean over rounds.

Caching and resume wrap the loop: the validation-free half of a round (theta_bas_k, the base
optimizer, the base log-probs of R) can come from BaseHalves (the pool cache, or the other targets
of a multi-target run), every round for Method B and round 0 for Method A, and such a round trains
only on Z_val and scores with one pass; finished rounds come from RoundCheckpoints. Full
fine-tuning is the same loop: the surrogate snapshots and restores theta_bas (model/surrogate.py).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tov_engine.config import ToVConfig
from tov_engine.data.batching import plan_buckets
from tov_engine.data.encoded import EncodedSet
from tov_engine.methods.tov.scoring import base_pass, base_units, pass_units, val_pass
from tov_engine.model.scoring import RowLosses, TokenStore
from tov_engine.model.surrogate import Surrogate
from tov_engine.model.training import EpochPlan, make_optimizer, train_epoch
from tov_engine.progress import Tracker
from tov_engine.store.checkpoints import RoundCheckpoints
from tov_engine.store.poolcache import BaseHalf, BaseHalves, PendingBaseHalf

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
    checkpoints: RoundCheckpoints | None = None
    base_halves: BaseHalves | None = None  # validation-free round halves to reuse and to keep
    reset: Callable[[], None] | None = None  # restores the initial weights before a fresh round 0
    seconds: dict[str, float] = field(default_factory=lambda: {"train": 0.0, "score": 0.0})
    reused: int = 0  # rounds whose base half came from `base_halves`
    # Round k's (loss before, loss after) per row (explanations); None for a round resumed from a
    # checkpoint written without them.
    losses: dict[int, tuple[np.ndarray, np.ndarray] | None] = field(default_factory=dict)

    @contextlib.contextmanager
    def timing(self, stage: str) -> Iterator[None]:
        """Add the block's wall time to seconds[stage]."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] += time.perf_counter() - start


def score_units(t: Trajectory) -> int:
    """Progress units of scoring in one run: per round, both passes over R."""
    first, second = pass_units(t.surrogate)
    per_row = 1 if first is not None and second is not None else 2
    return t.rounds * len(t.score_rows) * per_row


def _train_base(t: Trajectory, optimizer: Any, k: int) -> None:
    t.surrogate.use("base")
    plan = EpochPlan(t.pool, t.base_rows, t.config.batch_size, (t.seed, k, 0), t.task, t.pad_id)
    loss = train_epoch(t.surrogate.model, optimizer, plan, t.tracker)
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


def _start_next_round(t: Trajectory, snapshot: dict[str, Any] | None) -> None:
    """Method A goes on from theta_val_k, Method B from theta_bas_k."""
    if t.config.variant == "A":
        t.surrogate.copy("val", "base")
    else:
        t.surrogate.restore(snapshot)
    t.surrogate.use("base")


def train_round(t: Trajectory, optimizer: Any, k: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Round k's two epochs and no scoring (staged runs score later, elsewhere: staged.py).

    The same epochs, seeds and order as `_round`, so the adapters are the ones a one-process run
    scores with. Returns CPU copies of (theta_bas_k, theta_val_k); leaves the weights where
    round k + 1 starts. LoRA only.
    """
    _train_base(t, optimizer, k)
    base = t.surrogate.state("base")
    _train_val(t, k)
    val = t.surrogate.state("val")
    _start_next_round(t, None)
    return base, val


def _reuse_base_half(t: Trajectory, optimizer: Any, k: int) -> BaseHalf | None:
    """Round k's base half from `base_halves`, loaded into the weights and optimizer, or None.

    Method A's round k > 0 starts from theta_val_{k-1}: it depends on Z_val and is never shared."""
    if t.base_halves is None or not (t.config.variant == "B" or k == 0):
        return None
    half = t.base_halves.load(k)
    if half is not None:
        t.surrogate.load_state("base", half.weights)
        optimizer.load_state_dict(half.optimizer)
        t.tracker.advance("train", len(t.base_rows), f"round {k + 1}: base epoch reused")
        t.reused += 1
    return half


@contextlib.contextmanager
def _keeping(
    t: Trajectory, k: int, batches: list[np.ndarray], reused: BaseHalf | None
) -> Iterator[PendingBaseHalf | None]:
    """Round k's base half to fill and commit when it should be kept, else None (dropped unless
    committed)."""
    halves = t.base_halves if reused is None and (t.config.variant == "B" or k == 0) else None
    pending = halves.begin(k, TokenStore.size_for(t.pool, batches)) if halves is not None else None
    try:
        yield pending
    finally:
        if pending is not None:
            pending.abort()  # a no-op once committed


def _base_epoch(t: Trajectory, optimizer: Any, k: int) -> BaseHalf | None:
    """theta_bas_k: round k's base half reused (returned), else one epoch on U (None)."""
    reused = _reuse_base_half(t, optimizer, k)
    if reused is None:
        if k == 0 and t.reset is not None:
            t.reset()
        _train_base(t, optimizer, k)
    return reused


def _base_side(
    t: Trajectory, optimizer: Any, k: int, batches: list[np.ndarray], reused: BaseHalf | None
) -> tuple[TokenStore, dict[str, Any] | None]:
    """The base log-probs of R (the base pass, unless reused) and theta_bas_k where it must be
    restored or kept (else None); commits the round's base half when it is to be kept."""
    s = t.surrogate
    with _keeping(t, k, batches, reused) as pending:
        if reused is None:
            buffer = pending.logprobs if pending is not None else None
            kept = base_pass(
                s, t.pool, batches, task=t.task, pad_id=t.pad_id, tracker=t.tracker, logprobs=buffer
            )
        else:
            kept = TokenStore(t.pool, batches, reused.logprobs)
            t.tracker.advance("score", base_units(s, batches), f"round {k + 1}: base pass reused")
        snapshot = reused.weights if reused is not None else None
        if snapshot is None and (pending is not None or t.config.variant == "B"):
            snapshot = s.snapshot()
        if pending is not None:
            base = snapshot if snapshot is not None else s.state("base")
            pending.commit(base, optimizer.state_dict())
    return kept, snapshot


def _round(t: Trajectory, optimizer: Any, k: int, batches: list[np.ndarray]) -> np.ndarray:
    """Round k: theta_bas_k, the base pass, theta_val_k, the validation pass; returns the (N,)
    scores and leaves the weights where the next round starts."""
    with t.timing("train"):
        reused = _base_epoch(t, optimizer, k)
    with t.timing("score"):
        base_logprobs, snapshot = _base_side(t, optimizer, k, batches, reused)
    with t.timing("train"):
        _train_val(t, k)
    losses = RowLosses(len(t.pool))
    with t.timing("score"):
        scores = val_pass(
            t.surrogate,
            t.pool,
            batches,
            base_logprobs,
            config=t.config,
            task=t.task,
            pad_id=t.pad_id,
            tracker=t.tracker,
            losses=losses,
        )
        _start_next_round(t, snapshot)
    t.losses[k] = (losses.before, losses.after)
    return scores


def _resume(t: Trajectory, optimizer: Any) -> list[np.ndarray]:
    """The scores of the finished rounds in `checkpoints`; the weights and optimizer where the
    next round starts."""
    if t.checkpoints is None:
        return []
    done = min(t.checkpoints.completed("round"), t.rounds)
    if done == 0:
        return []
    weights, state = t.checkpoints.state(done - 1)
    t.surrogate.load_state("base", weights)
    optimizer.load_state_dict(state)
    per_round = len(t.base_rows) + len(t.val)
    t.tracker.advance("train", done * per_round, f"resumed after round {done}")
    t.tracker.advance("score", done * score_units(t) // t.rounds)
    logger.info("resumed from %s after round %d of %d", t.checkpoints.root, done, t.rounds)
    t.losses.update({k: t.checkpoints.losses(k) for k in range(done)})
    return [t.checkpoints.scores(k) for k in range(done)]


def _save(t: Trajectory, k: int, scores: np.ndarray, optimizer: Any) -> None:
    if t.checkpoints is not None:
        s = t.surrogate
        val = s.state("val") if s.lora else None
        state = s.state("base")
        t.checkpoints.save(k, scores, state, optimizer.state_dict(), val, t.losses.get(k))


def mean_losses(t: Trajectory) -> tuple[np.ndarray, np.ndarray] | None:
    """Every row's (loss before, loss after) averaged over the rounds; None when a round has
    none (resumed from a checkpoint written without them)."""
    rounds = [t.losses.get(k) for k in range(t.rounds)]
    if not rounds or any(r is None for r in rounds):
        return None
    kept = [r for r in rounds if r is not None]
    return mean_over_rounds([b for b, _ in kept]), mean_over_rounds([a for _, a in kept])


def run_tov(t: Trajectory) -> tuple[np.ndarray, list[np.ndarray]]:
    """Algorithm 1: the rounds not yet in t.checkpoints, then the mean of every round's scores.

    Returns:
        (scores (N,) float32 mean over rounds, NaN outside R; the per-round score arrays).
    """
    optimizer = make_optimizer(t.surrogate.params("base"), t.config.learning_rate)
    batches = plan_buckets(t.pool.seq_lengths, t.score_rows, t.config.tokens_per_batch)
    per_round = _resume(t, optimizer)
    for k in range(len(per_round), t.rounds):
        per_round.append(_round(t, optimizer, k, batches))
        _save(t, k, per_round[-1], optimizer)
    return mean_over_rounds(per_round), per_round


def mean_over_rounds(per_round: list[np.ndarray]) -> np.ndarray:
    """The final scores: the float32 mean of the rounds' (N,) scores."""
    return np.mean(np.stack(per_round), axis=0).astype(np.float32)
