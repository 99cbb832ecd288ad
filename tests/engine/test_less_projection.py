"""LESS's sparse JL projection: inner products and cosines preserved, deterministic for a seed,
independent of how rows are batched, drawn once per job."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from tests.engine.conftest import WriteRows
from tests.engine.test_runner import TARGET, _pool
from tov_engine import JobConfig, LessSettings, SelectionConfig, ToVConfig, run_selection
from tov_engine.methods.less.gradients import Projector

CPU = torch.device("cpu")


def _correlated(p: int, rows: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A target vector, `rows` vectors whose cosines with it spread over [-0.9, 0.9], and those
    exact cosines."""
    gen = torch.Generator().manual_seed(seed)
    target = torch.randn(p, generator=gen)
    target /= target.norm()
    wanted = torch.linspace(-0.9, 0.9, rows)
    noise = torch.randn(rows, p, generator=gen)
    noise -= (noise @ target).unsqueeze(1) * target  # orthogonal to the target
    noise /= noise.norm(dim=1, keepdim=True)
    scale = torch.rand(rows, 1, generator=gen) * 10 + 0.1  # the norms vary too
    vecs = scale * (wanted.unsqueeze(1) * target + (1 - wanted**2).sqrt().unsqueeze(1) * noise)
    return target, vecs, wanted


def test_projection_preserves_cosines_and_inner_products() -> None:
    p, d = 300_007, 2048  # d / 4 does not divide p: padding slots are exercised
    target, vecs, exact = _correlated(p, 60, seed=3)
    project = Projector(p, d, seed=11, device=CPU)
    out = project(torch.cat([target.unsqueeze(0), vecs]))
    assert out.shape == (61, d)
    t, v = out[0], out[1:]
    cos = (v @ t) / (v.norm(dim=1) * t.norm())
    # The estimate's standard deviation is about sqrt((1 + c^2) / d) <= 0.03 here.
    assert float((cos - exact).abs().max()) < 0.15
    assert float(spearmanr(cos.numpy(), exact.numpy()).statistic) >= 0.99
    norms = v.norm(dim=1) / vecs.norm(dim=1)
    assert float((norms - 1).abs().max()) < 0.1
    inner = (v @ t) / (vecs @ target)
    strong = exact.abs() > 0.5  # relative error of the inner products where they are not small
    assert float((inner[strong] - 1).abs().max()) < 0.25


def test_projection_keeps_a_spiky_vector_s_norm() -> None:
    # One huge coordinate among small ones: each coordinate lands in SPARSITY buckets with
    # independent signs, so the norm survives (a sketch mixing it with others would not).
    p, d = 50_000, 512
    x = torch.randn(8, p, generator=torch.Generator().manual_seed(0)) * 0.01
    x[:, 123] = 100.0
    y = Projector(p, d, seed=5, device=CPU)(x)
    torch.testing.assert_close(y.norm(dim=1), x.norm(dim=1), rtol=0.05, atol=0.0)


def test_projection_is_deterministic_for_a_seed_and_independent_of_batching() -> None:
    p, d = 40_000, 1000  # 1000 = 4 blocks of 250
    x = torch.randn(20, p, generator=torch.Generator().manual_seed(1))
    a = Projector(p, d, seed=7, device=CPU)
    b = Projector(p, d, seed=7, device=CPU)
    together = a(x)
    assert torch.equal(together, b(x))
    apart = torch.cat([a(x[i : i + 3]) for i in range(0, 20, 3)])
    torch.testing.assert_close(apart, together, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(Projector(p, d, seed=8, device=CPU)(x), together)


def test_projection_shapes_and_errors() -> None:
    assert Projector(10, 10, seed=0, device=CPU)(torch.ones(2, 10)).shape == (2, 10)
    assert Projector(10, 3, seed=0, device=CPU)(torch.ones(1, 10)).shape == (1, 3)  # d < 4
    with pytest.raises(ValueError, match="expected vectors of 10 values"):
        Projector(10, 4, seed=0, device=CPU)(torch.ones(1, 9))
    with pytest.raises(ValueError, match="d >= 1"):
        Projector(10, 0, seed=0, device=CPU)


def test_a_less_job_draws_its_projection_once_and_repeats_its_scores(
    write_jsonl: WriteRows, tiny_causal_lm_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[int] = []
    original = Projector.__init__

    def counting(self: Projector, *args: Any, **kwargs: Any) -> None:
        made.append(1)
        original(self, *args, **kwargs)

    monkeypatch.setattr(Projector, "__init__", counting)
    pool = write_jsonl("p.jsonl", _pool())  # 49 rows: several gradient batches
    val = write_jsonl("v.jsonl", [TARGET] * 2)
    config = JobConfig(
        method="less",
        selection=SelectionConfig(budget=5),
        seed=1,
        tov=ToVConfig(learning_rate=1e-3, batch_size=4),
        less=LessSettings(warmup_fraction=0.1, epochs=2, projection_dim=8192),
    )
    first = run_selection(
        pool_path=pool, validation_path=val, model=tiny_causal_lm_dir, config=config
    )
    assert len(made) == 1  # one projection for both checkpoints, the pool and validation rows
    again = run_selection(
        pool_path=pool, validation_path=val, model=tiny_causal_lm_dir, config=config
    )
    assert np.array_equal(first.scores, again.scores)
    assert np.array_equal(first.selection.indices, again.selection.indices)
