"""A fast, deterministic stand-in for `tov_engine.run_selection`, for fault tests only.

Same signature and return type as the real entry point. Workers load it through the setting
TOV_ENGINE_ENTRYPOINT=tests.faults.standin_engine:run_selection.

- "train": TRAIN_STEPS steps; step k's "adapter" is a digest of the previous one, the validation
  rows and the seed. Each finished step is checkpointed; a restart loads them instead of redoing.
- "score": the rows outside the base subset U, in SCORE_SHARDS shards; a row's score is a hash of
  its text and the final adapter (NaN for U). Each finished shard is checkpointed.
- "select": tov_engine.selection.select on the scores, as the real engine does.
Every step sleeps, so a test can land a kill inside any stage; `should_cancel` is polled at every
step; progress goes through the callback as the real engine's does.

Test knobs (environment of the worker, read here and nowhere in tov_engine):
  TOV_STANDIN_SECONDS  "train,score,select" seconds per stage, default "1.2,1.2,0.6"
  TOV_STANDIN_TRACE    a file to which each step appends one JSON line (pid, job, stage, step),
                       so a test knows which process to kill and when.
  TOV_STANDIN_HANG     a stage ("train", "score" or "select"): the run hangs at its start, never
                       reporting progress nor polling `should_cancel` again (a hung engine).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tov_engine import Cancelled, ConfigError, JobConfig, ProgressEvent, SelectionOutcome
from tov_engine.data.files import read_rows
from tov_engine.selection import select

STAGES = ("train", "score", "select")
TRAIN_STEPS = 6
SCORE_SHARDS = 6
SELECT_STEPS = 2
DEFAULT_SECONDS = (1.2, 1.2, 0.6)


def stage_seconds() -> dict[str, float]:
    raw = os.environ.get("TOV_STANDIN_SECONDS", "")
    values = [float(v) for v in raw.split(",")] if raw else list(DEFAULT_SECONDS)
    return dict(zip(STAGES, values, strict=True))


def hang_if_asked(stage: str, trace: Trace) -> None:
    """A hung engine (TOV_STANDIN_HANG=<stage>): blocks forever, silent, deaf to cancels."""
    if os.environ.get("TOV_STANDIN_HANG") == stage:
        trace("hang", stage)
        threading.Event().wait()


def row_text(row: dict[str, Any]) -> str:
    return json.dumps(row, sort_keys=True, ensure_ascii=False)


def draw_base(pool_size: int, base_size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, 0])
    return np.sort(rng.choice(pool_size, size=base_size, replace=False)).astype(np.int64)


def train_step(previous: str, validation_digest: str, seed: int, k: int) -> str:
    return hashlib.sha256(f"{previous}|{validation_digest}|{seed}|{k}".encode()).hexdigest()


def score_rows(texts: list[str], rows: np.ndarray, adapter: str) -> np.ndarray:
    out = np.empty(len(rows), dtype=np.float32)
    key = adapter.encode()[:32]
    for i, r in enumerate(rows.tolist()):
        digest = hashlib.blake2b(texts[r].encode(), digest_size=4, key=key).digest()
        out[i] = int.from_bytes(digest, "little") / 2**32
    return out


class Trace:
    """One JSON line per step, appended atomically (O_APPEND, one write)."""

    def __init__(self, job: str) -> None:
        self.path = os.environ.get("TOV_STANDIN_TRACE")
        self.job = job

    def __call__(self, event: str, stage: str, step: int = 0, **extra: Any) -> None:
        if not self.path:
            return
        line = json.dumps(
            {
                "t": time.time(),
                "pid": os.getpid(),
                "job": self.job,
                "event": event,
                "stage": stage,
                "step": step,
                **extra,
            }
        )
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)


class Checkpoints:
    """Finished steps and shards under checkpoint_dir, each written atomically (tmp + rename)."""

    def __init__(self, root: Path | None, fingerprint: str) -> None:
        self.root = root
        if root is None:
            return
        root.mkdir(parents=True, exist_ok=True)
        manifest = root / "standin.json"
        if manifest.exists():
            if json.loads(manifest.read_text())["fingerprint"] != fingerprint:
                raise ConfigError(f"{root} holds checkpoints of another job")
        else:
            self._write(manifest, json.dumps({"fingerprint": fingerprint}).encode())

    def _write(self, path: Path, data: bytes) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)

    def get_train(self, k: int) -> str | None:
        if self.root is None or not (self.root / f"train_{k:03d}.txt").exists():
            return None
        return (self.root / f"train_{k:03d}.txt").read_text()

    def put_train(self, k: int, adapter: str) -> None:
        if self.root is not None:
            self._write(self.root / f"train_{k:03d}.txt", adapter.encode())

    def get_shard(self, j: int) -> np.ndarray | None:
        path = None if self.root is None else self.root / f"score_{j:03d}.f32"
        if path is None or not path.exists():
            return None
        return np.frombuffer(path.read_bytes(), dtype="<f4").copy()

    def put_shard(self, j: int, scores: np.ndarray) -> None:
        if self.root is not None:
            self._write(self.root / f"score_{j:03d}.f32", scores.astype("<f4").tobytes())


def run_selection(
    *,
    pool_path: str | Path,
    validation_path: str | Path,
    model: str | Path,
    config: JobConfig,
    progress: Callable[[ProgressEvent], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    checkpoint_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,  # the real engine's pool cache; nothing to cache here
) -> SelectionOutcome:
    """The stand-in run: deterministic in (pool, validation, config); resumable."""
    started = time.perf_counter()
    ckpt_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    trace = Trace(ckpt_dir.parent.name if ckpt_dir is not None else "")
    seconds = stage_seconds()
    texts = [row_text(r) for r in read_rows(pool_path)]
    validation = hashlib.sha256(
        "\n".join(row_text(r) for r in read_rows(validation_path)).encode()
    ).hexdigest()
    n = len(texts)
    budget = config.selection.resolve_budget(n)
    if budget > n:
        raise ConfigError(f"the budget of {budget} rows exceeds the pool of {n} rows")
    base_size = min(config.tov.resolve_base_size(budget, n), n - 1)
    base = draw_base(n, base_size, config.seed)
    rest = np.setdiff1d(np.arange(n, dtype=np.int64), base)
    lengths = np.array([len(t) // 8 + 1 for t in texts], dtype=np.int32)
    pool_digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()
    store = Checkpoints(ckpt_dir, f"{pool_digest}|{validation}|{config!r}")

    units = {"train": TRAIN_STEPS, "score": SCORE_SHARDS, "select": SELECT_STEPS}
    total = sum(seconds.values()) or 1.0
    before = {
        "train": 0.0,
        "score": seconds["train"],
        "select": seconds["train"] + seconds["score"],
    }

    def step(stage: str, done: int, message: str) -> None:
        share = seconds[stage] * done / units[stage]
        fraction = (before[stage] + share) / total if sum(seconds.values()) else 0.0
        if progress is not None:
            rows = done * len(rest) // SCORE_SHARDS if stage == "score" else done
            total_units = len(rest) if stage == "score" else units[stage]
            progress(ProgressEvent(stage, rows, total_units, min(1.0, fraction), message))
        if should_cancel is not None and should_cancel():
            trace("cancelled", stage, done)
            raise Cancelled("cancelled by the caller")

    resumed = {"train": 0, "score": 0}
    trace("start", "train")
    hang_if_asked("train", trace)
    adapter = validation
    for k in range(TRAIN_STEPS):
        found = store.get_train(k)
        if found is not None:
            adapter, resumed["train"] = found, resumed["train"] + 1
            trace("resumed", "train", k)
            continue
        trace("step", "train", k)
        time.sleep(seconds["train"] / TRAIN_STEPS)
        adapter = train_step(adapter, validation, config.seed, k)
        store.put_train(k, adapter)
        step("train", k + 1, f"train step {k + 1}/{TRAIN_STEPS}")

    trace("start", "score")
    hang_if_asked("score", trace)
    scores = np.full(n, np.nan, dtype=np.float32)
    for j, shard in enumerate(np.array_split(rest, SCORE_SHARDS)):
        saved = store.get_shard(j)
        if saved is not None and len(saved) == len(shard):
            scores[shard], resumed["score"] = saved, resumed["score"] + 1
            trace("resumed", "score", j)
            continue
        trace("step", "score", j)
        time.sleep(seconds["score"] / SCORE_SHARDS)
        values = score_rows(texts, shard, adapter)
        store.put_shard(j, values)
        scores[shard] = values
        step("score", j + 1, f"scored shard {j + 1}/{SCORE_SHARDS}")

    trace("start", "select")
    hang_if_asked("select", trace)
    for s in range(SELECT_STEPS):
        trace("step", "select", s)
        time.sleep(seconds["select"] / SELECT_STEPS)
        step("select", s + 1, "selecting")
    chosen = select(
        scores=scores,
        lengths=lengths,
        base_indices=base,
        config=config.selection,
        seed=config.seed,
    )
    trace("done", "select", SELECT_STEPS)
    stats: dict[str, float | int] = {
        "rows": n,
        "base_size": len(base),
        "standin": 1,
        "resumed_train_steps": resumed["train"],
        "resumed_score_shards": resumed["score"],
        "seconds_standin": round(time.perf_counter() - started, 3),
    }
    return SelectionOutcome(
        scores=scores, lengths=lengths, base_indices=base, selection=chosen, stats=stats
    )
