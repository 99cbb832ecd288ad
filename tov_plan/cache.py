"""Pool-cache hits, looked up without running anything: the keys the engine would use
(tov_engine/store/keys.py, store/poolcache.py, methods/tov/run.base_key_parts), rebuilt here
without torch, and whether a published entry (its manifest.json carrying that key) exists.

tests/test_dry_run_plan.py checks that these keys equal the engine's for a real job.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from pathlib import Path
from typing import Any

import numpy as np

from tov_plan.plan import JobSettings
from tov_plan.rules import draw_base, plan_buckets

CACHE_FORMAT = 4  # tov_engine/store/keys.py: bump both together (a test compares them)
ML_STACK = ("torch", "transformers", "peft")


def fingerprint(*parts: Any, kind: str | None = None) -> str:
    """store.keys.fingerprint."""
    head = [] if kind is None else [kind]
    return hashlib.sha256(json.dumps(head + [repr(p) for p in parts]).encode()).hexdigest()


def model_identity(model: Path) -> dict[str, Any]:
    """store.keys.model_identity: the folder's path and every file's size and mtime."""
    root = Path(model).resolve()
    files = sorted(
        (str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*")
        if p.is_file()
    )
    return {"path": str(root), "files": files}


def pool_key(pool_sha256: str, model: Path, max_length: int, task: str) -> str:
    """poolcache.pool_key."""
    identity = model_identity(model)
    return fingerprint(CACHE_FORMAT, pool_sha256, identity, max_length, task, kind="pool")


def published(cache_dir: Path, name: str, key: str) -> bool:
    """An entry `name` is published for `key` (its files are verified when a job opens it)."""
    try:
        manifest = json.loads((cache_dir / name / "manifest.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("key") == key


def ml_versions() -> list[str] | None:
    """The installed torch, transformers and peft versions (package metadata, nothing imported);
    None where one is missing (an API host without the ML stack cannot know the workers')."""
    try:
        return [importlib.metadata.version(name) for name in ML_STACK]
    except importlib.metadata.PackageNotFoundError:
        return None


def base_key(
    s: JobSettings,
    *,
    pool: str,
    model: Path,
    labels: list[Any] | None,
    device: str,
    precision: str,
    learning_rate: float,
    lora: dict[str, Any],
    pool_seq: np.ndarray,
    versions: list[str],
) -> str:
    """poolcache.base_key(base_key_parts(...)) for a ToV job with these settings.

    Args:
        pool: the pool key. device: "cpu" | "cuda". precision: as resolved on that device.
        lora: LoraSettings as a dict (enabled, rank, alpha, dropout, target_modules).
        pool_seq: (N,) tokens per pool row. versions: torch, transformers, peft.
    """
    from tov_plan.rules import resolve_base_size, resolve_budget

    size = len(pool_seq)
    base_size = resolve_base_size(s.base_size, resolve_budget(s.budget, size), size)
    base = draw_base(size, base_size, s.seed)
    rest = np.setdiff1d(np.arange(size, dtype=np.int64), base)
    plan = hashlib.sha256()
    for b in plan_buckets(pool_seq, rest, s.tokens_per_batch):
        plan.update(np.asarray(b, dtype=np.int64).tobytes() + b"|")
    parts = {
        "pool": pool,
        "model": model_identity(model),
        "labels": labels,
        "task": s.task,
        "max_length": s.max_length,
        "seed": s.seed,
        "device": device,
        "precision": precision,
        "base": hashlib.sha256(base.astype(np.int64).tobytes()).hexdigest(),
        "learning_rate": learning_rate,
        "batch_size": s.batch_size,
        "train_tokens_per_micro_batch": s.train_tokens_per_micro_batch,
        "lora": lora,
        "plan": plan.hexdigest(),
        "versions": versions,
    }
    return fingerprint(CACHE_FORMAT, parts, kind="base-trajectory")


def cached_rounds(cache_dir: Path, key: str, rounds: int) -> set[int]:
    """The rounds k < `rounds` whose base half is published under `key`."""
    return {
        k
        for k in range(rounds)
        if published(cache_dir, f"bases/{key[:40]}/round_{k:03d}", f"{key}/{k}")
    }
