"""LESS's batched per-row gradients equal one backward pass per row (causal LM and tagger)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.engine.conftest import WriteRows
from tests.engine.test_methods import ENTITY, PLAIN
from tests.engine.test_runner import _pool
from tov_engine import JobConfig, SelectionConfig
from tov_engine.data.batching import make_batch
from tov_engine.job import prepare_job
from tov_engine.methods.common import build_surrogate
from tov_engine.methods.less.gradients import batch_gradients as _batch_gradients
from tov_engine.methods.less.gradients import example_gradient as _example_gradient
from tov_engine.methods.less.gradients import linear_owners as _linear_owners


@pytest.mark.parametrize("task", ["causal_lm", "token_classification"])
def test_batched_gradients_match_per_row_gradients(
    task: str,
    write_jsonl: WriteRows,
    tiny_causal_lm_dir: Path,
    tiny_token_classifier_dir: Path,
) -> None:
    if task == "causal_lm":
        rows, model = _pool()[:6], tiny_causal_lm_dir
    else:
        rows, model = (
            [ENTITY, PLAIN, {**ENTITY, "tokens": ENTITY["tokens"][:3], "tags": ENTITY["tags"][:3]}],
            tiny_token_classifier_dir,
        )
    path = write_jsonl("p.jsonl", rows)
    job = prepare_job(
        pool_path=path,
        validation_path=path,
        model=model,
        config=JobConfig(task=task, method="less", selection=SelectionConfig(budget=1)),
    )
    s = build_surrogate(job)
    params = s.params("base")
    with torch.no_grad():  # LoRA B starts at zero: move it so every gradient is non-trivial
        for p in params:
            p.add_(0.05 * torch.randn_like(p))
    s.model.eval()
    owners = _linear_owners(s.model, params)
    assert owners is not None
    idx = np.arange(len(job.pool))
    batch = make_batch(job.pool, idx, int(job.tokenizer.pad_token_id), torch.device("cpu"))
    batched, ok = _batch_gradients(s.model, params, owners, batch, task)
    assert ok.all()
    for i in idx:
        single = _example_gradient(s.model, params, job, job.pool, int(i))
        assert single is not None
        torch.testing.assert_close(batched[i], single, rtol=1e-4, atol=1e-6)
