"""What the pool cache and multi-target runs save, as time ratios against baselines run here.

Times are CPU seconds of this process (torch runs one thread in the benchmark), which a shared
machine's neighbours disturb far less than wall time; wall times are kept in the details.

second target: the first job on a pool (cache_dir given: it fills the cache) against a second job
with another validation set on the same cache. multi-target: run_multi_target with K validation
sets against K separate run_selection calls (no cache: what K jobs cost without sharing).
Every pair is also checked for identical scores.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from tov_engine import JobConfig, SelectionOutcome, run_multi_target, run_selection

WALL: dict[str, float] = {}


def _timed(fn: Callable[[], Any], label: str = "") -> tuple[Any, float]:
    """(fn(), CPU seconds it took); its wall seconds go to WALL[label]."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    if label:
        WALL[label] = WALL.get(label, 0.0) + time.perf_counter() - wall
    return out, time.process_time() - cpu


def _same(a: SelectionOutcome, b: SelectionOutcome) -> bool:
    return bool(np.array_equal(a.scores, b.scores, equal_nan=True)) and bool(
        np.array_equal(a.selection.indices, b.selection.indices)
    )


def _stages(outcome: SelectionOutcome) -> dict[str, float]:
    keys = ("seconds_prepare", "seconds_train", "seconds_score", "seconds_select")
    return {k: float(outcome.stats[k]) for k in keys}


def second_target(model: Path, pool: Path, vals: list[Path], config: JobConfig) -> dict[str, Any]:
    """Times of: a first job without cache, the same job filling a cache, a second target."""
    with tempfile.TemporaryDirectory(prefix="tov-perf-cache-") as tmp:
        cache = Path(tmp)

        def job(val: Path, cache_dir: Path | None) -> SelectionOutcome:
            return run_selection(
                pool_path=pool, validation_path=val, model=model, config=config, cache_dir=cache_dir
            )

        WALL.clear()
        plain, t_plain = _timed(lambda: job(vals[0], None), "first_without_cache")
        first, t_first = _timed(lambda: job(vals[0], cache), "first_filling_cache")
        second, t_second = _timed(lambda: job(vals[1], cache), "second_target")
        reference, _ = _timed(lambda: job(vals[1], None))
    return {
        "variant": config.tov.variant,
        "rounds": first.stats["rounds"],
        "cpu_seconds_first_without_cache": t_plain,
        "cpu_seconds_first_filling_cache": t_first,
        "cpu_seconds_second_target": t_second,
        # against the cheaper of the two first jobs: the conservative reading
        "second_target_time_ratio": t_second / min(t_first, t_plain),
        "second_target_vs_first_filling_cache": t_second / t_first,
        "cache_write_overhead": t_first / t_plain - 1.0,
        "wall_seconds": dict(WALL),
        "base_rounds_reused": second.stats["base_rounds_reused"],
        "stats_first": _stages(first),
        "stats_second": _stages(second),
        "identical": _same(plain, first) and _same(second, reference),
    }


def multi_target(model: Path, pool: Path, vals: list[Path], config: JobConfig) -> dict[str, Any]:
    """Times of K separate jobs and of one K-target run."""
    WALL.clear()
    separate: list[SelectionOutcome] = []
    t_separate = 0.0
    for val in vals:
        out, t = _timed(
            lambda v=val: run_selection(  # type: ignore[misc]
                pool_path=pool, validation_path=v, model=model, config=config
            ),
            "separate",
        )
        separate.append(out)
        t_separate += t
    multi, t_multi = _timed(
        lambda: run_multi_target(pool_path=pool, validation_paths=vals, model=model, config=config),
        "multi",
    )
    return {
        "targets": len(vals),
        "variant": config.tov.variant,
        "rounds": multi[0].stats["rounds"],
        "cpu_seconds_separate": t_separate,
        "cpu_seconds_multi": t_multi,
        "wall_seconds": dict(WALL),
        "multi_target_time_ratio": t_multi / t_separate,
        "stats_separate_first": _stages(separate[0]),
        "stats_multi": [_stages(o) for o in multi],
        "identical": all(_same(a, b) for a, b in zip(separate, multi, strict=True)),
    }
