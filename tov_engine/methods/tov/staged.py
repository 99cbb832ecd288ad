"""ToV in stages that separate processes can run: train every round, score shards, select.

A round's training never reads scores (trajectory.py), so the whole trajectory can be trained first
and its adapters (theta_bas_k and theta_val_k of every round k) saved; the pool is then scored in
shards, by any number of processes that load those adapters, and the shards' scores are joined and
selected from. A shard is a contiguous run of the one scoring plan (plan_buckets over R), so every
row is scored in exactly the batch, with exactly the weights, of a one-process run: the scores and
the selection are identical (tests/engine/test_staged.py).

LoRA only: with full fine-tuning every round would save two whole models; such jobs run in one
process (`run_selection`).

    staged = prepare_staged(pool_path=..., validation_path=..., model=..., config=...)
    staged.train(folder)                                 # one process (a GPU)
    parts = {s.index: staged.score(folder, s) for s in staged.shards(50_000)}   # anywhere
    outcome = staged.finish(parts)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tov_engine.config import JobConfig
from tov_engine.data.batching import padding_waste, plan_buckets
from tov_engine.errors import CheckpointError, ConfigError
from tov_engine.job import Job, SelectionOutcome, job_parts, prepare_job, seed_everything
from tov_engine.leakage import LeakageConfig
from tov_engine.methods.common import TRAIN_COST, build_surrogate, finish_selection, split_pool
from tov_engine.methods.tov.run import trajectory
from tov_engine.methods.tov.scoring import base_pass, val_pass
from tov_engine.methods.tov.trajectory import mean_over_rounds, train_round
from tov_engine.model.scoring import RowLosses
from tov_engine.model.training import make_optimizer
from tov_engine.progress import ProgressCallback, Tracker
from tov_engine.store.checkpoints import TrainedAdapters
from tov_engine.store.keys import fingerprint

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Shard:
    """Batches [first_batch, end_batch) of the scoring plan: `rows` pool rows."""

    index: int
    first_batch: int
    end_batch: int
    rows: int


class StagedToV:
    """One prepared ToV job, run in stages (see the module docstring).

    Args:
        job: the prepared job (prepare_staged); its method must be "tov" with LoRA.
    """

    def __init__(self, job: Job) -> None:
        if job.config.method != "tov" or not job.config.tov.lora.enabled:
            raise ConfigError("staged runs support method 'tov' with LoRA only")
        self.job = job
        self.base, self.rest, self.rounds = split_pool(job)
        cfg = job.config.tov
        self.batches = plan_buckets(job.pool.seq_lengths, self.rest, cfg.tokens_per_batch)
        self._surrogate: Any = None

    @property
    def fingerprint(self) -> str:
        return fingerprint(*job_parts(self.job), self.base.tolist(), self.rounds)

    @property
    def train_share(self) -> float:
        """The training stage's share of the job's forward-pass cost (for an overall fraction)."""
        train = TRAIN_COST * self.rounds * (len(self.base) + len(self.job.val))
        score = 2.0 * self.rounds * len(self.rest)
        return train / (train + score) if train + score else 0.0

    def shards(self, rows_per_shard: int) -> list[Shard]:
        """The plan cut into runs of whole batches of about `rows_per_shard` rows each."""
        if rows_per_shard < 1:
            raise ConfigError("rows_per_shard must be at least 1")
        shards: list[Shard] = []
        first, rows = 0, 0
        for i, batch in enumerate(self.batches):
            rows += len(batch)
            if rows >= rows_per_shard or i == len(self.batches) - 1:
                shards.append(Shard(len(shards), first, i + 1, rows))
                first, rows = i + 1, 0
        return shards

    def shard_rows(self, shard: Shard) -> np.ndarray:
        """The pool indices a shard scores, in the order of its scores."""
        parts = self.batches[shard.first_batch : shard.end_batch]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

    def _surrogate_for(self) -> Any:
        if self._surrogate is None:
            self._surrogate = build_surrogate(self.job)
        return self._surrogate

    def train(
        self,
        folder: str | Path,
        progress: ProgressCallback | None = None,
        should_cancel: Callable[[], bool] | None = None,
    ) -> TrainedAdapters:
        """Train the rounds not yet in `folder` and save their adapters there."""
        store = TrainedAdapters(folder, self.fingerprint)
        per_round = len(self.base) + len(self.job.val)
        tracker = Tracker(
            {"train": self.rounds * per_round}, {"train": 1.0}, progress, should_cancel
        )
        seed_everything(self.job.config.seed)
        split = (self.base, self.rest, self.rounds)
        t = trajectory(self.job, self._surrogate_for(), split, tracker)
        optimizer = make_optimizer(t.surrogate.params("base"), t.config.learning_rate)
        done = min(store.completed("round"), self.rounds)
        if done:  # resume where round `done` starts: A from theta_val, B from theta_bas
            start = "val" if t.config.variant == "A" else "base"
            t.surrogate.load_state("base", store.adapter(done - 1, start))
            optimizer.load_state_dict(store.optimizer(done - 1))
            tracker.advance("train", done * per_round, f"resumed after round {done}")
        started = time.perf_counter()
        for k in range(done, self.rounds):
            base, val = train_round(t, optimizer, k)
            store.save(k, base, val, optimizer.state_dict())
            logger.info("staged: round %d of %d trained and saved", k + 1, self.rounds)
        self.job.stats["seconds_train"] = time.perf_counter() - started
        return store

    def score(
        self,
        folder: str | Path,
        shard: Shard,
        progress: ProgressCallback | None = None,
        should_cancel: Callable[[], bool] | None = None,
    ) -> np.ndarray:
        """(3, rounds, shard.rows) float32: each round's scores of the shard's rows, and their
        losses before and after (explanations)."""
        store = TrainedAdapters(folder, self.fingerprint)
        trained = store.completed("round")
        if trained < self.rounds:
            raise CheckpointError(f"{folder} holds {trained} of {self.rounds} rounds")
        rows = self.shard_rows(shard)
        batches = self.batches[shard.first_batch : shard.end_batch]
        tracker = Tracker(
            {"score": self.rounds * len(rows)}, {"score": 1.0}, progress, should_cancel
        )
        s = self._surrogate_for()
        job = self.job
        task, pad_id, cfg = job.config.task, int(job.tokenizer.pad_token_id), job.config.tov
        out = np.empty((3, self.rounds, len(rows)), dtype=np.float32)
        for k in range(self.rounds):
            s.load_state("base", store.adapter(k, "base"))
            s.load_state("val", store.adapter(k, "val"))
            kept = base_pass(s, job.pool, batches, task=task, pad_id=pad_id, tracker=tracker)
            losses = RowLosses(len(job.pool))
            scores = val_pass(
                s,
                job.pool,
                batches,
                kept,
                config=cfg,
                task=task,
                pad_id=pad_id,
                tracker=tracker,
                losses=losses,
            )
            out[:, k] = scores[rows], losses.before[rows], losses.after[rows]
        s.use("base")
        return out

    def finish(self, parts: Mapping[int, np.ndarray], shards: list[Shard]) -> SelectionOutcome:
        """Join every shard's scores (`parts[shard.index]`: `score`'s arrays; a 2-D part holds
        scores only, and the outcome then has no losses), average the rounds, select."""
        missing = [s.index for s in shards if s.index not in parts]
        if missing:
            raise ConfigError(f"scores of shard(s) {missing[:5]} are missing")
        size = len(self.job.pool)
        joined = np.full((3, self.rounds, size), np.nan, dtype=np.float32)
        with_losses = True
        for shard in shards:
            part = parts[shard.index]
            with_losses = with_losses and part.ndim == 3
            joined[:, :, self.shard_rows(shard)] = part if part.ndim == 3 else part[None]
        job = self.job
        job.stats.update(
            rounds=self.rounds,
            base_size=len(self.base),
            scoring_batches=len(self.batches),
            padding_waste=padding_waste(job.pool.seq_lengths, self.batches),
            shards=len(shards),
        )
        losses = (mean_over_rounds(list(joined[1])), mean_over_rounds(list(joined[2])))
        return finish_selection(
            job,
            mean_over_rounds(list(joined[0])),
            self.base,
            None,
            losses=losses if with_losses else None,
        )


def prepare_staged(
    *,
    pool_path: str | Path,
    validation_path: str | Path,
    model: str | Path,
    config: JobConfig,
    cache_dir: str | Path | None = None,
    decontaminate_against: Sequence[str | Path] = (),
    leakage: LeakageConfig | None = None,
) -> StagedToV:
    """Validate and tokenise the inputs (as run_selection; the pool cache makes this cheap for
    every process after the first) and plan the staged run."""
    seed_everything(config.seed)
    job = prepare_job(
        pool_path=pool_path,
        validation_path=validation_path,
        model=model,
        config=config,
        cache_dir=cache_dir,
        decontaminate_against=tuple(decontaminate_against),
        leakage=leakage,
    )
    return StagedToV(job)
