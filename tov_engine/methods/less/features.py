"""LESS features: per-row gradients of a set of rows, Adam-directed, projected and normalised.

The projection (gradients.Projector, a sparse JL transform drawn once per job) costs O(P) a row,
so each gradient batch is projected as it comes.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from tov_engine.data.batching import make_batch
from tov_engine.data.encoded import EncodedSet
from tov_engine.job import Job
from tov_engine.methods.less.gradients import (
    Checkpoint,
    Projector,
    adam_direction,
    batch_gradients,
    example_gradient,
    linear_owners,
)
from tov_engine.model.precision import compute
from tov_engine.model.surrogate import Surrogate
from tov_engine.progress import Tracker


def _directed(
    job: Job,
    s: Surrogate,
    enc: EncodedSet,
    chunk: np.ndarray,
    ck: Checkpoint,
    adam: bool,
    owners: dict[int, nn.Linear] | None,
) -> tuple[np.ndarray, torch.Tensor | None]:
    """(positions in `chunk` of the rows with loss, their (k, P) gradients, Adam-directed for
    pool rows) for one gradient batch."""
    params = s.params("base")
    device = params[0].device
    g: torch.Tensor | None
    if owners is not None:
        batch = make_batch(enc, chunk, int(job.tokenizer.pad_token_id), device)
        with compute(s.model):
            g, ok = batch_gradients(s.model, params, owners, batch, job.config.task)
        keep = np.flatnonzero(ok.numpy())
        g = g[ok.to(g.device)]
    else:
        found = [example_gradient(s.model, params, job, enc, int(r)) for r in chunk]
        keep = np.asarray([i for i, v in enumerate(found) if v is not None], dtype=np.int64)
        vs = [v for v in found if v is not None]
        g = torch.stack(vs) if vs else None
    if g is None or not len(keep):
        return keep, None
    return keep, adam_direction(g, ck) if adam else g


def features(
    job: Job,
    s: Surrogate,
    enc: EncodedSet,
    batches: list[np.ndarray],
    ck: Checkpoint,
    project: Projector,
    adam: bool,
    tracker: Tracker,
) -> torch.Tensor:
    """(rows, d) projected, L2-normalised gradients of the batches' rows, in the order of
    np.concatenate(batches); zero rows for rows without loss tokens.

    Each batch (up to GRADIENT_BUFFER rows, see gradient_batches) gets per-row gradients from one
    backward pass (batch_gradients); a model whose trainable parameters are not all Linear layers
    falls back to one backward per row. Each batch is projected as it comes."""
    out = torch.zeros(sum(len(b) for b in batches), project.d)
    s.model.eval()  # no dropout: a gradient per example, not per dropout mask
    owners = linear_owners(s.model, s.params("base"))
    at = 0
    for chunk in batches:
        keep, g = _directed(job, s, enc, chunk, ck, adam, owners)
        if g is not None:
            feats = nn.functional.normalize(project(g), dim=1)  # (k, d)
            out[torch.from_numpy(at + keep)] = feats.cpu()
        at += len(chunk)
        tracker.advance("score", len(chunk))
    s.model.train()
    return out
