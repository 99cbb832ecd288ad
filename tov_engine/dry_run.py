"""`tov-select select ... --dry-run`: the job's estimate (tov_plan) from a JobConfig, loading no
weights: rows and tokens counted with the model's tokenizer.json, the passes planned, the
predicted wall time on a device class and the predicted peak memory, as JSON."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from tov_engine.config import JobConfig
from tov_plan.estimate import DryRunInputs, dry_run
from tov_plan.plan import JobSettings, settings_of


def job_settings(config: JobConfig, device_class: str) -> JobSettings:
    """The JobConfig's knobs as tov_plan reads them ("auto" checkpointing resolved by the
    device class: on with a GPU, off on CPU, as the engine resolves it by device)."""
    return settings_of(config, device_class)


def estimate(
    config: JobConfig,
    *,
    pool: Path,
    validation: Path,
    model: Path,
    device_class: str = "cpu",
    cache_dir: Path | None = None,
    device_bytes: int | None = None,
) -> dict[str, Any]:
    """The dry run of one job (ValueError with the reason for a job the engine would refuse)."""
    return dry_run(
        DryRunInputs(
            model_dir=Path(model).resolve(),
            pool_path=Path(pool),
            validation_paths=[Path(validation)],
            settings=job_settings(config, device_class),
            device_class=device_class,
            learning_rate=config.tov.learning_rate,
            lora=dataclasses.asdict(config.tov.lora),
            cache_dir=cache_dir,
            device_bytes=device_bytes,
        )
    )
