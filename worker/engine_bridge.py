"""The one place where the API's job parameters become the engine's configuration."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from app.core.models import Job
from tov_engine import JobConfig, LoraSettings, SelectionConfig, ToVConfig
from tov_engine.errors import ModelError


def selection_config(params: dict[str, Any]) -> SelectionConfig:
    raw = params.get("selection", {})
    budget = float(raw.get("budget", 0.1))
    return SelectionConfig(
        budget=int(budget) if budget >= 1 else budget,
        strategy=raw.get("strategy", "score+random"),
        num_bins=int(raw.get("num_bins", 10)),
        min_per_bin=int(raw.get("min_per_bin", 0)),
    )


def job_config(job: Job, *, device: str | None = None) -> JobConfig:
    """Translate the stored request of `job` into a JobConfig (validated by the engine)."""
    tov = dict(job.params.get("tov", {}))
    lora = dict(tov.pop("lora", {}))
    if isinstance(lora.get("target_modules"), list):
        lora["target_modules"] = tuple(lora["target_modules"])
    return JobConfig(
        task=job.task,
        method=job.method,
        tov=ToVConfig(**tov, lora=LoraSettings(**lora)),
        selection=selection_config(job.params),
        seed=job.seed,
        max_length=int(job.params.get("max_length", 512)),
        device=device,
    )


def resolve_model(name: str, roots: list[Path]) -> Path:
    """A model name or folder, accepted only under a configured model root (no hub access)."""
    candidate = Path(name)
    for root in roots:
        real_root = Path(os.path.realpath(root))
        path = Path(os.path.realpath(candidate if candidate.is_absolute() else root / name))
        if (path == real_root or real_root in path.parents) and (path / "config.json").is_file():
            return path
    raise ModelError(
        f"model '{name}' is not installed under the model roots "
        f"({', '.join(str(r) for r in roots)}); see scripts/prepare_model.py"
    )
