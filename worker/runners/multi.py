"""A multi-target job (K > 1), unsharded."""

from __future__ import annotations

from tov_engine import SelectionOutcome, run_multi_target
from worker.attempt import AttemptContext
from worker.engine_bridge import ENGINE, JobInputs, load_entrypoint


def run(context: AttemptContext, inputs: JobInputs) -> list[SelectionOutcome]:
    """The real engine runs all K targets in one run_multi_target call that shares the
    validation-free work; a replaced entry point (TOV_ENGINE_ENTRYPOINT, e.g. the fault tests'
    stand-in) is called once per target, in order, with that target's validation file and its
    own checkpoint folder (checkpoint/target_NNN, the layout run_multi_target uses): the same
    outcomes, no sharing.
    """
    k = len(inputs.validation_paths)
    if context.settings.engine_entrypoint == ENGINE:
        return run_multi_target(
            pool_path=inputs.pool_path,
            validation_paths=inputs.validation_paths,
            model=inputs.model,
            config=inputs.config,
            progress=context.engine_progress(None, k),
            should_cancel=context.should_stop,
            checkpoint_dir=context.checkpoint_dir(),
            cache_dir=inputs.cache_dir,
            **inputs.leakage_kwargs(),
        )
    entrypoint = load_entrypoint(context.settings.engine_entrypoint)
    return [
        entrypoint(
            **inputs.engine_kwargs(j),
            progress=context.engine_progress(j, k),
            should_cancel=context.should_stop,
            checkpoint_dir=context.checkpoint_dir() / f"target_{j:03d}",
        )
        for j in range(k)
    ]
