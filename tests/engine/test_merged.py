"""Folding an adapter into the weights for a scoring pass: same log-probs as peft's LoRA layers,
base weights untouched, peft's own forward back afterwards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tests.engine.conftest import WriteRows
from tests.engine.test_runner import _pool
from tov_engine import JobConfig, SelectionConfig
from tov_engine.data.batching import make_batch
from tov_engine.job import prepare_job
from tov_engine.methods.common import build_surrogate
from tov_engine.model.logprob import token_logprobs
from tov_engine.model.merged import merged


def test_folded_adapter_matches_peft(write_jsonl: WriteRows, tiny_causal_lm_dir: Path) -> None:
    pool = write_jsonl("pool.jsonl", _pool())
    config = JobConfig(device="cpu", selection=SelectionConfig(budget=4))
    job = prepare_job(pool_path=pool, validation_path=pool, model=tiny_causal_lm_dir, config=config)
    s = build_surrogate(job)
    with torch.no_grad():
        for p in s.params("val"):  # lora_B starts at zero: make the adapter matter
            p.add_(0.05 * torch.randn_like(p))
    before = {n: p.detach().clone() for n, p in s.model.named_parameters()}
    batch = make_batch(
        job.pool, np.arange(12), int(job.tokenizer.pad_token_id), torch.device("cpu")
    )
    s.model.eval()
    with torch.inference_mode():
        s.use("val")
        peft_lp = token_logprobs(s.model, batch, "causal_lm").values
        with merged(s, "val"):
            folded = token_logprobs(s.model, batch, "causal_lm").values
        with merged(s, "base"):
            folded_base = token_logprobs(s.model, batch, "causal_lm").values
        s.use("base")
        peft_base = token_logprobs(s.model, batch, "causal_lm").values
        s.use("val")
        after = token_logprobs(s.model, batch, "causal_lm").values
    assert torch.allclose(peft_lp, folded, atol=1e-4) and not torch.equal(peft_lp, peft_base)
    assert torch.allclose(peft_base, folded_base, atol=1e-4)
    assert torch.equal(peft_lp, after)  # peft's forward is back
    for name, p in s.model.named_parameters():
        assert torch.equal(p, before[name]), name
