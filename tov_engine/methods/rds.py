"""RDS+ (Ivison et al. 2025, "Large-Scale Data Selection for Instruction Tuning"): representation
similarity, no training.

Every row is embedded as the position-weighted mean of the model's last hidden states over its
tokens (weight t for the t-th token, so later tokens count more; the reference's
`--pooling weighted_mean`), L2-normalised. Each pool row's cosine similarity to each validation
row is computed, and the selection takes rows round-robin across the validation rows: each
validation row in turn takes its most similar pool row not yet taken.

The whole round-robin order of the pool is kept as the score (1 for the first row taken, falling
by 1/N a place), so "score-only, one bin" re-selects the round-robin prefix for any budget.
The pool's embeddings go in the pool cache: a second target on the same pool embeds only its
validation rows.
"""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np

from tov_engine.job import Job, SelectionOutcome
from tov_engine.methods.common import finish_selection
from tov_engine.methods.embedding import embed, load_frozen, pool_embeddings
from tov_engine.progress import Tracker
from tov_engine.selection import selection_for_method

logger = logging.getLogger(__name__)

SIMILARITY_CHUNK = 8192  # pool rows per similarity block


def round_robin_order(similarity: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    """The pool rows in round-robin order: validation row 0 takes its most similar eligible row,
    then validation row 1, ..., then row 0 again, never taking a row twice.

    Args:
        similarity: (N, M) cosine of each pool row to each validation row.
        eligible: (N,) bool, rows that may be taken.
    Returns:
        (E,) int64 pool indices, E = eligible rows; a prefix of n is the RDS+ selection of n.
    """
    n, m = similarity.shape
    wanted = int(eligible.sum())
    if m == 0 or wanted == 0:
        return np.zeros(0, dtype=np.int64)
    # Most similar first; ties by pool index (a stable sort of the negated column).
    orders = np.argsort(-similarity, axis=0, kind="stable").astype(np.int64)  # (N, M)
    taken = ~eligible.copy()
    pointers = np.zeros(m, dtype=np.int64)
    order = np.empty(wanted, dtype=np.int64)
    count = 0
    while count < wanted:
        for j in range(m):
            column, p = orders[:, j], pointers[j]
            while p < n and taken[column[p]]:
                p += 1
            pointers[j] = p
            if p == n:
                continue
            taken[column[p]] = True
            order[count] = column[p]
            count += 1
            if count == wanted:
                break
    return order


def _similarity(pool: np.ndarray, val: np.ndarray) -> np.ndarray:
    """(N, M) cosine similarities, computed in blocks of pool rows."""
    out = np.empty((len(pool), len(val)), dtype=np.float32)
    for a in range(0, len(pool), SIMILARITY_CHUNK):
        out[a : a + SIMILARITY_CHUNK] = pool[a : a + SIMILARITY_CHUNK] @ val.T
    return out


def run_rds_job(job: Job) -> SelectionOutcome:
    """RDS+: embed, cosine to every validation row, round-robin; see the module docstring."""
    start = time.perf_counter()
    model = load_frozen(job)
    tracker = Tracker(
        {"embed": len(job.pool) + len(job.val), "select": 1},
        {"embed": 1.0, "select": 0.0},
        job.progress,
        job.should_cancel,
    )
    pool_vectors = pool_embeddings(job, model, tracker)
    val_rows = np.arange(len(job.val), dtype=np.int64)
    val_vectors = embed(
        model,
        job.val,
        val_rows,
        pad_id=int(job.tokenizer.pad_token_id),
        tokens_per_batch=job.config.tov.tokens_per_batch,
        tracker=tracker,
    )
    job.stats["seconds_embed"] = time.perf_counter() - start
    similarity = _similarity(pool_vectors, val_vectors)
    excluded = job.excluded  # leaked rows in mode "exclude" (tov_engine.leakage)
    eligible = ~excluded if excluded is not None else np.ones(len(job.pool), dtype=bool)
    order = round_robin_order(similarity, eligible)
    scores = np.full(len(job.pool), np.nan, dtype=np.float32)
    scores[order] = 1.0 - np.arange(len(order), dtype=np.float32) / max(len(job.pool), 1)
    job.stats["max_cosine_mean"] = float(similarity.max(axis=1).mean()) if similarity.size else 0.0
    job.stats["rows_embedded"] = len(job.pool) + len(job.val)
    # RDS+ selects by its round-robin alone: all of the budget by score, no length bins.
    rule = selection_for_method("rds", job.config.selection)
    view = dataclasses.replace(job, config=dataclasses.replace(job.config, selection=rule))
    return finish_selection(view, scores, np.zeros(0, dtype=np.int64), tracker)
