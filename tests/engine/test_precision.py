"""The precision policy: float32 by default on CPU, bf16 base weights with float32 LoRA weights,
optimizer state and head on request, bf16 scores that track float32 ones, and the determinism
switch."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.engine.conftest import WriteRows
from tests.engine.test_runner import FACTS, TARGET
from tov_engine import JobConfig, SelectionConfig, ToVConfig, run_selection
from tov_engine.job import prepare_job
from tov_engine.methods.common import build_surrogate
from tov_engine.model.precision import Precision, resolve_precision


def test_auto_is_float32_on_cpu_and_bad_values_are_refused() -> None:
    assert resolve_precision("auto", torch.device("cpu")).name == "float32"
    assert resolve_precision("bfloat16", torch.device("cpu")).bf16
    with pytest.raises(ValueError, match="precision"):
        JobConfig(precision="float16")
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("fp8", torch.device("cpu"))
    with pytest.raises(ValueError, match="deterministic"):
        JobConfig(deterministic="yes")  # type: ignore[arg-type]


def _job(write_jsonl: WriteRows, model: Path, **config: object) -> object:
    pool = write_jsonl("pool.jsonl", [TARGET] * 8)
    cfg = JobConfig(device="cpu", selection=SelectionConfig(budget=2), **config)  # type: ignore[arg-type]
    return prepare_job(pool_path=pool, validation_path=pool, model=model, config=cfg)


def test_bf16_policy_keeps_lora_and_its_optimizer_in_float32(
    write_jsonl: WriteRows, tiny_causal_lm_dir: Path
) -> None:
    s = build_surrogate(_job(write_jsonl, tiny_causal_lm_dir, precision="bfloat16"))  # type: ignore[arg-type]
    frozen = [p for n, p in s.model.named_parameters() if "lora_" not in n]
    lora = [p for n, p in s.model.named_parameters() if "lora_" in n]
    assert frozen and all(p.dtype == torch.bfloat16 for p in frozen)
    assert lora and all(p.dtype == torch.float32 for p in lora)
    params = s.params("base")
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    ids = torch.tensor([[1, 5, 7, 9, 11, 13]])
    loss = s.model(input_ids=ids, labels=ids).loss
    loss.backward()
    optimizer.step()
    assert all(optimizer.state[p]["exp_avg"].dtype == torch.float32 for p in params)


def test_float32_policy_is_the_default_on_cpu(
    write_jsonl: WriteRows, tiny_causal_lm_dir: Path
) -> None:
    s = build_surrogate(_job(write_jsonl, tiny_causal_lm_dir))  # type: ignore[arg-type]
    assert all(p.dtype == torch.float32 for p in s.model.parameters())


def test_the_determinism_switch_is_applied(
    write_jsonl: WriteRows, tiny_causal_lm_dir: Path
) -> None:
    before = torch.are_deterministic_algorithms_enabled()
    try:
        torch.use_deterministic_algorithms(False)
        build_surrogate(_job(write_jsonl, tiny_causal_lm_dir))  # type: ignore[arg-type]
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()
        build_surrogate(_job(write_jsonl, tiny_causal_lm_dir, deterministic=False))  # type: ignore[arg-type]
        assert not torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(before, warn_only=True)
    assert Precision().deterministic  # on unless a job says otherwise


def _ranks(x: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(x)).astype(np.float64)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(_ranks(a), _ranks(b))[0, 1])


def _score_half(outcome: object) -> set[int]:
    sel = outcome.selection  # type: ignore[attr-defined]
    return {int(i) for i, s in zip(sel.indices, sel.sources, strict=True) if s == "score"}


def test_bf16_scores_track_float32_scores(write_jsonl: WriteRows, tiny_causal_lm_dir: Path) -> None:
    # The demo's settings (default epsilon 0.1, so theta_val is close to theta_bas) on 128 rows, 8
    # in the validation set's domain. Rounding activations to bf16 fails here (Spearman 0.947,
    # overlap 0.75); float32 compute over bf16 weights gives 0.9996 and 1.0.
    rows = [
        {"prompt": f"Question {i}: say something.", "completion": f"{FACTS[i % 8]} {i}."}
        for i in range(120)
    ] + [
        {"prompt": f"Translate to French: good morning {i}.", "completion": "Bonjour. Bonjour."}
        for i in range(8)
    ]
    pool = write_jsonl("pool.jsonl", rows)
    val = write_jsonl("val.jsonl", [TARGET] * 4)
    outcomes = {}
    for precision in ("float32", "bfloat16"):
        config = JobConfig(
            tov=ToVConfig(rounds=2, learning_rate=1e-3, batch_size=8),
            selection=SelectionConfig(budget=24, strategy="score+random"),
            precision=precision,
        )
        outcomes[precision] = run_selection(
            pool_path=pool, validation_path=val, model=tiny_causal_lm_dir, config=config
        )
    a, b = outcomes["float32"].scores, outcomes["bfloat16"].scores
    scored = ~np.isnan(a)
    assert np.array_equal(scored, ~np.isnan(b)) and scored.sum() == 128 - 12
    assert not np.array_equal(a, b, equal_nan=True)  # bf16 weights: close, not the same
    assert _spearman(a[scored], b[scored]) >= 0.95
    fa, fb = _score_half(outcomes["float32"]), _score_half(outcomes["bfloat16"])
    assert len(fa & fb) >= 0.8 * len(fa)
    assert outcomes["bfloat16"].stats["precision"] == "bfloat16"
    assert outcomes["float32"].stats["precision"] == "float32"


def test_bf16_adapters_are_never_folded(write_jsonl: WriteRows, tiny_causal_lm_dir: Path) -> None:
    from peft.tuners.lora.layer import Linear as LoraLinear

    for precision, folded in (("bfloat16", False), ("float32", True)):
        job = _job(write_jsonl, tiny_causal_lm_dir, precision=precision)
        s = build_surrogate(job)  # type: ignore[arg-type]
        with s.scoring("val"):
            layers = [m for m in s.model.modules() if isinstance(m, LoraLinear)]
            assert layers and all(("forward" in m.__dict__) == folded for m in layers)


def test_the_gpu_row_sums_match_index_add() -> None:
    from tov_engine.model.logprob import TokenLogprobs, ordered_row_sums, row_means

    values = torch.randn(50, generator=torch.Generator().manual_seed(0))
    row = torch.sort(torch.randint(0, 6, (50,), generator=torch.Generator().manual_seed(1)))[0]
    lp = TokenLogprobs(values=values, row=row, rows=7)  # row 6 (and maybe others) empty
    expected = torch.zeros(7).index_add(0, row, values)
    assert torch.allclose(ordered_row_sums(values, lp), expected, atol=1e-6)
    means, counts = row_means(values, lp)
    assert counts[6] == 0 and torch.isnan(means[6])


def test_bf16_policy_runs_every_task_and_less(
    write_jsonl: WriteRows, tiny_causal_lm_dir: Path, tiny_token_classifier_dir: Path
) -> None:
    from tests.engine.test_methods import ENTITY, PLAIN
    from tov_engine import LessSettings

    tagged = write_jsonl("tagged.jsonl", [ENTITY if i % 5 == 0 else PLAIN for i in range(20)])
    rows = [{"prompt": "Say:", "completion": f"{fact} now."} for fact in FACTS] * 2
    chat = write_jsonl("chat.jsonl", [TARGET] * 4 + rows)
    runs = [
        (tagged, tiny_token_classifier_dir, JobConfig(task="token_classification")),
        (chat, tiny_causal_lm_dir, JobConfig(method="less", less=LessSettings(epochs=1))),
    ]
    for pool, model, base in runs:
        config = dataclasses.replace(
            base, precision="bfloat16", selection=SelectionConfig(budget=4), seed=1
        )
        out = run_selection(pool_path=pool, validation_path=pool, model=model, config=config)
        assert len(out.selection.indices) == 4 and out.stats["precision"] == "bfloat16"
        assert np.isfinite(out.scores[~np.isnan(out.scores)]).all()
