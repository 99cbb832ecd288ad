"""Row embeddings from a frozen model, shared by RDS+ (its similarity) and the score+diverse
strategy (its distances): the position-weighted mean of the last hidden states, L2-normalised, as
in RDS+ (Ivison et al. 2025, `--pooling weighted_mean`). Pool embeddings live in the pool cache
(entry `rds-embeddings/`), so every later job on the same pool, model and precision reuses them.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torch import nn

from tov_engine.data.batching import make_batch, plan_buckets
from tov_engine.data.encoded import EncodedSet
from tov_engine.job import Job
from tov_engine.model.loading import load_model, resolve_device
from tov_engine.model.precision import (
    Precision,
    apply_determinism,
    attach,
    compute,
    float32_compute,
    resolve_precision,
)
from tov_engine.progress import Tracker
from tov_engine.store.entries import EntryStore
from tov_engine.store.keys import fingerprint

logger = logging.getLogger(__name__)

EMBEDDING_FORMAT = 1  # bump when the pooling changes: cached pool embeddings then miss


def load_for_job(job: Job, lora: bool) -> tuple[nn.Module, Precision]:
    """The job's model on its device in its precision policy (frozen base weights in bf16 under
    that policy when `lora`), seeded; the policy's determinism switch is applied to the process
    and its name recorded in job.stats["precision"]."""
    device = resolve_device(job.config.device)
    policy = resolve_precision(job.config.precision, device, job.config.deterministic)
    apply_determinism(policy)
    torch.manual_seed(job.config.seed)  # a new classification head and LoRA init are random
    model = load_model(
        job.model,
        task=job.config.task,
        device=device,
        labels=job.labels,
        dtype=policy.weights_dtype(lora),
    )
    job.stats["precision"] = policy.name
    return model, policy


def load_frozen(job: Job) -> nn.Module:
    """The model for inference only, in the job's precision policy (bf16 weights computed in
    float32 under bf16), on the job's device; the policy's determinism applied."""
    model, policy = load_for_job(job, True)
    if policy.bf16:
        float32_compute(model)
    attach(model, policy, True)
    model.eval()
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


def pool_embeddings(job: Job, model: nn.Module, tracker: Tracker | None = None) -> np.ndarray:
    """(N, H) unit embeddings of the pool's rows from the frozen `model` (see `embed`), from the
    pool cache when it holds them (then nothing runs through the model), else computed and kept
    there. job.stats["precision"] names the precision policy the model was loaded in."""
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
        if tracker is not None:
            tracker.finish("embed", "pool embeddings from the pool cache")
        job.stats["pool_embeddings_reused"] = True
        return np.load(folder / "embeddings.npy")
    vectors = embed(model, job.pool, rows, tracker=tracker, **kw)
    with store.writing(name, key) as tmp:
        np.save(tmp / "embeddings.npy", vectors)
    job.stats["pool_embeddings_reused"] = False
    return vectors
