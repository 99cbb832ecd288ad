"""One runner per kind of job, chosen by `choose_runner`.

A runner takes the attempt's context and the job's inputs and returns the outcomes in target
order; claiming, the heartbeat, publishing and failures are the job runner's (worker.job_runner).
"""

from __future__ import annotations

from collections.abc import Callable

from app.core.config import Settings
from tov_engine import SelectionOutcome
from worker.attempt import AttemptContext
from worker.engine_bridge import ENGINE, JobInputs
from worker.runners import multi, single, staged

Runner = Callable[[AttemptContext, JobInputs], list[SelectionOutcome]]


def is_staged(settings: Settings, inputs: JobInputs) -> bool:
    """Scale-out: single-target ToV with LoRA on the real engine, for pools of more than one
    shard; multi-target jobs and jobs that verify their selection run unsharded."""
    config = inputs.config
    return (
        len(inputs.validation_paths) == 1
        and inputs.verify is None
        and 0 < settings.score_shard_rows < inputs.pool_rows
        and settings.engine_entrypoint == ENGINE
        and config.method == "tov"
        and config.tov.lora.enabled
    )


def choose_runner(settings: Settings, inputs: JobInputs) -> Runner:
    """The runner for the job: multi-target (K > 1), staged (scale-out) or single-target."""
    if len(inputs.validation_paths) > 1:
        return multi.run
    if is_staged(settings, inputs):
        return staged.run
    return single.run
