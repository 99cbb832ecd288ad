"""Scoring throughput against the model's bare forward throughput on the same batches.

ToV scores every row of R with two forward passes (theta_bas and theta_val), so the engine's
scoring throughput can reach at most half the forward throughput: the goal is a ratio of 0.45 or
more. All three run on the same rows of R and the same length-bucketed batches, interleaved and
repeated, timed in CPU seconds of this process (best of N: on a shared machine wall time mostly
measures the neighbours):
- the engine's scoring of one round, with the engine's own functions as tov._score_round calls
  them: the base pass (adapter folded into the weights, per-token log-probs stored) and the
  validation pass (log-probs, combined with the stored ones into row scores);
- the plain transformers forward (logits at every position) of the model without adapters;
- the transformer body alone (no output head at all: a stricter baseline than any scorer);
- the previous scoring (both adapters run per batch through peft's unmerged LoRA layers).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from tov_engine import JobConfig, SelectionConfig, ToVConfig
from tov_engine.data.batching import make_batch, plan_buckets
from tov_engine.job import prepare_job
from tov_engine.methods.common import build_surrogate, split_pool
from tov_engine.model.loading import load_model
from tov_engine.model.merged import merged
from tov_engine.model.scoring import (
    TokenStore,
    paired_combine,
    run_pass,
    stored_combine,
    storing_combine,
)


def _cpu(fn: Callable[[], object]) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def measure(model: Path, pool: Path, validation: Path, reps: int = 3) -> dict[str, Any]:
    """Tokens per CPU second of the engine's scoring and of the two bare forwards, and ratios."""
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

    def scoring() -> None:  # one round's two passes, as tov._score_round runs them
        store, m = TokenStore(job.pool, batches), surrogate.model
        with merged(surrogate, "base"):
            run_pass(m, job.pool, batches, storing_combine(m, "causal_lm", store), pad_id=pad)
        with merged(surrogate, "val"):
            combine = stored_combine(m, "causal_lm", store, "improvement")
            run_pass(m, job.pool, batches, combine, pad_id=pad)

    def previous() -> None:  # the engine before folding: both adapters per batch, unmerged
        combine = paired_combine(surrogate, "causal_lm", "improvement")
        run_pass(surrogate.model, job.pool, batches, combine, pad_id=pad)

    times: dict[str, list[float]] = {"forward": [], "body": [], "scoring": [], "previous": []}
    for _ in range(reps):
        times["forward"].append(_cpu(lambda: forward(False)))
        times["body"].append(_cpu(lambda: forward(True)))
        times["scoring"].append(_cpu(scoring))
        times["previous"].append(_cpu(previous))
    rate = {k: tokens / min(v) for k, v in times.items()}
    return {
        "model": model.name,
        "threads": torch.get_num_threads(),
        "scored_rows": len(rest),
        "tokens_per_pass": tokens,
        "batches": len(batches),
        "forward_tokens_per_cpu_s": rate["forward"],
        "body_forward_tokens_per_cpu_s": rate["body"],
        "scoring_tokens_per_cpu_s": rate["scoring"],
        "scoring_vs_forward_ratio": rate["scoring"] / rate["forward"],
        "scoring_vs_body_forward_ratio": rate["scoring"] / rate["body"],
        "previous_scoring_vs_forward_ratio": rate["previous"] / rate["forward"],
        "cpu_seconds": times,
    }
