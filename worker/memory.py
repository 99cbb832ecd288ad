"""Refuse a job its device cannot hold, before the engine loads anything (tov_plan.memory)."""

from __future__ import annotations

import logging

from app.core.config import Settings
from tov_engine.model.footprint import check_memory
from worker.engine_bridge import JobInputs

logger = logging.getLogger(__name__)


def check_job_memory(inputs: JobInputs, settings: Settings) -> None:
    """Raise InsufficientMemory (a terminal engine error) when the job's predicted peak exceeds
    the device's memory: TOV_WORKER_MEMORY_GB when set, else the free memory of the job's device.

    A model folder whose config.json does not describe an architecture the memory model reads
    (a stand-in's) is not checked."""
    if inputs.config.method == "random":
        return  # loads no model
    try:
        check_memory(
            inputs.config,
            inputs.model,
            memory_gb=settings.worker_memory_gb,
            pool=inputs.pool_path,
            validation=list(inputs.validation_paths),
        )
    except ValueError as exc:
        logger.warning("memory check skipped for %s: %s", inputs.model, exc)
