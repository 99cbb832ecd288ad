"""Scoring throughput against the model's bare forward throughput on the same batches.

ToV scores every row of R with two forward passes (theta_bas and theta_val), so the engine's
scoring throughput can reach at most half that of the cheapest forward that yields the rows'
losses: `bare_forward`, the transformer body's hidden states and then the output head on the
loss-bearing positions only, in chunks. Against it the ratio's true limit is 0.5 (the goal: 0.45
or more). The GPU benchmark (benchmarks/gpu/run.py) uses the same two functions, `bare_forward`
and `tov_scoring`. All run on the same rows of R and the same length-bucketed batches,
interleaved and repeated, timed here in CPU seconds of this process (best of N: on a shared
machine wall time mostly measures the neighbours):
- the engine's scoring of one round (`tov_scoring`): its own base pass (per-token log-probs of
  theta_bas stored) and validation pass (combined with the stored ones into row scores);
- the cheapest forward (`bare_forward`), the ratio's baseline;
- in the details: the plain transformers forward (logits at every position), the transformer body
  alone (no head at all: a stricter baseline than any scorer), and the previous scoring (both
  adapters run per batch through peft's unmerged LoRA layers).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tov_engine import JobConfig, SelectionConfig, ToVConfig
from tov_engine.data.batching import make_batch, plan_buckets
from tov_engine.data.encoded import IGNORE, EncodedSet
from tov_engine.job import Job, prepare_job
from tov_engine.methods.common import build_surrogate, split_pool
from tov_engine.methods.tov.scoring import base_pass, val_pass
from tov_engine.model.loading import load_model
from tov_engine.model.logprob import HEAD_CHUNK
from tov_engine.model.scoring import TokenStore, paired_combine, run_pass
from tov_engine.model.surrogate import Surrogate
from tov_engine.progress import Tracker


def _cpu(fn: Callable[[], object]) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


@torch.inference_mode()
def bare_forward(
    model: nn.Module,
    encoded: EncodedSet,
    batches: list[np.ndarray],
    pad_id: int,
    chunk: int = HEAD_CHUNK,
) -> float:
    """The cheapest forward that yields the rows' losses: the transformer body's last hidden
    states (`model.base_model`, no head), then the output head and the cross-entropy on the
    loss-bearing positions only, `chunk` positions at a time, all in the model's own dtype (the
    cross-entropy in float32). Nothing of the engine's (no adapters, no precision policy).

    Args:
        model: a transformers causal LM (not peft-wrapped). encoded: the tokenised rows.
        batches: row-index arrays (plan_buckets). pad_id: the pad token. chunk: head positions
            per call.
    Returns:
        The summed negative log-likelihood of every loss token (to compare with the engine's).
    """
    device = next(model.parameters()).device
    net: Any = model
    body, head = net.base_model, net.get_output_embeddings()
    total = torch.zeros((), dtype=torch.float64, device=device)
    for rows in batches:
        batch = make_batch(encoded, rows, pad_id, device)
        hidden = body(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False
        ).last_hidden_state[:, :-1]
        targets = batch.labels[:, 1:]  # token t is predicted at position t-1
        where = (targets != IGNORE).nonzero(as_tuple=True)
        picked, gold = hidden[where], targets[where]  # (M, H), (M,)
        for i in range(0, len(gold), chunk):
            logits = head(picked[i : i + chunk])
            total += F.cross_entropy(logits.float(), gold[i : i + chunk], reduction="sum")
    return float(total)


def tov_scoring(
    surrogate: Surrogate, job: Job, batches: list[np.ndarray]
) -> tuple[TokenStore, np.ndarray]:
    """One round's scoring of `batches` exactly as the engine runs it (methods/tov/scoring.py):
    the base pass, which stores theta_bas's per-token log-probs, then the validation pass.

    Returns:
        (the base pass's TokenStore, the (N,) row scores).
    """
    pad = int(job.tokenizer.pad_token_id)
    rows = int(sum(len(b) for b in batches))
    tracker = Tracker({"score": 2 * rows}, {"score": 1.0})
    task = job.config.task
    store = base_pass(surrogate, job.pool, batches, task=task, pad_id=pad, tracker=tracker)
    scores = val_pass(
        surrogate,
        job.pool,
        batches,
        store,
        config=job.config.tov,
        task=task,
        pad_id=pad,
        tracker=tracker,
    )
    return store, scores


def measure(model: Path, pool: Path, validation: Path, reps: int = 3) -> dict[str, Any]:
    """Tokens per CPU second of the engine's scoring and of the bare forwards, and ratios."""
    config = JobConfig(
        device="cpu",
        max_length=256,
        tov=ToVConfig(rounds=1, base_size=8),
        selection=SelectionConfig(budget=16),
    )
    job = prepare_job(pool_path=pool, validation_path=validation, model=model, config=config)
    _, rest, _ = split_pool(job)
    lengths, device = job.pool.seq_lengths, torch.device("cpu")
    batches = plan_buckets(lengths, rest, config.tov.tokens_per_batch)
    tokens = int(lengths[rest].sum())
    pad = int(job.tokenizer.pad_token_id)
    surrogate = build_surrogate(job)
    surrogate.copy("base", "val")
    plain = load_model(model, task="causal_lm", device=device).eval()

    @torch.inference_mode()
    def forward(body_only: bool) -> None:
        net: Any = plain.model if body_only else plain
        for b in batches:
            batch = make_batch(job.pool, b, pad, device)
            net(input_ids=batch.input_ids, attention_mask=batch.attention_mask)

    def previous() -> None:  # the engine before folding: both adapters per batch, unmerged
        combine = paired_combine(surrogate, "causal_lm", "improvement")
        run_pass(surrogate.model, job.pool, batches, combine, pad_id=pad)

    steps: dict[str, Callable[[], object]] = {
        "bare": lambda: bare_forward(plain, job.pool, batches, pad),
        "forward": lambda: forward(False),
        "body": lambda: forward(True),
        "scoring": lambda: tov_scoring(surrogate, job, batches),
        "previous": previous,
    }
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(reps):
        for name, step in steps.items():
            times[name].append(_cpu(step))
    rate = {k: tokens / min(v) for k, v in times.items()}
    return {
        "model": model.name,
        "threads": torch.get_num_threads(),
        "scored_rows": len(rest),
        "tokens_per_pass": tokens,
        "batches": len(batches),
        "bare_forward_tokens_per_cpu_s": rate["bare"],
        "forward_tokens_per_cpu_s": rate["forward"],
        "body_forward_tokens_per_cpu_s": rate["body"],
        "scoring_tokens_per_cpu_s": rate["scoring"],
        "scoring_vs_forward_ratio": rate["scoring"] / rate["bare"],
        "scoring_vs_plain_forward_ratio": rate["scoring"] / rate["forward"],
        "scoring_vs_body_forward_ratio": rate["scoring"] / rate["body"],
        "previous_scoring_vs_forward_ratio": rate["previous"] / rate["bare"],
        "cpu_seconds": times,
    }
