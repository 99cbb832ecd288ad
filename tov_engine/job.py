"""A selection job's inputs, prepared: validated and tokenised files, the budget, the stats.

Every method takes the prepared Job and returns a SelectionOutcome; this module imports no method.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tov_engine.config import JobConfig, SelectionConfig
from tov_engine.data.encoded import EncodedSet, array_sha256
from tov_engine.data.encoding import encode_rows, label_set
from tov_engine.data.files import file_sha256, inspect_dataset, read_rows
from tov_engine.errors import ConfigError
from tov_engine.leakage import Leak, LeakageConfig, LeakReport, find_leaks, job_references
from tov_engine.progress import ProgressCallback
from tov_engine.selection import Binning, Selection
from tov_engine.store.entries import EntryStore
from tov_engine.store.poolcache import CachedPool, encode_into_cache, load_pool, pool_key, relabel

logger = logging.getLogger(__name__)

UNFIT_LISTED = 1000  # rows without a loss-bearing token listed in the stats (all are counted)


@dataclass(frozen=True)
class SelectionOutcome:
    """Everything a run produced."""

    scores: np.ndarray  # (N,) float32 per pool row, pool order; NaN where not scored (e.g. U)
    lengths: np.ndarray  # (N,) int32 loss-bearing tokens per row (after truncation)
    base_indices: np.ndarray  # (|U|,) int64 sorted; empty for methods without a base subset
    selection: Selection
    stats: dict[str, Any]  # numbers, plus "precision" (str) and "unfit_rows" (list of dicts)
    # The leakage check's findings (tov_engine.leakage), pool order; excluded ones never selected.
    leaks: tuple[Leak, ...] = ()
    # Explanations (None where a method has none): each row's mean loss per loss token (-mean
    # log p of its gold tokens) under theta_bas and under theta_val, averaged over rounds (ToV;
    # NaN for unscored rows), and its length bin and rank by score within it (selection.Binning).
    loss_before: np.ndarray | None = None  # (N,) float32
    loss_after: np.ndarray | None = None  # (N,) float32
    binning: Binning | None = None


@dataclass
class Job:
    """What the method implementations share: the inputs, encoded, and the run's stats."""

    pool_path: Path
    validation_path: Path
    model: Path
    config: JobConfig
    tokenizer: Any
    pool: EncodedSet
    val: EncodedSet
    labels: list[Any] | None
    budget: int
    progress: ProgressCallback | None
    should_cancel: Callable[[], bool] | None
    checkpoint_dir: Path | None
    stats: dict[str, Any]
    cache_dir: Path | None = None  # the pool cache (store/poolcache.py); None = no cache
    pool_key: str = ""  # identifies the tokenised pool (file hash, model folder, max_length, task)
    leak_report: LeakReport | None = None  # the leakage check (None: not run)

    @property
    def excluded(self) -> np.ndarray | None:
        """(N,) bool: the pool rows never to select (leakage mode "exclude"), or None."""
        return self.leak_report.excluded if self.leak_report is not None else None


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) for a deterministic run."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _pool_tags(config: JobConfig, path: Path) -> tuple[list[Any] | None, dict[Any, int] | None]:
    """Token classification: the pool's own tag set and its ids (labels are ids into it)."""
    if config.task != "token_classification":
        return None, None
    tags = label_set(read_rows(path), str(path))
    return tags, {tag: i for i, tag in enumerate(tags)}


def lookup_pool(
    config: JobConfig, model: Path, pool_path: Path, cache_dir: Path | None
) -> tuple[CachedPool | None, str, str]:
    """(the cached tokenised pool or None, the pool key, the pool's format).

    A cached pool skips the pool's validation (the same bytes passed it when it was written);
    otherwise every pool row is checked here. Without a cache the key is "".
    """
    key = ""
    if cache_dir is not None:
        key = pool_key(file_sha256(pool_path), model, config.max_length, config.task)
        cached = load_pool(EntryStore(cache_dir), key)
        if cached is not None:
            return cached, key, cached.format
    return None, key, inspect_dataset(pool_path).format


def build_pool(
    config: JobConfig, tokenizer: Any, pool_path: Path, fmt: str, cache_dir: Path | None, key: str
) -> CachedPool:
    """Tokenise the pool, streamed: straight into the pool cache when there is one (memory-mapped
    from there), else in memory or a temporary file (data/encoded.py)."""
    tags, label_ids = _pool_tags(config, pool_path)

    def encode(folder: Path | None) -> EncodedSet:
        return encode_rows(
            tokenizer,
            read_rows(pool_path),
            max_length=config.max_length,
            label_ids=label_ids,
            folder=folder,
        )

    if cache_dir is None:
        return CachedPool(encode(None), fmt, tags)
    return encode_into_cache(EntryStore(cache_dir), key, encode, fmt, tags)


def prepare_pool(
    config: JobConfig,
    model: Path,
    pool_path: Path,
    cache_dir: Path | None,
    validation_paths: Sequence[str | Path],
) -> tuple[CachedPool, str]:
    """The tokenised pool and its key, once for several validation files (all checked first)."""
    from tov_engine.model.loading import load_tokenizer  # lazy: torch loads when a run starts

    cached, key, fmt = lookup_pool(config, model, pool_path, cache_dir)
    for path in validation_paths:
        inspect_dataset(path)  # every file is checked before any work starts
    if cached is None:
        cached = build_pool(config, load_tokenizer(model), pool_path, fmt, cache_dir, key)
    return cached, key


def _finish_encoding(
    config: JobConfig, tokenizer: Any, pool: CachedPool, pool_path: Path, val_path: Path
) -> tuple[EncodedSet, EncodedSet, list[Any] | None]:
    """The job's pool (labels mapped onto the pool + validation tag set), validation set, tags."""
    labels = label_ids = None
    encoded = pool.encoded
    if config.task == "token_classification":
        rows = itertools.chain([{"tags": pool.tags or []}], read_rows(val_path))
        labels = label_set(rows, f"{pool_path} + {val_path}")
        label_ids = {tag: i for i, tag in enumerate(labels)}
        encoded = relabel(encoded, pool.tags or [], labels)
    kw: dict[str, Any] = dict(max_length=config.max_length, label_ids=label_ids)
    return encoded, encode_rows(tokenizer, read_rows(val_path), **kw), labels


@dataclass(frozen=True)
class JobInputs:
    """What a caller passes for one job (see run_selection for the fields' meaning)."""

    pool_path: str | Path
    validation_path: str | Path
    model: str | Path
    config: JobConfig
    progress: ProgressCallback | None = None
    should_cancel: Callable[[], bool] | None = None
    checkpoint_dir: str | Path | None = None
    cache_dir: str | Path | None = None
    decontaminate_against: tuple[str | Path, ...] = ()  # files no selected row may repeat
    leakage: LeakageConfig | None = None  # None: the defaults (tov_engine.leakage)


def check_leaks(inputs: JobInputs, pool_rows: int) -> LeakReport:
    """The leakage check of a job's pool against its validation set and decontamination files."""
    config = inputs.leakage or LeakageConfig()
    refs = job_references(inputs.validation_path, inputs.decontaminate_against)
    report = find_leaks(inputs.pool_path, refs, config)
    if len(report.excluded) != pool_rows:
        raise ConfigError(
            f"the leakage check read {len(report.excluded)} pool rows, not {pool_rows}"
        )
    return report


def with_leaks(job: Job, outcome: SelectionOutcome) -> SelectionOutcome:
    """The outcome carrying the job's leaks (every method's outcome passes through here)."""
    if job.leak_report is None:
        return outcome
    return dataclasses.replace(outcome, leaks=job.leak_report.leaks)


def prepare_job(**inputs: Any) -> Job:
    """prepare(JobInputs(**inputs)): the inputs as keywords (JobInputs' fields)."""
    return prepare(JobInputs(**inputs))


def unfit_rows(encoded: EncodedSet, max_length: int) -> list[dict[str, Any]]:
    """The rows without a loss-bearing token (never scored, never picked by score): index and
    reason, the first UNFIT_LISTED of them (the stats count them all)."""
    where = np.flatnonzero(np.asarray(encoded.loss_lengths) == 0)[:UNFIT_LISTED]
    cut = np.asarray(encoded.truncated)
    return [
        {
            "index": int(i),
            "reason": f"no loss-bearing token left within max_length={max_length}"
            if cut[i]
            else "the row has no loss-bearing token",
        }
        for i in where
    ]


def _stats(
    pool: EncodedSet, val: EncodedSet, budget: int, start: float, max_length: int
) -> dict[str, Any]:
    loss_lengths = pool.loss_lengths
    return {
        "rows": len(pool),
        "validation_rows": len(val),
        "truncated_rows": int(pool.truncated.sum()),
        "validation_truncated_rows": int(val.truncated.sum()),
        "rows_without_loss_tokens": int((loss_lengths == 0).sum()),
        "unfit_rows": unfit_rows(pool, max_length),
        "validation_rows_without_loss_tokens": int((val.loss_lengths == 0).sum()),
        "loss_tokens": int(loss_lengths.sum()),
        "budget": budget,
        "seconds_prepare": time.perf_counter() - start,
    }


def prepare(inputs: JobInputs, pool: tuple[CachedPool, str] | None = None) -> Job:
    """Validate and tokenise both files and resolve the budget.

    `pool`: the tokenised pool and its key, already prepared (multi-target runs share one).
    """
    from tov_engine.model.loading import load_tokenizer  # lazy: torch loads when a run starts

    start = time.perf_counter()
    config = inputs.config
    cache = _path(inputs.cache_dir)
    pool_file, val_file = Path(inputs.pool_path), Path(inputs.validation_path)
    model_dir = Path(inputs.model)
    if pool is None:
        cached, key, fmt = lookup_pool(config, model_dir, pool_file, cache)
    inspect_dataset(val_file)  # every validation row is checked before any work starts
    tokenizer = load_tokenizer(model_dir)
    if pool is None:
        pool = (cached or build_pool(config, tokenizer, pool_file, fmt, cache, key), key)
    encoded, val, labels = _finish_encoding(config, tokenizer, pool[0], pool_file, val_file)
    budget = config.selection.resolve_budget(len(encoded))
    if budget > len(encoded):
        raise ConfigError(f"the budget of {budget} rows exceeds the pool of {len(encoded)} rows")
    logger.info("pool %s: %d rows; validation %d rows", pool_file, len(encoded), len(val))
    stats = _stats(encoded, val, budget, start, config.max_length)
    leak_start = time.perf_counter()
    leaks = check_leaks(inputs, len(encoded))
    stats["leaks"] = leaks.stats()
    stats["seconds_leakage"] = time.perf_counter() - leak_start
    return Job(
        pool_path=pool_file,
        validation_path=val_file,
        model=model_dir,
        config=config,
        tokenizer=tokenizer,
        pool=encoded,
        val=val,
        labels=labels,
        budget=budget,
        progress=inputs.progress,
        should_cancel=inputs.should_cancel,
        checkpoint_dir=_path(inputs.checkpoint_dir),
        stats=stats,
        cache_dir=cache,
        pool_key=pool[1],
        leak_report=leaks,
    )


def _path(value: str | Path | None) -> Path | None:
    return Path(value) if value is not None else None


def job_parts(job: Job) -> tuple[Any, ...]:
    """What determines a job's work: model, data, settings (not the selection, not the device).

    The parts of every checkpoint folder's fingerprint (store.keys.fingerprint). The precision
    enters as resolved on this job's device ("auto" is float32 on CPU, bfloat16 on most GPUs)."""
    from tov_engine.model.loading import resolve_device  # lazy: torch loads when a run starts
    from tov_engine.model.precision import resolve_precision

    precision = resolve_precision(job.config.precision, resolve_device(job.config.device)).name
    config = dataclasses.replace(
        job.config, selection=SelectionConfig(), device=None, precision=precision
    )
    arrays = (job.pool.ids, job.pool.labels, job.val.ids, job.val.labels)
    data = hashlib.sha256(b"".join(array_sha256(a) for a in arrays))  # chunked: no pool copy
    return (str(job.model.resolve()), data.hexdigest(), config)
