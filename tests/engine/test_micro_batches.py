"""Micro-batches under a padded-token budget: a batch split into micro-batches accumulates to
the one-batch update (issue 14, memory during training)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.engine.conftest import WriteRows
from tests.engine.test_runner import _pool
from tov_engine import JobConfig, LoraSettings, SelectionConfig, ToVConfig, run_selection
from tov_engine.job import Job, prepare_job
from tov_engine.methods.common import build_surrogate
from tov_engine.model.train_memory import TrainingMemory, attach_memory, training_memory
from tov_engine.model.training import EpochPlan, make_optimizer, train_epoch
from tov_plan.rules import micro_batches

PLAIN = {"tokens": ["The", "cat", "sat", "on", "the", "mat"], "tags": ["O"] * 6}
ENTITY = {
    "tokens": ["Alice", "works", "at", "Google", "in", "London"],
    "tags": ["B-PER", "O", "O", "B-ORG", "O", "B-LOC"],
}


def test_micro_batches_are_contiguous_and_within_the_budget() -> None:
    lengths = np.array([5, 3, 9, 2, 4, 30, 1, 1], dtype=np.int64)
    rows = np.array([6, 0, 2, 1, 5, 3, 7, 4], dtype=np.int64)  # a shuffled batch
    for budget in (1, 8, 10, 18, 40, 1000):
        parts = micro_batches(lengths, rows, budget)
        assert np.array_equal(np.concatenate(parts), rows)  # same rows, same order
        for part in parts:
            padded = len(part) * int(lengths[part].max())
            assert padded <= budget or len(part) == 1  # a too-long row is alone
    assert len(micro_batches(lengths, rows, 1000)) == 1
    assert [len(p) for p in micro_batches(lengths, rows, 1)] == [1] * 8
    # row 5 (30 tokens) is over a budget of 18 and sits alone; 6, 0, 2 (widths 1, 5, 9) fit 27
    assert [p.tolist() for p in micro_batches(lengths, rows, 27)] == [
        [6, 0, 2],
        [1],
        [5],
        [3, 7, 4],
    ]


def _job(write_jsonl: WriteRows, model: Path, task: str = "causal_lm", **tov: Any) -> Job:
    if task == "causal_lm":
        rows: list[Any] = _pool()[:12]
    else:
        rows = [ENTITY if i % 3 == 0 else PLAIN for i in range(12)]
    pool = write_jsonl("pool.jsonl", rows)
    cfg = JobConfig(
        task=task,
        device="cpu",
        seed=5,
        tov=ToVConfig(**tov),
        selection=SelectionConfig(budget=2),
    )
    return prepare_job(pool_path=pool, validation_path=pool, model=model, config=cfg)


def _trained(
    job: Job, tokens: int, epochs: int = 2, lr: float = 0.5
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], int]:
    """Weights after `epochs` epochs of plain SGD (linear in the gradient, so a mis-scaled
    accumulation shows; Adam would hide it) under a micro-batch budget, the last batch's
    gradients and the number of micro-batches run."""
    s = build_surrogate(job)
    for module in s.model.modules():  # BERT's own dropout too: a split batch draws other masks
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    attach_memory(s.model, TrainingMemory(tokens_per_micro_batch=tokens))
    named = s.named_params("base")
    optimizer = torch.optim.SGD(list(named.values()), lr=lr)
    rows = np.arange(len(job.pool), dtype=np.int64)
    pad_id = int(job.tokenizer.pad_token_id)
    for epoch in range(epochs):
        plan = EpochPlan(job.pool, rows, 8, (5, epoch), job.config.task, pad_id)
        train_epoch(s.model, optimizer, plan)
    memory = training_memory(s.model)
    assert memory.steps == epochs * 2  # 12 rows in batches of 8: two optimizer steps an epoch
    grads = {k: p.grad.clone() for k, p in named.items() if p.grad is not None}
    return s.state("base"), grads, memory.micro_batches


def _close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    """Equal to float32 rounding of the summation order, relative to the largest entry (an
    entry that is itself rounding noise, e.g. a LoRA A gradient while B is near zero, has no
    digits to compare)."""
    assert a.keys() == b.keys() and a
    scale = max(float(t.abs().max()) for t in a.values())
    for key in a:
        assert torch.allclose(a[key], b[key], rtol=1e-4, atol=1e-5 * scale), key


@pytest.mark.parametrize("lora", [True, False], ids=["lora", "full"])
def test_accumulated_micro_batches_equal_one_batch(
    write_jsonl: WriteRows, tiny_causal_lm_dir: Path, lora: bool
) -> None:
    settings = LoraSettings(enabled=lora, dropout=0.0)
    job = _job(write_jsonl, tiny_causal_lm_dir, lora=settings)
    whole, whole_grads, passes = _trained(job, tokens=1 << 20)
    split, split_grads, split_passes = _trained(job, tokens=1)  # every row its own micro-batch
    assert passes == 4 and split_passes == 2 * 12
    _close(whole_grads, split_grads)
    _close(whole, split)
    start = _trained(job, 1 << 20, 0)[0]
    assert any(not torch.allclose(whole[k], start[k]) for k in whole)  # the epochs did train
    # a wrongly scaled accumulation (each micro-batch's mean, summed) would not be close:
    assert any(not torch.allclose(whole_grads[k], 12 / 4 * whole_grads[k]) for k in whole_grads)


def test_adamw_updates_agree_to_rounding(write_jsonl: WriteRows, tiny_causal_lm_dir: Path) -> None:
    job = _job(write_jsonl, tiny_causal_lm_dir, lora=LoraSettings(dropout=0.0))
    trained = []
    for tokens in (1 << 20, 40):
        s = build_surrogate(job)
        attach_memory(s.model, TrainingMemory(tokens_per_micro_batch=tokens))
        optimizer = make_optimizer(s.params("base"), 1e-3)
        rows = np.arange(len(job.pool), dtype=np.int64)
        plan = EpochPlan(job.pool, rows, 8, (5, 0), "causal_lm", int(job.tokenizer.pad_token_id))
        train_epoch(s.model, optimizer, plan)
        trained.append(s.state("base"))
    # Adam divides by the gradient's running RMS, so rounding noise in near-zero gradient
    # entries moves a weight by a fraction of a step (lr = 1e-3): agreement to 1e-5.
    for key in trained[0]:
        assert torch.allclose(trained[0][key], trained[1][key], rtol=0, atol=1e-5), key


def test_token_classification_accumulates_too(
    write_jsonl: WriteRows, tiny_token_classifier_dir: Path
) -> None:
    job = _job(
        write_jsonl,
        tiny_token_classifier_dir,
        task="token_classification",
        lora=LoraSettings(dropout=0.0),
    )
    whole, whole_grads, _ = _trained(job, tokens=1 << 20)
    widths = job.pool.seq_lengths
    split, split_grads, passes = _trained(job, tokens=3 * int(widths.max()))  # 3 rows each
    assert passes > 2 * 2  # more micro-batches than the two batches an epoch
    _close(whole_grads, split_grads)
    _close(whole, split)


def test_a_job_reports_its_micro_batches(
    files: tuple[Path, Path], tiny_causal_lm_dir: Path
) -> None:
    pool, val = files
    tov = dict(rounds=1, batch_size=4, base_size=8, learning_rate=1e-3)
    stats = []
    for tokens in (1 << 20, 1):
        config = JobConfig(
            tov=ToVConfig(**tov, train_tokens_per_micro_batch=tokens),  # type: ignore[arg-type]
            selection=SelectionConfig(budget=16),
            seed=3,
            device="cpu",
        )
        outcome = run_selection(
            pool_path=pool, validation_path=val, model=tiny_causal_lm_dir, config=config
        )
        stats.append(outcome.stats)
    big, tiny = stats
    # one round: 8 base rows and 4 validation rows in batches of 4 -> 3 optimizer steps
    assert big["train_steps"] == tiny["train_steps"] == 3
    assert big["train_micro_batches"] == 3 and tiny["train_micro_batches"] == 12
    assert big["train_tokens_per_micro_batch"] == 1 << 20
    assert big["gradient_checkpointing"] == tiny["gradient_checkpointing"] == "off"  # auto, CPU


@pytest.fixture
def files(write_jsonl: WriteRows) -> tuple[Path, Path]:
    from tests.engine.test_runner import TARGET

    return write_jsonl("pool.jsonl", _pool()), write_jsonl("val.jsonl", [TARGET] * 4)
