"""A job's checkpoint folder, so a rerun with the same arguments skips the finished work.

Layout of a checkpoint folder:
  manifest.json       {"fingerprint": ...} (+ "kind" for the baselines): which job the folder is of
  <stage>/...         a stage's files (weights, optimizer state, arrays, meta.json)
  <stage>/done        written last: a stage without it is redone

A folder holding another job's stages raises CheckpointError. Three kinds of folders use it:
  RoundCheckpoints    ToV's rounds: round_NNN/{scores.npy, base.safetensors, val.safetensors
                      (LoRA only), optimizer.pt}
  TrainedAdapters     a staged run's rounds: round_NNN/{base,val}.safetensors, optimizer.pt
  CheckpointFolder    the baselines' stages (uncertainty: epoch_NNN, score_NNNNN; LESS: warmup_NNN,
                      ...), named by the method
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tov_engine.errors import CheckpointError

logger = logging.getLogger(__name__)

DONE = "done"


class CheckpointFolder:
    """Finished stages of one job under `root`.

    Args:
        root: the checkpoint folder (created if missing). fingerprint: identifies the job
            (store.keys.fingerprint). holds: what the folder holds, for the refusal message.
        kind: the method, recorded in the manifest and checked (the baselines).
    """

    def __init__(
        self,
        root: str | Path,
        fingerprint: str,
        holds: str = "checkpoints",
        kind: str | None = None,
    ) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        claim = {"fingerprint": fingerprint} | ({} if kind is None else {"kind": kind})
        manifest = self.root / "manifest.json"
        if not manifest.exists():
            manifest.write_text(json.dumps(claim))
            return
        try:
            found = json.loads(manifest.read_text())
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{manifest} cannot be read: {exc}") from exc
        if any(found.get(field) != value for field, value in claim.items()):
            what = "data, model or settings" if kind is None else "data, model, method or settings"
            raise CheckpointError(
                f"{self.root} holds {holds} of another job (different {what}); use an empty folder"
            )

    def folder(self, name: str) -> Path:
        """Where stage `name` lives."""
        return self.root / name

    def done(self, name: str) -> bool:
        """True when stage `name` is finished."""
        return (self.folder(name) / DONE).exists()

    def completed(self, prefix: str, limit: int | None = None) -> int:
        """How many stages <prefix>_000, <prefix>_001, ... are finished, counted from the first."""
        k = 0
        while (limit is None or k < limit) and self.done(f"{prefix}_{k:03d}"):
            k += 1
        return k

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

    def save_tensors(self, name: str, file: str, tensors: dict[str, torch.Tensor]) -> None:
        """Write tensors as safetensors into stage `name`."""
        from safetensors.torch import save_file

        save_file({k: t.contiguous() for k, t in tensors.items()}, str(self.folder(name) / file))

    def load_tensors(
        self, name: str, file: str, what: str = "the checkpoint"
    ) -> dict[str, torch.Tensor]:
        """Tensors written by save_tensors (`what` names them in the error)."""
        from safetensors.torch import load_file

        path = self.folder(name) / file
        try:
            return load_file(str(path))
        except (OSError, RuntimeError) as exc:
            raise CheckpointError(f"cannot read {what} {path}: {exc}") from exc

    def save_state(self, name: str, file: str, state: dict[str, Any]) -> None:
        """Write an optimizer or scheduler state_dict into stage `name`."""
        torch.save(state, self.folder(name) / file)

    def load_state(self, name: str, file: str, what: str = "the checkpoint") -> dict[str, Any]:
        """A state_dict written by save_state."""
        path = self.folder(name) / file
        try:
            state: dict[str, Any] = torch.load(path, weights_only=True)
        except (OSError, RuntimeError) as exc:
            raise CheckpointError(f"cannot read {what} {path}: {exc}") from exc
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


def round_name(k: int) -> str:
    """The stage of round k."""
    return f"round_{k:03d}"


class RoundCheckpoints(CheckpointFolder):
    """ToV's finished rounds: scores, the weights the next round starts from, the base optimizer.

    Args:
        root, fingerprint: as CheckpointFolder.
        keep_all_states: keep every round's base state (True for small LoRA adapters); False keeps
            only the latest (full fine-tuning saves the whole model each round).
    """

    def __init__(self, root: str | Path, fingerprint: str, keep_all_states: bool = True) -> None:
        super().__init__(root, fingerprint, "checkpoints")
        self.keep_all_states = keep_all_states

    def save(
        self,
        k: int,
        scores: np.ndarray,
        base: dict[str, torch.Tensor],
        optimizer: dict[str, Any],
        val: dict[str, torch.Tensor] | None = None,
        losses: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        """Write round k's results (`losses`: each row's loss before and after, if kept); the
        `done` marker goes last."""
        name = round_name(k)
        self.begin(name)
        self.save_array(name, "scores.npy", scores.astype(np.float32))
        if losses is not None:
            self.save_array(name, "losses.npy", np.stack(losses).astype(np.float32))
        self.save_tensors(name, "base.safetensors", base)
        if val is not None:
            self.save_tensors(name, "val.safetensors", val)
        self.save_state(name, "optimizer.pt", optimizer)
        self.finish(name)
        if not self.keep_all_states and k > 0:
            self.drop(round_name(k - 1), "base.safetensors", "optimizer.pt")

    def scores(self, k: int) -> np.ndarray:
        """Round k's scores."""
        return self.load_array(round_name(k), "scores.npy")

    def losses(self, k: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Round k's (loss before, loss after) per row; None when the round was saved without."""
        if not (self.folder(round_name(k)) / "losses.npy").is_file():
            return None
        both = self.load_array(round_name(k), "losses.npy")
        return both[0], both[1]

    def state(self, k: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Round k's base weights and optimizer state (the start of round k + 1)."""
        name = round_name(k)
        return self.load_tensors(name, "base.safetensors"), self.load_state(name, "optimizer.pt")


class TrainedAdapters(CheckpointFolder):
    """A staged run's adapters of every round (theta_bas_k, theta_val_k), which scoring processes
    read, and the base optimizer after each round (to resume training)."""

    def __init__(self, root: str | Path, fingerprint: str) -> None:
        super().__init__(root, fingerprint, "the rounds")

    def save(self, k: int, base: dict[str, Any], val: dict[str, Any], optimizer: Any) -> None:
        """Write round k's adapters and optimizer state; the `done` marker goes last."""
        name = round_name(k)
        self.begin(name)
        self.save_tensors(name, "base.safetensors", base)
        self.save_tensors(name, "val.safetensors", val)
        self.save_state(name, "optimizer.pt", optimizer)
        self.finish(name)

    def adapter(self, k: int, which: str) -> dict[str, Any]:
        """theta_bas_k ("base") or theta_val_k ("val")."""
        return self.load_tensors(round_name(k), f"{which}.safetensors", "the adapter")

    def optimizer(self, k: int) -> Any:
        """The base optimizer's state after round k."""
        return self.load_state(round_name(k), "optimizer.pt", "the optimizer state")
