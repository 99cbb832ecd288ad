"""The selection methods, and the registry that maps a method's name to its runner.

Each runner takes a prepared Job (tov_engine.job) and returns a SelectionOutcome. The registry names
runners by module path: a method's module (and torch) loads when the method first runs, so
`import tov_engine` stays cheap.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from tov_engine.progress import scaled

if TYPE_CHECKING:
    from tov_engine.job import Job, SelectionOutcome

RUNNERS = {
    "tov": "tov_engine.methods.tov.run:run_tov_job",
    "uncertainty": "tov_engine.methods.uncertainty:run_uncertainty_job",
    "less": "tov_engine.methods.less.run:run_less_job",
    "random": "tov_engine.methods.random:run_random_job",
    "rds": "tov_engine.methods.rds:run_rds_job",
}
# Runners of several targets at once that share validation-free work (others run one by one).
MULTI_TARGET_RUNNERS = {"tov": "tov_engine.methods.tov.multi:run_tov_targets"}
# Every module a run may import (a worker imports them all before forking: tov_engine.preload).
MODULES = (
    "tov_engine.methods.tov.staged",
    *(path.split(":")[0] for path in (*RUNNERS.values(), *MULTI_TARGET_RUNNERS.values())),
)


def _load(path: str) -> Callable[..., object]:
    module, _, name = path.partition(":")
    runner: Callable[..., object] = getattr(importlib.import_module(module), name)
    return runner


def run_method(job: Job) -> SelectionOutcome:
    """Run job.config.method on the prepared job (its outcome carries the job's leaks)."""
    from tov_engine.job import with_leaks

    return with_leaks(job, _load(RUNNERS[job.config.method])(job))  # type: ignore[arg-type]


def run_targets(jobs: list[Job]) -> list[SelectionOutcome]:
    """Run the method on several prepared jobs that share one pool (a multi-target run)."""
    method = jobs[0].config.method
    if method in MULTI_TARGET_RUNNERS:  # its outcomes carry leaks (methods.common)
        return _load(MULTI_TARGET_RUNNERS[method])(jobs)  # type: ignore[return-value]
    outcomes: list[SelectionOutcome] = []
    for j, job in enumerate(jobs):  # one run per target on the shared tokenised pool
        if job.progress is not None:
            job.progress = scaled(job.progress, j, len(jobs))
        outcomes.append(run_method(job))
    return outcomes
