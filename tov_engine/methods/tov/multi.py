"""ToV for several validation sets on one pool, sharing the validation-free work.

One surrogate and one BaseHalves per label set (causal LM: one): the base half of every shareable
round (the base epoch on U and the base pass over R: every round for Method B, round 0 for Method
A) is computed for the first target and reused by the others. Each target's outcome is identical to
a separate run_selection.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import torch

from tov_engine.job import Job, SelectionOutcome
from tov_engine.methods.common import build_surrogate
from tov_engine.methods.tov.run import run_tov_job, tov_totals, tov_tracker
from tov_engine.model.loading import load_model
from tov_engine.model.surrogate import Surrogate
from tov_engine.progress import Tracker
from tov_engine.store.poolcache import BaseHalves

logger = logging.getLogger(__name__)


def _reset(job: Job, surrogate: Surrogate) -> Callable[[], None]:
    """Restores the surrogate's initial trainable weights before a later target's fresh round 0:
    a snapshot of the (small) base adapter, or with full fine-tuning a reload from the folder."""
    if surrogate.lora:
        snapshot = surrogate.state("base")
        return lambda: surrogate.load_state("base", snapshot)

    def reload() -> None:
        torch.manual_seed(job.config.seed)  # a new classification head is seeded as at build
        fresh = load_model(
            job.model, task=job.config.task, device=torch.device("cpu"), labels=job.labels
        )
        surrogate.load_state("base", {n: p.detach() for n, p in fresh.named_parameters()})

    return reload


def _run_groups(jobs: list[Job], tracker: Tracker) -> list[SelectionOutcome]:
    """ToV for every job: one surrogate and one BaseHalves per label set (causal LM: one)."""
    groups: dict[str, list[int]] = {}
    for j, job in enumerate(jobs):  # token classification: the head depends on the tag set
        groups.setdefault(repr(job.labels), []).append(j)
    outcomes: dict[int, SelectionOutcome] = {}
    for members in groups.values():
        first = jobs[members[0]]
        surrogate = build_surrogate(first)
        base_halves = BaseHalves() if first.cache_dir is None else None  # else: the pool cache
        reset = _reset(first, surrogate) if len(members) > 1 else None
        for n, j in enumerate(members):
            start = time.perf_counter()
            outcomes[j] = run_tov_job(
                jobs[j],
                surrogate=surrogate,
                base_halves=base_halves,
                tracker=tracker,
                reset=reset if n else None,
            )
            jobs[j].stats["seconds_target"] = time.perf_counter() - start
            logger.info("target %d of %d done", j + 1, len(jobs))
        del surrogate, base_halves, reset  # free this group's model before the next one loads
    return [outcomes[j] for j in range(len(jobs))]


def _tracker(jobs: list[Job]) -> Tracker:
    lora = jobs[0].config.tov.lora.enabled
    totals: dict[str, int] = {"train": 0, "score": 0, "select": 0}
    for job in jobs:
        for stage, units in tov_totals(job, lora).items():
            totals[stage] = totals.get(stage, 0) + units
    return tov_tracker(jobs[0], lora, totals)


def run_tov_targets(jobs: list[Job]) -> list[SelectionOutcome]:
    """ToV for every job (one pool, several validation sets), with one progress tracker."""
    return _run_groups(jobs, _tracker(jobs))
