"""A selection that proves itself: fine-tune fresh adapters on the selection and on a same-size
uniform random subset, and compare their loss on validation rows that selection never saw.

`split_validation` holds a share of the validation rows out before selection;
`verify_selection` runs afterwards. Each seed trains two fresh LoRA adapters with one fixed short
recipe (VerifySettings) from the same initialisation and in the same seeded row order, one on the
selection and one on a random subset of the same size, so their only difference is the rows. The
report gives the base model's held-out loss, both arms' losses per seed, and the improvement over
random with its spread.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tov_engine.config import JobConfig, VerifySettings
from tov_engine.data.files import inspect_dataset, read_rows
from tov_engine.errors import ConfigError
from tov_engine.progress import ProgressCallback, Tracker

logger = logging.getLogger(__name__)

VERIFY_STAGE = "verify"


@dataclass(frozen=True)
class ValidationSplit:
    """The validation file split in two: rows selection sees, and rows only verification sees."""

    kept_path: Path
    holdout_path: Path
    kept_rows: list[int]  # row numbers (0-based) in the original file
    holdout_rows: list[int]


@dataclass
class VerifyReport:
    """Held-out losses (mean NLL per loss-bearing token) of the base model and both arms."""

    holdout: float
    holdout_rows: int
    seeds: int
    selected_rows: int
    base_loss: float
    selected_losses: list[float]
    random_losses: list[float]
    selected_loss: float  # mean over seeds
    random_loss: float
    improvement: float  # random_loss - selected_loss: > 0 = the selection helps more than random
    improvement_sd: float  # sample standard deviation of the paired improvement (0 with 1 seed)
    improvement_percent: float  # improvement as a share of random_loss, in percent
    base_improvement: float  # base_loss - selected_loss: what fine-tuning on the selection gained
    seconds: float
    recipe: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)


def holdout_split(rows: int, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held out) row numbers, each sorted: round(holdout * rows) rows held out, at least
    one on each side; drawn with the job seed so a rerun holds out the same rows."""
    if rows < 2:
        raise ConfigError(f"verify needs at least 2 validation rows to hold some out, got {rows}")
    count = min(rows - 1, max(1, math.floor(holdout * rows + 0.5)))
    rng = np.random.default_rng([seed, 17])
    held = np.sort(rng.choice(rows, size=count, replace=False)).astype(np.int64)
    kept = np.setdiff1d(np.arange(rows, dtype=np.int64), held)
    return kept, held


def _write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")


def split_validation(
    validation_path: str | Path, folder: str | Path, holdout: float, seed: int
) -> ValidationSplit:
    """Write the kept and held-out validation rows as JSONL files under `folder`.

    Rows are read with the engine's row rules (any input format; a bad row raises DataError), and
    written back as the same row objects, so both halves are valid inputs for every method.
    """
    rows = list(read_rows(validation_path))
    kept, held = holdout_split(len(rows), holdout, seed)
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    kept_path, holdout_path = out / "validation-kept.jsonl", out / "validation-holdout.jsonl"
    _write_jsonl(kept_path, (rows[i] for i in kept))
    _write_jsonl(holdout_path, (rows[i] for i in held))
    return ValidationSplit(kept_path, holdout_path, kept.tolist(), held.tolist())


def random_arm(pool_size: int, size: int, job_seed: int, seed: int) -> np.ndarray:
    """The random arm of one seed: `size` distinct pool rows, uniform, sorted."""
    rng = np.random.default_rng([job_seed, seed, 23])
    return np.sort(rng.choice(pool_size, size=size, replace=False)).astype(np.int64)


def verify_selection(
    *,
    pool_path: str | Path,
    holdout_path: str | Path,
    model: str | Path,
    config: JobConfig,
    selected: np.ndarray,
    settings: VerifySettings,
    progress: ProgressCallback | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> VerifyReport:
    """Fine-tune on the selection and on random subsets; compare held-out losses.

    Args:
        pool_path: the pool file. holdout_path: the held-out validation rows (split_validation).
        model: the local model folder. config: the job's settings (task, device, precision,
            max_length, seed). selected: the selection's pool indices.
        settings: the recipe and the number of seeds. progress, should_cancel: as run_selection,
            under stage "verify" (units: training rows over all arms and seeds).
    Returns:
        The VerifyReport. Raises ConfigError (empty selection, or one as large as the pool),
        DataError, ModelError, Cancelled.
    """
    from tov_engine.model.finetune import Verifier  # lazy: torch loads when verification runs

    start = time.perf_counter()
    chosen = np.unique(np.asarray(selected, dtype=np.int64))
    pool_size = inspect_dataset(pool_path).rows
    if len(chosen) == 0:
        raise ConfigError("verify needs a non-empty selection")
    if len(chosen) >= pool_size or chosen[-1] >= pool_size or chosen[0] < 0:
        raise ConfigError(
            f"verify needs a selection of rows of the pool, fewer than its {pool_size} rows"
        )
    arms = [random_arm(pool_size, len(chosen), config.seed, s) for s in range(settings.seeds)]
    needed = set(chosen.tolist()).union(*(a.tolist() for a in arms))
    rows = {i: row for i, row in enumerate(read_rows(pool_path)) if i in needed}
    total = settings.seeds * 2 * settings.epochs * len(chosen)
    tracker = Tracker({VERIFY_STAGE: total}, {VERIFY_STAGE: 1.0}, progress, should_cancel)
    verifier = Verifier(model, config, rows, list(read_rows(holdout_path)), settings)
    base_loss = verifier.heldout_loss()
    selected_losses, random_losses = [], []
    for seed in range(settings.seeds):
        selected_losses.append(verifier.finetune_and_measure(chosen, seed, tracker))
        random_losses.append(verifier.finetune_and_measure(arms[seed], seed, tracker))
    tracker.finish(VERIFY_STAGE, "verified")
    seconds = time.perf_counter() - start
    return _report(
        settings,
        verifier.holdout_rows,
        len(chosen),
        base_loss,
        selected_losses,
        random_losses,
        seconds,
    )


def _report(
    settings: VerifySettings,
    holdout_rows: int,
    selected_rows: int,
    base_loss: float,
    selected_losses: list[float],
    random_losses: list[float],
    seconds: float,
) -> VerifyReport:
    diffs = np.asarray(random_losses) - np.asarray(selected_losses)
    selected_mean, random_mean = float(np.mean(selected_losses)), float(np.mean(random_losses))
    improvement = float(diffs.mean())
    recipe = {k: v for k, v in asdict(settings).items() if k not in ("holdout", "seeds")}
    return VerifyReport(
        holdout=settings.holdout,
        holdout_rows=holdout_rows,
        seeds=settings.seeds,
        selected_rows=selected_rows,
        base_loss=base_loss,
        selected_losses=[float(x) for x in selected_losses],
        random_losses=[float(x) for x in random_losses],
        selected_loss=selected_mean,
        random_loss=random_mean,
        improvement=improvement,
        improvement_sd=float(diffs.std(ddof=1)) if len(diffs) > 1 else 0.0,
        improvement_percent=100.0 * improvement / random_mean if random_mean else 0.0,
        base_improvement=base_loss - selected_mean,
        seconds=seconds,
        recipe=recipe,
    )
