"""ToV in stages that separate processes can run: train every round, score shards, select.

A round's training never reads scores (tov.py), so the whole trajectory can be trained first and
its adapters (theta_bas_k and theta_val_k of every round k) saved; the pool is then scored in
shards, by any number of processes that load those adapters, and the shards' scores are joined
and selected from. A shard is a contiguous run of the one scoring plan (plan_buckets over R), so
every row is scored in exactly the batch, with exactly the weights, of a one-process run: the
scores and the selection are identical (tests/engine/test_staged.py).

LoRA only: with full fine-tuning every round would save two whole models; such jobs run in one
process (`run_selection`).

    staged = prepare_staged(pool_path=..., validation_path=..., model=..., config=...)
    staged.train(folder)                                 # one process (a GPU)
    parts = {s.index: staged.score(folder, s) for s in staged.shards(50_000)}   # anywhere
    outcome = staged.finish(parts)
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tov_engine.checkpoint import claim_folder
from tov_engine.config import JobConfig
from tov_engine.errors import CheckpointError, ConfigError
from tov_engine.progress import ProgressCallback, Tracker
from tov_engine.runner import Job, SelectionOutcome, job_fingerprint_parts, prepare_job
from tov_engine.selection import select

logger = logging.getLogger(__name__)

TRAIN_COST = 3.0  # a training row costs about three forward passes (as methods.TRAIN_COST)


@dataclass(frozen=True)
class Shard:
    """Batches [first_batch, end_batch) of the scoring plan: `rows` pool rows."""

    index: int
    first_batch: int
    end_batch: int
    rows: int


class TrainedRounds:
    """The adapters of every round, in a folder that scoring processes read.

    Layout: manifest.json {"fingerprint"}; round_000/{base,val}.safetensors (theta_bas_0,
    theta_val_0), round_000/optimizer.pt (the base optimizer after round 0, to resume training),
    round_000/done (written last).
    """

    def __init__(self, root: str | Path, fingerprint: str) -> None:
        self.root = Path(root)
        claim_folder(self.root, fingerprint, "the rounds")

    def _dir(self, k: int) -> Path:
        return self.root / f"round_{k:03d}"

    def completed(self) -> int:
        """How many rounds, counted from the first, are saved."""
        k = 0
        while (self._dir(k) / "done").exists():
            k += 1
        return k

    def save(self, k: int, base: dict[str, Any], val: dict[str, Any], optimizer: Any) -> None:
        import torch
        from safetensors.torch import save_file

        folder = self._dir(k)
        if folder.exists():
            shutil.rmtree(folder)  # half written by a crashed run
        folder.mkdir()
        for name, state in (("base", base), ("val", val)):
            save_file(
                {n: t.contiguous() for n, t in state.items()}, str(folder / f"{name}.safetensors")
            )
        torch.save(optimizer, folder / "optimizer.pt")
        (folder / "done").write_text("ok")

    def adapter(self, k: int, which: str) -> dict[str, Any]:
        """theta_bas_k ("base") or theta_val_k ("val")."""
        from safetensors.torch import load_file

        path = self._dir(k) / f"{which}.safetensors"
        try:
            return load_file(str(path))
        except (OSError, RuntimeError) as exc:
            raise CheckpointError(f"cannot read the adapter {path}: {exc}") from exc

    def optimizer(self, k: int) -> Any:
        import torch

        path = self._dir(k) / "optimizer.pt"
        try:
            return torch.load(path, weights_only=True)
        except (OSError, RuntimeError) as exc:
            raise CheckpointError(f"cannot read the optimizer state {path}: {exc}") from exc


class StagedToV:
    """One prepared ToV job, run in stages (see the module docstring).

    Args:
        job: the prepared job (prepare_staged); its method must be "tov" with LoRA.
    """

    def __init__(self, job: Job) -> None:
        from tov_engine.batching import plan_buckets
        from tov_engine.methods import split_pool

        if job.config.method != "tov" or not job.config.tov.lora.enabled:
            raise ConfigError("staged runs support method 'tov' with LoRA only")
        self.job = job
        self.base, self.rest, self.rounds = split_pool(job)
        cfg = job.config.tov
        self.batches = plan_buckets(job.pool.seq_lengths, self.rest, cfg.tokens_per_batch)
        self._surrogate: Any = None

    @property
    def fingerprint(self) -> str:
        from tov_engine.checkpoint import fingerprint

        return fingerprint(*job_fingerprint_parts(self.job), self.base.tolist(), self.rounds)

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
            from tov_engine.methods import build_surrogate

            self._surrogate = build_surrogate(self.job)
        return self._surrogate

    def _trajectory(self, tracker: Tracker) -> Any:
        from tov_engine.tov import Trajectory

        job = self.job
        return Trajectory(
            surrogate=self._surrogate_for(),
            pool=job.pool,
            val=job.val,
            base_rows=self.base,
            score_rows=self.rest,
            config=job.config.tov,
            rounds=self.rounds,
            task=job.config.task,
            seed=job.config.seed,
            pad_id=int(job.tokenizer.pad_token_id),
            tracker=tracker,
        )

    def train(
        self,
        folder: str | Path,
        progress: ProgressCallback | None = None,
        should_cancel: Callable[[], bool] | None = None,
    ) -> TrainedRounds:
        """Train the rounds not yet in `folder` and save their adapters there."""
        from tov_engine.runner import seed_everything
        from tov_engine.tov import train_round
        from tov_engine.training import make_optimizer

        store = TrainedRounds(folder, self.fingerprint)
        per_round = len(self.base) + len(self.job.val)
        tracker = Tracker(
            {"train": self.rounds * per_round}, {"train": 1.0}, progress, should_cancel
        )
        seed_everything(self.job.config.seed)
        t = self._trajectory(tracker)
        optimizer = make_optimizer(t.surrogate.params("base"), t.config.learning_rate)
        done = min(store.completed(), self.rounds)
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
        """(rounds, shard.rows) float32: each round's scores of the shard's rows."""
        from tov_engine.merged import merged
        from tov_engine.scoring import TokenStore, run_pass, stored_combine, storing_combine

        store = TrainedRounds(folder, self.fingerprint)
        if store.completed() < self.rounds:
            raise CheckpointError(f"{folder} holds {store.completed()} of {self.rounds} rounds")
        rows = self.shard_rows(shard)
        batches = self.batches[shard.first_batch : shard.end_batch]
        tracker = Tracker(
            {"score": self.rounds * len(rows)}, {"score": 1.0}, progress, should_cancel
        )
        s = self._surrogate_for()
        pool, task, pad_id = (
            self.job.pool,
            self.job.config.task,
            int(self.job.tokenizer.pad_token_id),
        )
        out = np.empty((self.rounds, len(rows)), dtype=np.float32)
        for k in range(self.rounds):
            s.load_state("base", store.adapter(k, "base"))
            s.load_state("val", store.adapter(k, "val"))
            kept = TokenStore(pool, batches)
            with merged(s, "base"):
                keep = storing_combine(s.model, task, kept)
                run_pass(s.model, pool, batches, keep, pad_id=pad_id, tracker=tracker, units=_first)
            with merged(s, "val"):
                cfg = self.job.config.tov
                combine = stored_combine(
                    s.model, task, kept, cfg.score_fn, reduction=cfg.token_score
                )
                scores = run_pass(
                    s.model, pool, batches, combine, pad_id=pad_id, tracker=tracker, units=_second
                )
            out[k] = scores[rows]
        s.use("base")
        return out

    def finish(self, parts: Mapping[int, np.ndarray], shards: list[Shard]) -> SelectionOutcome:
        """Join every shard's scores (`parts[shard.index]`), average the rounds, select."""
        from tov_engine.batching import padding_waste

        missing = [s.index for s in shards if s.index not in parts]
        if missing:
            raise ConfigError(f"scores of shard(s) {missing[:5]} are missing")
        size = len(self.job.pool)
        per_round = np.full((self.rounds, size), np.nan, dtype=np.float32)
        for shard in shards:
            per_round[:, self.shard_rows(shard)] = parts[shard.index]
        # As tov.run_tov: the mean of the per-round arrays, in float32.
        scores = np.mean(np.stack(list(per_round)), axis=0).astype(np.float32)
        job = self.job
        started = time.perf_counter()
        lengths = job.pool.loss_lengths
        chosen = select(
            scores=scores,
            lengths=lengths,
            base_indices=self.base,
            config=job.config.selection,
            seed=job.config.seed,
        )
        job.stats.update(
            rounds=self.rounds,
            base_size=len(self.base),
            scoring_batches=len(self.batches),
            padding_waste=padding_waste(job.pool.seq_lengths, self.batches),
            shards=len(shards),
            seconds_select=time.perf_counter() - started,
        )
        return SelectionOutcome(
            scores=scores,
            lengths=lengths,
            base_indices=self.base,
            selection=chosen,
            stats=job.stats,
        )


def _first(n: int) -> int:
    return (n + 1) // 2  # a LoRA row counts half in each of its two passes (as tov.py)


def _second(n: int) -> int:
    return n // 2


def prepare_staged(
    *,
    pool_path: str | Path,
    validation_path: str | Path,
    model: str | Path,
    config: JobConfig,
    cache_dir: str | Path | None = None,
) -> StagedToV:
    """Validate and tokenise the inputs (as run_selection; the pool cache makes this cheap for
    every process after the first) and plan the staged run."""
    from tov_engine.runner import seed_everything

    seed_everything(config.seed)
    job = prepare_job(
        pool_path=pool_path,
        validation_path=validation_path,
        model=model,
        config=config,
        cache_dir=cache_dir,
    )
    return StagedToV(job)
