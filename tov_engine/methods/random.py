"""The random baseline: a uniform sample of the budget, no model weights needed."""

from __future__ import annotations

import time

import numpy as np

from tov_engine.job import Job, SelectionOutcome
from tov_engine.leakage import select_random_excluding
from tov_engine.progress import ProgressEvent


def run_random_job(job: Job) -> SelectionOutcome:
    """The random baseline: a uniform sample of the budget, no model weights needed."""
    start = time.perf_counter()
    chosen = select_random_excluding(
        job.excluded, pool_size=len(job.pool), n=job.budget, seed=job.config.seed
    )
    job.stats["seconds_select"] = time.perf_counter() - start
    if job.progress is not None:
        job.progress(ProgressEvent("select", 1, 1, 1.0, "random sample"))
    return SelectionOutcome(
        scores=np.full(len(job.pool), np.nan, dtype=np.float32),
        lengths=job.pool.loss_lengths,
        base_indices=np.zeros(0, dtype=np.int64),
        selection=chosen,
        stats=job.stats,
    )
