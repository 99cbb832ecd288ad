"""A single-target job in one process: the engine's entry point, called once."""

from __future__ import annotations

from tov_engine import SelectionOutcome
from worker.attempt import AttemptContext
from worker.engine_bridge import JobInputs, load_entrypoint


def run(context: AttemptContext, inputs: JobInputs) -> list[SelectionOutcome]:
    """The configured entry point (TOV_ENGINE_ENTRYPOINT may replace the real engine)."""
    entrypoint = load_entrypoint(context.settings.engine_entrypoint)
    outcome = entrypoint(
        **inputs.engine_kwargs(),
        progress=context.engine_progress(),
        should_cancel=context.should_stop,
        checkpoint_dir=context.checkpoint_dir(),
    )
    return [outcome]
