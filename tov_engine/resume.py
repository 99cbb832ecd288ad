"""Resumable stages of the baselines (uncertainty, LESS), so a rerun skips their finished work.

ToV keeps per-round checkpoints (checkpoint.RoundStore); the baselines keep finished stages:

  manifest.json            {"fingerprint": ..., "kind": "uncertainty" | "less"}: whose folder it is
  <stage>/...              the stage's files (weights, optimizer state, arrays, meta.json)
  <stage>/done             written last: a stage without it is redone

A folder holding another job's stages (different data, model, settings or method, or ToV's rounds)
raises CheckpointError, as RoundStore does.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from tov_engine.config import SelectionConfig
from tov_engine.encoding import EncodedSet, array_sha256
from tov_engine.errors import CheckpointError
from tov_engine.modeling import Surrogate
from tov_engine.progress import Tracker
from tov_engine.runner import Job
from tov_engine.scoring import Combine, run_pass

logger = logging.getLogger(__name__)

DONE = "done"


def job_parts(job: Job) -> tuple[Any, ...]:
    """What determines a job's work: model, data, settings (not the selection, not the device).

    The same value as runner.job_fingerprint_parts, with the data hashed in chunks (no copy of the
    tokenised pool in memory)."""
    config = dataclasses.replace(job.config, selection=SelectionConfig(), device=None)
    arrays = (job.pool.ids, job.pool.labels, job.val.ids, job.val.labels)
    data = hashlib.sha256(b"".join(array_sha256(a) for a in arrays))
    return (str(job.model.resolve()), data.hexdigest(), config)


def stage_fingerprint(kind: str, *parts: Any) -> str:
    """A stable hash of the method and everything that determines its stages."""
    return hashlib.sha256(json.dumps([kind, *[repr(p) for p in parts]]).encode()).hexdigest()


class StageStore:
    """Finished stages of one job under `root`.

    Args:
        root: the checkpoint folder (created if missing). fingerprint: identifies the job (see
            stage_fingerprint). kind: the method, recorded in the manifest.
    """

    def __init__(self, root: str | Path, fingerprint: str, kind: str) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        manifest = self.root / "manifest.json"
        if manifest.exists():
            try:
                found = json.loads(manifest.read_text())
            except (OSError, ValueError) as exc:
                raise CheckpointError(f"{manifest} cannot be read: {exc}") from exc
            if found.get("fingerprint") != fingerprint or found.get("kind") != kind:
                raise CheckpointError(
                    f"{self.root} holds checkpoints of another job (different data, model, "
                    "method or settings); use an empty folder"
                )
        else:
            manifest.write_text(json.dumps({"fingerprint": fingerprint, "kind": kind}))

    def folder(self, name: str) -> Path:
        """Where stage `name` lives."""
        return self.root / name

    def done(self, name: str) -> bool:
        """True when stage `name` is finished."""
        return (self.folder(name) / DONE).exists()

    def begin(self, name: str) -> Path:
        """An empty folder for stage `name` (a half-written one from a crash is removed)."""
        folder = self.folder(name)
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        return folder

    def finish(self, name: str) -> None:
        """Mark stage `name` finished (its files are all written)."""
        (self.folder(name) / DONE).write_text("ok")
        logger.info("checkpoint: stage %s saved in %s", name, self.root)

    def drop(self, name: str, *files: str) -> None:
        """Remove files of a finished stage that later stages made unnecessary."""
        for file in files:
            (self.folder(name) / file).unlink(missing_ok=True)

    # ---- file helpers --------------------------------------------------------------------

    def save_tensors(self, name: str, file: str, tensors: dict[str, torch.Tensor]) -> None:
        """Write tensors as safetensors into stage `name`."""
        from safetensors.torch import save_file

        save_file({k: t.contiguous() for k, t in tensors.items()}, str(self.folder(name) / file))

    def load_tensors(self, name: str, file: str) -> dict[str, torch.Tensor]:
        """Tensors written by save_tensors."""
        from safetensors.torch import load_file

        path = self.folder(name) / file
        try:
            return load_file(str(path))
        except (OSError, RuntimeError) as exc:
            raise CheckpointError(f"cannot read the checkpoint {path}: {exc}") from exc

    def save_state(self, name: str, file: str, state: dict[str, Any]) -> None:
        """Write an optimizer or scheduler state_dict into stage `name`."""
        torch.save(state, self.folder(name) / file)

    def load_state(self, name: str, file: str) -> dict[str, Any]:
        """A state_dict written by save_state."""
        path = self.folder(name) / file
        try:
            state: dict[str, Any] = torch.load(path, weights_only=True)
        except (OSError, RuntimeError) as exc:
            raise CheckpointError(f"cannot read the checkpoint {path}: {exc}") from exc
        return state

    def save_array(self, name: str, file: str, values: np.ndarray) -> None:
        """Write an array (.npy) into stage `name`."""
        np.save(self.folder(name) / file, values)

    def load_array(self, name: str, file: str) -> np.ndarray:
        """An array written by save_array."""
        path = self.folder(name) / file
        try:
            return np.load(path)
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"cannot read the checkpoint {path}: {exc}") from exc

    def save_meta(self, name: str, meta: dict[str, Any]) -> None:
        """Write meta.json into stage `name`."""
        (self.folder(name) / "meta.json").write_text(json.dumps(meta))

    def load_meta(self, name: str) -> dict[str, Any]:
        """meta.json of stage `name`."""
        path = self.folder(name) / "meta.json"
        try:
            meta: dict[str, Any] = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"cannot read the checkpoint {path}: {exc}") from exc
        return meta


def chunk_batches(batches: list[np.ndarray], rows: int) -> list[list[np.ndarray]]:
    """Consecutive groups of batches holding at least `rows` rows each (the last may hold fewer):
    the unit of work a stage checkpoint covers."""
    groups: list[list[np.ndarray]] = []
    current: list[np.ndarray] = []
    count = 0
    for b in batches:
        current.append(b)
        count += len(b)
        if count >= rows:
            groups.append(current)
            current, count = [], 0
    if current:
        groups.append(current)
    return groups


# ---- the uncertainty baseline's stages ---------------------------------------------------------

SCORE_CHUNK_ROWS = 4096  # rows per checkpointed chunk of a baseline's scoring pass


def finished_epochs(store: StageStore | None, epochs: int) -> int:
    """How many epochs, counted from the first, are finished (stages epoch_NNN)."""
    k = 0
    while store is not None and k < epochs and store.done(f"epoch_{k:03d}"):
        k += 1
    return k


def load_epoch(
    store: StageStore, k: int, surrogate: Surrogate, optimizer: torch.optim.Optimizer
) -> None:
    """Put the weights and optimizer state after epoch k back into the model and optimizer."""
    name = f"epoch_{k:03d}"
    surrogate.load_state("base", store.load_tensors(name, "base.safetensors"))
    optimizer.load_state_dict(store.load_state(name, "optimizer.pt"))
    logger.info("resumed from %s after epoch %d", store.root, k + 1)


def save_epoch(
    store: StageStore, k: int, surrogate: Surrogate, optimizer: torch.optim.Optimizer
) -> None:
    """Keep the weights and optimizer state after epoch k (only the latest epoch's are kept)."""
    name = f"epoch_{k:03d}"
    store.begin(name)
    store.save_tensors(name, "base.safetensors", surrogate.state("base"))
    store.save_state(name, "optimizer.pt", optimizer.state_dict())
    store.finish(name)
    if k > 0:
        store.drop(f"epoch_{k - 1:03d}", "base.safetensors", "optimizer.pt")


def resumable_pass(
    store: StageStore | None,
    model: nn.Module,
    encoded: EncodedSet,
    batches: list[np.ndarray],
    combine: Combine,
    *,
    pad_id: int,
    tracker: Tracker,
) -> np.ndarray:
    """scoring.run_pass with every SCORE_CHUNK_ROWS rows kept (stages score_NNNNN): a rerun
    loads the finished chunks and scores only the rest. Without a store, one plain run_pass."""
    if store is None:
        return run_pass(model, encoded, batches, combine, pad_id=pad_id, tracker=tracker)
    scores = np.full(len(encoded), np.nan, dtype=np.float32)
    for j, group in enumerate(chunk_batches(batches, SCORE_CHUNK_ROWS)):
        rows = np.concatenate(group)
        name = f"score_{j:05d}"
        if store.done(name):
            scores[rows] = store.load_array(name, "scores.npy")
            tracker.advance("score", len(rows))
            continue
        part = run_pass(model, encoded, group, combine, pad_id=pad_id, tracker=tracker)
        scores[rows] = part[rows]
        store.begin(name)
        store.save_array(name, "scores.npy", part[rows])
        store.finish(name)
    return scores
