"""The one place where the API's job rows become the engine's inputs and configuration."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from sqlalchemy.orm import Session

from app.core.artifacts import local_dataset
from app.core.config import Settings
from app.core.models import Dataset, Job
from app.jobs.service import decontaminate_ids, target_dataset_ids
from tov_engine import (
    DataError,
    JobConfig,
    LeakageConfig,
    LoraSettings,
    ModelError,
    SelectionConfig,
    SelectionOutcome,
    ToVConfig,
)
from tov_engine.config import VerifySettings
from tov_plan.rules import DEFAULT_NUM_BINS, DEFAULT_STRATEGY

ENGINE = "tov_engine:run_selection"  # the real engine; TOV_ENGINE_ENTRYPOINT may name a stand-in
# cuBLAS matmuls repeat exactly only with a fixed workspace, read when CUDA starts: the engine's
# determinism switch (tov_engine/model/precision.py) needs it and the engine reads no environment.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def job_folder(settings: Settings, job_id: str) -> Path:
    """The job's local scratch folder (checkpoints, trained rounds), where the engine writes;
    what other hosts need is synced with the artifact store (app.core.artifacts, job_key)."""
    return Path(settings.artifact_root) / "jobs" / job_id


def load_entrypoint(spec: str) -> Callable[..., SelectionOutcome]:
    """`module:function`, e.g. tov_engine:run_selection."""
    module, _, name = spec.partition(":")
    return cast(Callable[..., SelectionOutcome], getattr(importlib.import_module(module), name))


def selection_config(params: dict[str, Any]) -> SelectionConfig:
    raw = params.get("selection", {})
    budget = float(raw.get("budget", 0.1))
    return SelectionConfig(
        budget=int(budget) if budget >= 1 else budget,
        strategy=raw.get("strategy", DEFAULT_STRATEGY),
        num_bins=int(raw.get("num_bins", DEFAULT_NUM_BINS)),
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
        precision=str(job.params.get("precision", "auto")),
        gradient_checkpointing=str(job.params.get("gradient_checkpointing", "auto")),
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


@dataclass(frozen=True)
class JobInputs:
    """What the engine reads for one job: files, model folder, configuration, pool cache."""

    pool_path: Path
    pool_rows: int
    validation_paths: list[Path]  # one per target, in target order
    model: Path
    config: JobConfig
    cache_dir: Path | None  # the shared pool cache, None when it is off
    decontaminate_paths: list[Path] = field(default_factory=list)  # `decontaminate_against`
    leakage: LeakageConfig | None = None  # the job's leakage settings; None: the defaults
    verify: VerifySettings | None = None  # the job's `verify` (worker.verification); None: off

    def leakage_kwargs(self) -> dict[str, Any]:
        """The leakage check's arguments, only where the job set them (a stand-in engine that
        predates the check takes the others alone)."""
        kwargs: dict[str, Any] = {}
        if self.decontaminate_paths:
            kwargs["decontaminate_against"] = list(self.decontaminate_paths)
        if self.leakage is not None:
            kwargs["leakage"] = self.leakage
        return kwargs

    def engine_kwargs(self, target: int = 0) -> dict[str, Any]:
        """The arguments a single-target engine call (or prepare_staged) takes for `target`."""
        return {
            "pool_path": self.pool_path,
            "validation_path": self.validation_paths[target],
            "model": self.model,
            "config": self.config,
            "cache_dir": self.cache_dir,
            **self.leakage_kwargs(),
        }


def load_inputs(session: Session, job: Job, settings: Settings) -> JobInputs:
    """The job's datasets, model and configuration, checked (DataError, ModelError)."""
    pool = session.get(Dataset, job.pool_dataset_id)
    assert pool is not None
    validations = []
    for k, dataset_id in enumerate(target_dataset_ids(job)):
        dataset = session.get(Dataset, dataset_id)
        if dataset is None:
            reason = f"the validation dataset of target {k} no longer exists"
            raise DataError(dataset_id, 0, "", reason)
        validations.append(local_dataset(dataset.uri, dataset.sha256, settings))
    decontaminate = []
    for i, dataset_id in enumerate(decontaminate_ids(job)):
        dataset = session.get(Dataset, dataset_id)
        if dataset is None:
            reason = f"the dataset decontaminate_against[{i}] no longer exists"
            raise DataError(dataset_id, 0, "", reason)
        decontaminate.append(local_dataset(dataset.uri, dataset.sha256, settings))
    config = job_config(job)  # checked before the model, as the engine would
    leakage = job.params.get("leakage")
    verify = job.params.get("verify")
    return JobInputs(
        verify=VerifySettings(**verify) if verify else None,
        decontaminate_paths=decontaminate,
        leakage=LeakageConfig(**leakage) if leakage else None,
        pool_path=local_dataset(pool.uri, pool.sha256, settings),
        pool_rows=pool.rows,
        validation_paths=validations,
        model=resolve_model(job.model, settings.model_roots),
        config=config,
        cache_dir=settings.artifact_root / "pool-cache" if settings.pool_cache else None,
    )
