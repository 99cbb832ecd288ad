"""Gradient checkpointing in training passes: the same trained weights and scores as without it,
dropout included; off again for scoring; "auto" off on CPU; the knobs validated; the CLI flags
(issue 14, memory during training)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.engine.conftest import WriteRows
from tests.engine.test_runner import TARGET, _pool
from tov_engine import JobConfig, LoraSettings, SelectionConfig, ToVConfig, run_selection
from tov_engine.cli import main
from tov_engine.errors import ModelError
from tov_engine.job import Job, prepare_job
from tov_engine.methods.common import build_surrogate
from tov_engine.model.train_memory import (
    TrainingMemory,
    attach_memory,
    checkpointing,
    resolve_gradient_checkpointing,
)
from tov_engine.model.training import EpochPlan, make_optimizer, train_epoch


def test_auto_is_off_on_cpu_and_on_with_cuda() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert resolve_gradient_checkpointing("auto", cpu) is False
    assert resolve_gradient_checkpointing("auto", cuda) is True
    assert resolve_gradient_checkpointing("on", cpu) is True
    assert resolve_gradient_checkpointing("off", cuda) is False
    with pytest.raises(ValueError, match="gradient_checkpointing"):
        resolve_gradient_checkpointing("yes", cpu)


def test_the_knobs_are_validated() -> None:
    assert JobConfig().gradient_checkpointing == "auto"
    assert ToVConfig().train_tokens_per_micro_batch == 4096
    with pytest.raises(ValueError, match="gradient_checkpointing must be one of"):
        JobConfig(gradient_checkpointing="true")
    with pytest.raises(ValueError, match="gradient_checkpointing must be one of"):
        JobConfig(gradient_checkpointing=True)  # type: ignore[arg-type]
    for bad in (0, -5, 1.5, True, "4096"):
        with pytest.raises(ValueError, match="train_tokens_per_micro_batch must be an int >= 1"):
            ToVConfig(train_tokens_per_micro_batch=bad)  # type: ignore[arg-type]


def _job(write_jsonl: WriteRows, model: Path, **config: Any) -> Job:
    pool = write_jsonl("pool.jsonl", _pool()[:12])
    cfg = JobConfig(device="cpu", seed=7, selection=SelectionConfig(budget=2), **config)
    return prepare_job(pool_path=pool, validation_path=pool, model=model, config=cfg)


def _layer_calls(model: torch.nn.Module) -> list[int]:
    """A counter of the MLP calls in the first decoder layer: a recompute calls it again (a
    pre-hook: the recompute stops early, once the last saved tensor is back)."""
    calls = [0]
    for name, module in model.named_modules():
        if name.endswith("layers.0.mlp"):
            module.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def _train(job: Job, on: bool) -> tuple[dict[str, torch.Tensor], int]:
    s = build_surrogate(job)
    attach_memory(s.model, TrainingMemory(checkpointing=on))
    calls = _layer_calls(s.model)
    optimizer = make_optimizer(s.params("base"), 1e-2)
    rows = np.arange(len(job.pool), dtype=np.int64)
    pad_id = int(job.tokenizer.pad_token_id)
    for epoch in range(2):
        train_epoch(
            s.model, optimizer, EpochPlan(job.pool, rows, 4, (7, epoch), "causal_lm", pad_id)
        )
    # off again after training: no layer checkpoints, no input-grad hook is left behind
    flags = [
        m.gradient_checkpointing for m in s.model.modules() if hasattr(m, "gradient_checkpointing")
    ]
    assert flags and not any(flags)
    model: Any = s.model
    assert not getattr(model.base_model.model if s.lora else model, "_require_grads_hooks", [])
    return s.state("base"), calls[0]


@pytest.mark.parametrize(
    "lora", [LoraSettings(dropout=0.2), LoraSettings(enabled=False)], ids=["lora", "full"]
)
def test_checkpointing_trains_the_same_weights(
    write_jsonl: WriteRows, tiny_causal_lm_dir: Path, lora: LoraSettings
) -> None:
    job = _job(write_jsonl, tiny_causal_lm_dir, tov=ToVConfig(lora=lora))
    plain, plain_calls = _train(job, on=False)
    kept, kept_calls = _train(job, on=True)
    # every training forward (two epochs of three batches) ran the layers again in the backward;
    # the head check's two eval-mode forwards on the first batch did not
    assert kept_calls == plain_calls + 2 * 3
    for key in plain:  # LoRA dropout 0.2: the recompute restores the RNG state, masks repeat
        assert torch.allclose(plain[key], kept[key], rtol=1e-5, atol=1e-7), key


def test_checkpointing_on_gives_the_same_selection(
    write_jsonl: WriteRows, tiny_causal_lm_dir: Path
) -> None:
    pool = write_jsonl("pool.jsonl", _pool())
    val = write_jsonl("val.jsonl", [TARGET] * 4)
    outcomes = []
    for mode in ("off", "on"):
        config = JobConfig(
            tov=ToVConfig(rounds=2, learning_rate=1e-3, batch_size=4, base_size=8),
            selection=SelectionConfig(budget=16),
            seed=3,
            device="cpu",
            gradient_checkpointing=mode,
        )
        outcome = run_selection(
            pool_path=pool, validation_path=val, model=tiny_causal_lm_dir, config=config
        )
        assert outcome.stats["gradient_checkpointing"] == mode
        outcomes.append(outcome)
    off, on = outcomes
    scored = ~np.isnan(off.scores)
    assert np.array_equal(scored, ~np.isnan(on.scores))
    np.testing.assert_allclose(off.scores[scored], on.scores[scored], rtol=1e-4, atol=1e-7)
    assert np.array_equal(off.selection.indices, on.selection.indices)


def test_a_model_without_checkpointing_is_refused_when_asked(
    write_jsonl: WriteRows, tiny_causal_lm_dir: Path
) -> None:
    job = _job(write_jsonl, tiny_causal_lm_dir)
    s = build_surrogate(job)
    assert resolve_gradient_checkpointing("on", torch.device("cpu"), s.model) is True
    model: Any = s.model
    model.base_model.model.supports_gradient_checkpointing = False  # as a model without it
    with pytest.raises(ModelError, match="does not support gradient checkpointing"):
        resolve_gradient_checkpointing("on", torch.device("cpu"), s.model)
    assert resolve_gradient_checkpointing("auto", torch.device("cuda"), s.model) is False
    with pytest.raises(ModelError, match="gradient_checkpointing"), checkpointing(s.model, True):
        pass


def test_the_cli_takes_the_memory_flags(
    write_jsonl: WriteRows, tiny_causal_lm_dir: Path, tmp_path: Path, capsys: Any
) -> None:
    pool = write_jsonl("pool.jsonl", _pool()[:20])
    val = write_jsonl("val.jsonl", [TARGET] * 4)
    out = tmp_path / "sel.jsonl"
    argv = [
        "select",
        "--pool", str(pool),
        "--validation", str(val),
        "--model", str(tiny_causal_lm_dir),
        "--budget", "6",
        "--out", str(out),
        "--device", "cpu",
        "--rounds", "1",
        "--batch-size", "4",
        "--gradient-checkpointing", "on",
        "--train-tokens-per-micro-batch", "16",
    ]  # fmt: skip
    assert main(argv) == 0
    summary = capsys.readouterr().out
    assert "gradient_checkpointing=on" in summary
    assert len(out.read_text().splitlines()) == 6
    micro = int(summary.split("train_micro_batches=")[1].split(";")[0])
    assert micro > 2  # a 16-token budget splits both batches (3 base rows, 4 validation rows)
    bad = [*argv[:-1], "0"]
    assert main(bad) == 2
    assert "train_tokens_per_micro_batch must be an int >= 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*argv[:-3], "sometimes", *argv[-2:]])
