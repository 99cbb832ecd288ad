"""What the model-based methods share: the surrogate, the split of the pool into U and R, the
final selection."""

from __future__ import annotations

import logging
import time

import numpy as np

from tov_engine.errors import ConfigError
from tov_engine.job import Job, SelectionOutcome
from tov_engine.leakage import select_excluding
from tov_engine.methods.embedding import load_for_job, load_frozen, pool_embeddings
from tov_engine.model.loading import resolve_device
from tov_engine.model.precision import (
    attach,
    float32_compute,
    upcast_trainable,
)
from tov_engine.model.surrogate import Surrogate
from tov_engine.model.train_memory import (
    TrainingMemory,
    attach_memory,
    resolve_gradient_checkpointing,
)
from tov_engine.progress import Tracker
from tov_engine.selection import EMBEDDING_STRATEGIES, binning
from tov_plan.rules import draw_base

logger = logging.getLogger(__name__)

TRAIN_COST = 3.0  # a training row costs about three forward passes (forward + backward)


def build_surrogate(job: Job) -> Surrogate:
    """Load the model onto the job's device in its precision policy and attach the adapters,
    seeded; the policy's determinism switch is applied to the process here, and the training
    memory settings (gradient checkpointing, micro-batch budget) are attached to the model."""
    lora = job.config.tov.lora.enabled
    model, policy = load_for_job(job, lora)
    surrogate = Surrogate(model, job.config.tov.lora, job.config.task)
    if policy.bf16 and lora:
        upcast_trainable(surrogate.model)
        float32_compute(surrogate.model)
    attach(surrogate.model, policy, lora)
    memory = TrainingMemory(
        checkpointing=resolve_gradient_checkpointing(
            job.config.gradient_checkpointing,
            resolve_device(job.config.device),
            surrogate.model,
        ),
        tokens_per_micro_batch=job.config.tov.train_tokens_per_micro_batch,
    )
    attach_memory(surrogate.model, memory)
    memory.report_to(job.stats)
    return surrogate


def split_pool(job: Job) -> tuple[np.ndarray, np.ndarray, int]:
    """U, R and the number of rounds L for this job."""
    size = len(job.pool)
    base_size = job.config.tov.resolve_base_size(job.budget, size)
    if base_size >= size:
        raise ConfigError(f"tov.base_size {base_size} leaves no row to score in a pool of {size}")
    base = draw_base(size, base_size, job.config.seed)
    rest = np.setdiff1d(np.arange(size, dtype=np.int64), base)
    return base, rest, job.config.tov.resolve_rounds(base_size)


def finish_selection(
    job: Job,
    scores: np.ndarray,
    base: np.ndarray,
    tracker: Tracker | None,
    last: bool = True,
    losses: tuple[np.ndarray, np.ndarray] | None = None,
    surrogate: Surrogate | None = None,
) -> SelectionOutcome:
    """Select the budget from the scores (U kept out: `base`) and report the select stage;
    `losses`: every row's mean loss before and after (ToV), kept in the outcome. `surrogate`:
    the job's LoRA model, whose frozen base embeds the pool for score+diverse (else a frozen
    copy is loaded, unless the pool cache holds the embeddings)."""
    embeddings = diversity_embeddings(job, surrogate, tracker)
    start = time.perf_counter()
    lengths = job.pool.loss_lengths
    config = job.config.selection
    chosen = select_excluding(  # leaked rows in mode "exclude" are never picked
        job.excluded,
        scores=scores,
        lengths=lengths,
        base_indices=base,
        config=config,
        seed=job.config.seed,
        embeddings=embeddings,
    )
    placed = binning(
        scores=scores, lengths=lengths, base_indices=base, config=config, excluded=job.excluded
    )
    job.stats["seconds_select"] = time.perf_counter() - start
    message = f"selected {len(chosen.indices)} rows"
    if tracker is not None and last:
        tracker.finish("select", message)
    elif tracker is not None:
        tracker.advance("select", 1, message)
    before, after = losses if losses is not None else (None, None)
    return SelectionOutcome(
        scores=scores,
        lengths=lengths,
        base_indices=base,
        selection=chosen,
        stats=job.stats,
        loss_before=before,
        loss_after=after,
        binning=placed,
        leaks=job.leak_report.leaks if job.leak_report is not None else (),
    )


def diversity_embeddings(
    job: Job, surrogate: Surrogate | None, tracker: Tracker | None = None
) -> np.ndarray | None:
    """The pool's embeddings when the job's strategy draws from them (score+diverse), else None;
    progress in the tracker's "embed" stage when it has one.

    A LoRA surrogate embeds with its adapters switched off (the base model, whatever was trained);
    otherwise a frozen copy of the model is loaded. The pool cache serves a pool seen before."""
    if job.config.selection.strategy not in EMBEDDING_STRATEGIES:
        return None
    start = time.perf_counter()
    shown = tracker if tracker is not None and "embed" in tracker.totals else None
    if surrogate is not None and surrogate.lora:
        with surrogate.frozen() as model:
            vectors = pool_embeddings(job, model, shown)
    else:
        vectors = pool_embeddings(job, load_frozen(job), shown)
    job.stats["seconds_embed"] = time.perf_counter() - start
    return vectors
