"""Per-round checkpoints, so a rerun with the same arguments resumes after the last finished round.

Layout of checkpoint_dir:
  manifest.json                  {"fingerprint": ..., "kind": ...}: which job the folder belongs to
  round_000/scores.npy           (N,) float32 scores of that round (NaN outside R)
  round_000/base.safetensors     weights the next round starts from (the base adapter, or the model)
  round_000/val.safetensors      the validation adapter of that round (LoRA only)
  round_000/optimizer.pt         the base optimizer's state (its moments carry across rounds)
  round_000/done                 written last: a round without it is redone
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from tov_engine.errors import CheckpointError

logger = logging.getLogger(__name__)


def fingerprint(*parts: Any) -> str:
    """A stable hash of everything that determines the rounds' results."""
    return hashlib.sha256(json.dumps([repr(p) for p in parts]).encode()).hexdigest()


def claim_folder(root: Path, fingerprint: str, holds: str) -> None:
    """Create `root` for one job, or check that it already belongs to that job.

    The first use writes manifest.json with the job's fingerprint; a folder whose manifest names
    another job raises CheckpointError (`holds` says what it holds, for the message).
    """
    root.mkdir(parents=True, exist_ok=True)
    manifest = root / "manifest.json"
    if not manifest.exists():
        manifest.write_text(json.dumps({"fingerprint": fingerprint}))
    elif json.loads(manifest.read_text()).get("fingerprint") != fingerprint:
        raise CheckpointError(
            f"{root} holds {holds} of another job (different data, model or settings); "
            "use an empty folder"
        )


class RoundStore:
    """Round results under one folder.

    Args:
        root: the checkpoint folder (created if missing).
        fingerprint: identifies the job; a folder holding another job's rounds is refused.
        keep_all_states: keep every round's base state (True for small LoRA adapters); False keeps
            only the latest (full fine-tuning saves the whole model each round).
    """

    def __init__(self, root: str | Path, fingerprint: str, keep_all_states: bool = True) -> None:
        self.root = Path(root)
        self.keep_all_states = keep_all_states
        claim_folder(self.root, fingerprint, "checkpoints")

    def _dir(self, k: int) -> Path:
        return self.root / f"round_{k:03d}"

    def completed(self) -> int:
        """How many rounds, counted from the first, are finished."""
        k = 0
        while (self._dir(k) / "done").exists():
            k += 1
        return k

    def save(
        self,
        k: int,
        scores: np.ndarray,
        base: dict[str, torch.Tensor],
        optimizer: dict[str, Any],
        val: dict[str, torch.Tensor] | None = None,
    ) -> None:
        """Write round k's results; the `done` marker goes last."""
        folder = self._dir(k)
        if folder.exists():
            shutil.rmtree(folder)  # a half-written round from a crash
        folder.mkdir()
        np.save(folder / "scores.npy", scores.astype(np.float32))
        save_file({n: t.contiguous() for n, t in base.items()}, str(folder / "base.safetensors"))
        if val is not None:
            save_file({n: t.contiguous() for n, t in val.items()}, str(folder / "val.safetensors"))
        torch.save(optimizer, folder / "optimizer.pt")
        (folder / "done").write_text("ok")
        if not self.keep_all_states and k > 0:
            for name in ("base.safetensors", "optimizer.pt"):
                (self._dir(k - 1) / name).unlink(missing_ok=True)
        logger.info("saved round %d to %s", k, folder)

    def scores(self, k: int) -> np.ndarray:
        """Round k's scores."""
        return np.load(self._dir(k) / "scores.npy")

    def state(self, k: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Round k's base weights and optimizer state (the start of round k + 1)."""
        folder = self._dir(k)
        try:
            weights = load_file(str(folder / "base.safetensors"))
            optimizer = torch.load(folder / "optimizer.pt", weights_only=True)
        except (OSError, RuntimeError) as exc:
            raise CheckpointError(f"cannot read the checkpoint in {folder}: {exc}") from exc
        return weights, optimizer
