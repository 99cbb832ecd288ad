"""The pool cache: what a ToV job computes that does not depend on the validation set.

Two kinds of entries live in the caller's `cache_dir` (store.entries.EntryStore: atomic, verified):
  pools/<key>/            ids.bin, labels.bin, offsets.bin, truncated.bin, encoded.json (raw
                          arrays, opened as read-only memmaps: data.encoded.open_encoded) +
                          meta.json: the tokenised pool, keyed by the pool file's sha256, the
                          model folder's identity (the tokenizer), max_length and task
  bases/<key>/round_NNN/  base.safetensors (theta_bas after round NNN's base epoch), optimizer.pt
                          (the base AdamW state then), logprobs.npy (float32 log p of every loss
                          token of R under theta_bas, in scoring-batch order: the "before" side)
The base trajectory (U, and the base epochs of Method B) never sees Z_val, so one entry serves
every validation set; Method A can reuse round 0 only (round 1 starts from theta_val).
`BaseHalves` holds the same per-round data in memory for the targets of one multi-target run.
"""

from __future__ import annotations

import copy
import io
import json
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tov_engine.data.encoded import IGNORE, EncodedSet, map_labels, open_encoded, write_encoded
from tov_engine.store.entries import EntryStore
from tov_engine.store.keys import CACHE_FORMAT, fingerprint, model_identity

logger = logging.getLogger(__name__)

# ---- the tokenised pool -------------------------------------------------------------------


@dataclass(frozen=True)
class CachedPool:
    """A tokenised pool; for token classification, labels are ids into the pool's own `tags`."""

    encoded: EncodedSet
    format: str
    tags: list[Any] | None  # the pool's sorted distinct tags (token classification), else None


def load_pool(store: EntryStore, key: str) -> CachedPool | None:
    """The cached tokenised pool for `key`, or None. Its arrays are read-only memmaps of the
    entry's files (a concurrent discard of the entry does not affect a mapped file)."""
    folder = store.open(f"pools/{key[:40]}", key)
    if folder is None:
        return None
    try:
        encoded = open_encoded(folder)
        meta = json.loads((folder / "meta.json").read_text())
    except (OSError, ValueError, KeyError) as exc:
        logger.warning("pool cache: cannot read %s (%s); tokenising again", folder, exc)
        return None
    return CachedPool(encoded=encoded, format=meta["format"], tags=meta["tags"])


def save_pool(store: EntryStore, key: str, pool: CachedPool) -> None:
    """Publish the tokenised pool under `key`, copying its arrays in chunks (best effort: a failed
    write only logs)."""
    try:
        with store.writing(f"pools/{key[:40]}", key) as tmp:
            write_encoded(pool.encoded, tmp)
            (tmp / "meta.json").write_text(json.dumps({"format": pool.format, "tags": pool.tags}))
    except OSError as exc:
        logger.warning("pool cache: could not write the tokenised pool (%s); continuing", exc)


def encode_into_cache(
    store: EntryStore,
    key: str,
    encode: Callable[[Path | None], EncodedSet],
    fmt: str,
    tags: list[Any] | None,
) -> CachedPool:
    """Tokenise straight into a new pool-cache entry and publish it (no second copy on disk).

    Args:
        store: the pool cache. key: pool_key(...). encode: folder -> EncodedSet (encode_rows with
            `folder`); called with None when the cache cannot be written. fmt, tags: the pool's.
    Returns:
        The pool, mapped from the published entry (or from where it was written).
    """
    try:
        tmp = store.start(f"pools/{key[:40]}")
    except OSError as exc:
        logger.warning("pool cache: cannot write %s (%s); continuing", store.root, exc)
        return CachedPool(encode(None), fmt, tags)
    try:
        encoded = encode(tmp)
        (tmp / "meta.json").write_text(json.dumps({"format": fmt, "tags": tags}))
    except BaseException:
        store.drop(tmp)
        raise
    try:
        store.seal(tmp, f"pools/{key[:40]}", key)
    except OSError as exc:
        logger.warning("pool cache: could not keep the tokenised pool (%s); continuing", exc)
    # The mapped files stay readable after the folder is renamed or dropped.
    return CachedPool(encoded, fmt, tags)


def relabel(encoded: EncodedSet, own: list[Any], labels: list[Any]) -> EncodedSet:
    """Map label ids into the pool's own tags onto ids into the job's label set (a superset).
    Chunk by chunk; a pool on disk gets its new labels on disk too."""
    index = {tag: i for i, tag in enumerate(labels)}
    mapping = np.array([index[tag] for tag in own] or [0], dtype=np.int32)

    def convert(part: np.ndarray) -> np.ndarray:
        bearing = part != IGNORE
        out = np.full_like(part, IGNORE)
        out[bearing] = mapping[part[bearing]]
        return out

    return map_labels(encoded, convert)


# ---- the base trajectory ------------------------------------------------------------------


@dataclass
class BaseHalf:
    """Round k's validation-free half: theta_bas_k, the base optimizer, the base log-probs of R."""

    weights: dict[str, Any]  # name -> CPU tensor (the base adapter, or the whole model)
    optimizer: dict[str, Any]  # the base AdamW state_dict after round k's base epoch
    logprobs: np.ndarray  # (M,) float32, TokenStore layout (scoring-batch order)


class PendingBaseHalf:
    """A round being computed: the scoring pass writes `logprobs`, then `commit` keeps it."""

    def __init__(self, logprobs: np.ndarray) -> None:
        self.logprobs = logprobs

    def commit(self, weights: dict[str, Any], optimizer: dict[str, Any]) -> None:
        """Keep the round (weights and optimizer as they are now)."""

    def abort(self) -> None:
        """Drop an uncommitted round (no-op after commit)."""


class BaseHalves:
    """Where the base halves of a trajectory are found and kept: in memory (one multi-target run);
    CachedBaseHalves keeps them in the pool cache."""

    def __init__(self) -> None:
        self.rounds: dict[int, BaseHalf] = {}

    def load(self, k: int) -> BaseHalf | None:
        """Round k's base half, or None if it is not known."""
        return self.rounds.get(k)

    def begin(self, k: int, size: int) -> PendingBaseHalf:
        """Start keeping round k: the pass fills the returned round's `logprobs` (size values)."""
        return _PendingInMemory(np.zeros(size, dtype=np.float32), self, k)


class _PendingInMemory(PendingBaseHalf):
    def __init__(self, logprobs: np.ndarray, source: BaseHalves, k: int) -> None:
        super().__init__(logprobs)
        self.source, self.k = source, k

    def commit(self, weights: dict[str, Any], optimizer: dict[str, Any]) -> None:
        # state_dict() tensors are the live optimizer state: copy them before training goes on.
        self.source.rounds[self.k] = BaseHalf(
            dict(weights), copy.deepcopy(optimizer), self.logprobs
        )


class CachedBaseHalves(BaseHalves):
    """Base halves under cache_dir/bases/<key>/round_NNN, shared by every job with that key.

    Args:
        store: the cache folder. key: digest of everything the base trajectory depends on.
    """

    def __init__(self, store: EntryStore, key: str) -> None:
        super().__init__()
        self.store, self.key = store, key

    def _name(self, k: int) -> str:
        return f"bases/{self.key[:40]}/round_{k:03d}"

    def load(self, k: int) -> BaseHalf | None:
        import torch
        from safetensors.torch import load as load_tensors

        folder = self.store.open(self._name(k), f"{self.key}/{k}")
        if folder is None:
            return None
        weights = load_tensors((folder / "base.safetensors").read_bytes())
        state = torch.load(io.BytesIO((folder / "optimizer.pt").read_bytes()), weights_only=True)
        logprobs = np.load(folder / "logprobs.npy", mmap_mode="r")
        logger.info("round %d: base side from the pool cache %s", k + 1, folder)
        return BaseHalf(weights=weights, optimizer=state, logprobs=logprobs)

    def begin(self, k: int, size: int) -> PendingBaseHalf:
        """Round k's log-probs go straight to a file in the entry's temporary folder (a big pool's
        base log-probs never sit in RAM). If the cache cannot be written (full, read-only), the
        round runs uncached: the buffer is in memory and nothing is kept."""
        try:
            tmp = self.store.start(self._name(k))
        except OSError as exc:
            logger.warning("pool cache: cannot write %s (%s); continuing", self.store.root, exc)
            return PendingBaseHalf(np.zeros(size, dtype=np.float32))
        path = tmp / "logprobs.npy"
        buffer: np.ndarray
        try:
            if size:
                buffer = np.lib.format.open_memmap(path, "w+", dtype=np.float32, shape=(size,))
                with open(path, "r+b") as handle:  # reserve the blocks now: a full disk is an
                    os.posix_fallocate(handle.fileno(), 0, path.stat().st_size)  # error, not SIGBUS
            else:
                buffer = np.zeros(0, dtype=np.float32)
        except OSError as exc:
            logger.warning("pool cache: cannot write %s (%s); continuing", path, exc)
            self.store.drop(tmp)
            return PendingBaseHalf(np.zeros(size, dtype=np.float32))
        return _PendingOnDisk(buffer, self.store, tmp, self._name(k), f"{self.key}/{k}")


class _PendingOnDisk(PendingBaseHalf):
    def __init__(
        self, logprobs: np.ndarray, store: EntryStore, tmp: Path, name: str, key: str
    ) -> None:
        super().__init__(logprobs)
        self.store, self.tmp, self.name, self.key = store, tmp, name, key
        self.done = False

    def commit(self, weights: dict[str, Any], optimizer: dict[str, Any]) -> None:
        import torch
        from safetensors.torch import save_file

        self.done = True
        try:
            if isinstance(self.logprobs, np.memmap):
                self.logprobs.flush()
            else:
                np.save(self.tmp / "logprobs.npy", self.logprobs)
            tensors = {n: t.contiguous() for n, t in weights.items()}
            save_file(tensors, str(self.tmp / "base.safetensors"))
            torch.save(optimizer, self.tmp / "optimizer.pt")
            self.store.seal(self.tmp, self.name, self.key)
        except OSError as exc:
            logger.warning("pool cache: could not keep %s (%s); continuing", self.name, exc)
            self.store.drop(self.tmp)

    def abort(self) -> None:
        if not self.done:
            self.done = True
            self.store.drop(self.tmp)


def base_key(parts: dict[str, Any]) -> str:
    """The key of a base trajectory from its determining parts (methods.tov.run.base_key_parts)."""
    return fingerprint(CACHE_FORMAT, parts, kind="base-trajectory")


def pool_key(pool_sha256: str, model: Path, max_length: int, task: str) -> str:
    """The key of a tokenised pool."""
    identity = model_identity(model)
    return fingerprint(CACHE_FORMAT, pool_sha256, identity, max_length, task, kind="pool")
