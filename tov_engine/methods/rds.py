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
from typing import Any

import numpy as np
import torch
from torch import nn

from tov_engine.data.batching import make_batch, plan_buckets
from tov_engine.data.encoded import EncodedSet
from tov_engine.job import Job, SelectionOutcome
from tov_engine.methods.common import finish_selection
from tov_engine.model.loading import load_model, resolve_device
from tov_engine.model.precision import (
    apply_determinism,
    attach,
    compute,
    float32_compute,
    resolve_precision,
)
from tov_engine.progress import Tracker
from tov_engine.selection import selection_for_method
from tov_engine.store.entries import EntryStore
from tov_engine.store.keys import fingerprint

logger = logging.getLogger(__name__)

EMBEDDING_FORMAT = 1  # bump when the pooling changes: cached pool embeddings then miss
SIMILARITY_CHUNK = 8192  # pool rows per similarity block


def load_frozen(job: Job) -> nn.Module:
    """The model for inference only, in the job's precision policy (bf16 weights computed in
    float32 under bf16), on the job's device; the policy's determinism applied."""
    device = resolve_device(job.config.device)
    policy = resolve_precision(job.config.precision, device, job.config.deterministic)
    apply_determinism(policy)
    torch.manual_seed(job.config.seed)  # a token classifier's new head is random (unused here)
    model = load_model(
        job.model,
        task=job.config.task,
        device=device,
        labels=job.labels,
        dtype=policy.weights_dtype(True),
    )
    if policy.bf16:
        float32_compute(model)
    attach(model, policy, True)
    model.eval()
    job.stats["precision"] = policy.name
    return model


def _encoder(model: nn.Module) -> Any:
    """The transformer below the head (its output's last_hidden_state is normed, as the
    reference's hidden_states[-1])."""
    return getattr(model, "base_model", model)


@torch.inference_mode()
def embed(
    model: nn.Module,
    encoded: EncodedSet,
    rows: np.ndarray,
    *,
    pad_id: int,
    tokens_per_batch: int,
    tracker: Tracker | None = None,
    stage: str = "embed",
) -> np.ndarray:
    """(len(rows), H) float32 unit vectors, in the order of `rows`.

    Position-weighted mean over each row's real tokens: weights 1..n (padding 0), divided by
    their sum. A row of no tokens gets a zero vector (cosine 0 with everything)."""
    encoder = _encoder(model)
    device = next(model.parameters()).device
    out: np.ndarray | None = None
    where = {int(r): k for k, r in enumerate(rows)}
    for batch_rows in plan_buckets(encoded.seq_lengths, rows, tokens_per_batch):
        batch = make_batch(encoded, batch_rows, pad_id, device)
        with compute(model):
            hidden = encoder(
                input_ids=batch.input_ids, attention_mask=batch.attention_mask
            ).last_hidden_state
        mask = batch.attention_mask.to(torch.float32)  # (B, T)
        weights = torch.cumsum(mask, dim=1) * mask  # 1..n on real tokens (right padding)
        weights = weights / weights.sum(dim=1, keepdim=True).clamp(min=1.0)
        pooled = torch.einsum("bt,bth->bh", weights, hidden.float())
        vectors = torch.nn.functional.normalize(pooled, dim=1).cpu().numpy()
        if out is None:
            out = np.zeros((len(rows), vectors.shape[1]), dtype=np.float32)
        out[[where[int(r)] for r in batch_rows]] = vectors
        if tracker is not None:
            tracker.advance(stage, len(batch_rows))
    return out if out is not None else np.zeros((0, 0), dtype=np.float32)


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


def _pool_embeddings(job: Job, model: nn.Module, tracker: Tracker) -> np.ndarray:
    """The pool's embeddings, from the pool cache when it holds them."""
    pad_id = int(job.tokenizer.pad_token_id)
    rows = np.arange(len(job.pool), dtype=np.int64)
    kw: dict[str, Any] = dict(pad_id=pad_id, tokens_per_batch=job.config.tov.tokens_per_batch)
    if job.cache_dir is None or not job.pool_key:
        return embed(model, job.pool, rows, tracker=tracker, **kw)
    store = EntryStore(job.cache_dir)
    key = fingerprint(job.pool_key, EMBEDDING_FORMAT, job.stats["precision"], kind="rds-pool")
    name = f"rds-embeddings/{key[:32]}"
    folder = store.open(name, key)
    if folder is not None:
        tracker.finish("embed", "pool embeddings from the pool cache")
        job.stats["pool_embeddings_reused"] = True
        return np.load(folder / "embeddings.npy")
    vectors = embed(model, job.pool, rows, tracker=tracker, **kw)
    with store.writing(name, key) as tmp:
        np.save(tmp / "embeddings.npy", vectors)
    job.stats["pool_embeddings_reused"] = False
    return vectors


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
    pool_vectors = _pool_embeddings(job, model, tracker)
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
